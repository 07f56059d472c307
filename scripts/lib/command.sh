# The command line shared by the server scripts: install | start | stop | env, else the usage
# (lines 2..$1 of the script). The script defines install, start, stop and env_lines.
script_command() { # usage_last_line command
  case ${2:-} in
    install) install ;;
    start) start ;;
    stop) stop ;;
    env) env_lines ;;
    *) sed -n "2,${1}p" "$0"; exit 2 ;;
  esac
}
