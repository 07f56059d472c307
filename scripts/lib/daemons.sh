# Background servers for the test scripts: each runs in its own session, logs to $D/log/<name>.log
# and has its pid in $D/run/<name>.pid. Sourced by swift-saio.sh and keystone.sh, which set D.

launch() { # name cmd...
  local name=$1; shift
  # fd 9 (the caller's start lock) must not leak into the servers
  setsid "$@" > "$D/log/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$D/run/$name.pid"
}

stop() { # every server launched under $D
  local f
  for f in "$D"/run/*.pid; do
    [[ -f $f ]] || continue
    kill -TERM -- "-$(cat "$f")" 2>/dev/null || kill -TERM "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}
