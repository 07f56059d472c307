#!/usr/bin/env bash
# A one-node OpenStack Swift on 127.0.0.1 for the tests: Debian's packages, tempauth, and the
# s3api middleware, so one server answers both the Swift and the S3 API.
#
#   swift-saio.sh install   apt-get the packages when missing
#   swift-saio.sh start     configs + one-replica rings under $CHUNKVAULT_SWIFT_DIR, memcached and the
#                           four servers; waits until healthy; does nothing when already healthy
#   swift-saio.sh env       export lines for the test credentials
#   swift-saio.sh stop      stops what start started (data is kept)
#
# Credentials: Swift tempauth user test:tester key testing at /auth/v1.0;
#              S3 access key test:tester secret testing, region us-east-1, path-style, or
#              virtual-host style under the storage domain s3.chunkvault.test, for the bucket
#              chunkvault-vhost (start adds both names to /etc/hosts: no DNS serves them).
# Swift keeps object metadata in user xattrs: the data directory must be on ext4/xfs/btrfs.
set -euo pipefail
D=${CHUNKVAULT_SWIFT_DIR:-/var/tmp/chunkvault-swift}
PORT=${CHUNKVAULT_SWIFT_PORT:-8080}
OBJ=$((PORT - 1880)) CON=$((PORT - 1879)) ACC=$((PORT - 1878)) MEM=${CHUNKVAULT_MEMCACHED_PORT:-11211}
VHOST_DOMAIN=s3.chunkvault.test VHOST_BUCKET=chunkvault-vhost
URL=http://127.0.0.1:$PORT
USR=$(id -un)

source "$(dirname "$0")/lib/daemons.sh"

die() { echo "swift-saio: $*" >&2; exit 1; }
# Every server answers (the proxy answers, and authenticates, before the others are up).
healthy() {
  local p
  for p in "$PORT" "$ACC" "$CON" "$OBJ"; do
    [[ $(curl -s -m 2 "http://127.0.0.1:$p/healthcheck" 2>/dev/null) == OK ]] || return 1
  done
  auth >/dev/null 2>&1
}
auth() { curl -fsS -m 5 -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' "$URL/auth/v1.0"; }

install() {
  if command -v swift-proxy-server >/dev/null && command -v memcached >/dev/null && command -v curl >/dev/null; then return; fi
  [[ -n ${CHUNKVAULT_APT_UPDATED:-} ]] || apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    swift swift-proxy swift-object swift-container swift-account memcached curl >/dev/null
}

server_conf() { # name port pipeline-extra
  cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
user = $USR
swift_dir = $D/etc
devices = $D/srv
mount_check = false
disable_fallocate = true
workers = 0
log_name = $1
CONF
}

write_configs() {
  mkdir -p "$D"/{etc,srv/sdb1,run,log}
  python3 -c 'import os,sys; p=sys.argv[1]+"/.xattr"; open(p,"w").close(); os.setxattr(p,"user.t",b"1"); os.unlink(p)' \
    "$D/srv/sdb1" || die "no user xattrs on the file system of $D"
  { server_conf proxy-server "$PORT"; cat <<CONF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
node_timeout = 30
conn_timeout = 2

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
token_life = 86400

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
storage_domain = $VHOST_DOMAIN
s3_acl = false
max_multi_delete_objects = 1000

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEM

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
CONF
  } > "$D/etc/proxy-server.conf"
  local n p
  for n in object:$OBJ container:$CON account:$ACC; do
    p=${n#*:} n=${n%%:*}
    { server_conf "$n-server" "$p"; printf '\n[pipeline:main]\npipeline = healthcheck %s-server\n\n[app:%s-server]\nuse = egg:swift#%s\n\n[filter:healthcheck]\nuse = egg:swift#healthcheck\n' "$n" "$n" "$n"; } > "$D/etc/$n-server.conf"
  done
  if [[ ! -s $D/etc/object.ring.gz ]]; then
    for n in object:$OBJ container:$CON account:$ACC; do
      p=${n#*:} n=${n%%:*}
      swift-ring-builder "$D/etc/$n.builder" create 6 1 1 >/dev/null
      swift-ring-builder "$D/etc/$n.builder" add --region 1 --zone 1 --ip 127.0.0.1 --port "$p" --device sdb1 --weight 100 >/dev/null
      swift-ring-builder "$D/etc/$n.builder" rebalance >/dev/null || [[ $? == 1 ]]
    done
  fi
}

hosts_entry() {
  local line="127.0.0.1 $VHOST_DOMAIN $VHOST_BUCKET.$VHOST_DOMAIN"
  grep -qxF "$line" /etc/hosts 2>/dev/null || echo "$line" >> /etc/hosts ||
    echo "swift-saio: cannot add '$line' to /etc/hosts: virtual-host S3 requests will not resolve" >&2
}

start() {
  # Test processes start the server concurrently: one at a time.
  exec 9> "${D%/}.lock"
  flock 9
  hosts_entry
  if healthy; then echo "swift-saio: already up at $URL"; return; fi
  command -v swift-proxy-server >/dev/null || install
  [[ -f /etc/swift/swift.conf ]] || die "/etc/swift/swift.conf is missing (it comes with the swift package)"
  stop >/dev/null 2>&1 || true
  write_configs
  launch memcached memcached -l 127.0.0.1 -p "$MEM" -U 0 -u "$USR" -m 64
  for n in account container object; do launch "$n" "swift-$n-server" "$D/etc/$n-server.conf" -v; done
  launch proxy swift-proxy-server "$D/etc/proxy-server.conf" -v
  local deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)); do healthy && { echo "swift-saio: up at $URL"; return; }; sleep 0.2; done
  tail -n 20 "$D"/log/*.log >&2 || true
  die "servers did not become healthy"
}

env_lines() {
  echo "export CHUNKVAULT_TEST_SWIFT_URL=$URL"
  echo "export ST_AUTH=$URL/auth/v1.0 ST_USER=test:tester ST_KEY=testing"
  echo "export AWS_ACCESS_KEY_ID=test:tester AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1"
  echo "export CHUNKVAULT_TEST_S3_VHOST_DOMAIN=$VHOST_DOMAIN CHUNKVAULT_TEST_S3_VHOST_BUCKET=$VHOST_BUCKET"
}

source "$(dirname "$0")/lib/command.sh"
script_command 15 "${1:-}"
