#!/usr/bin/env bash
# OpenStack Keystone (v3, SQLite, fernet tokens) on 127.0.0.1 for the tests, and a second Swift
# proxy in front of the one-node Swift of swift-saio.sh that authenticates with Keystone tokens
# (keystonemiddleware's auth_token + Swift's keystoneauth) instead of tempauth.
#
#   keystone.sh install   apt-get the packages when missing
#   keystone.sh start     starts Swift (swift-saio.sh), then Keystone and the Keystone-auth proxy;
#                         provisions users, projects and the object-store catalog on first start;
#                         waits until healthy; does nothing when already healthy
#   keystone.sh env       export lines for the test credentials
#   keystone.sh stop      stops what start started (data is kept)
#
# Identity: user chunkvault / password backup-secret, member of project backups (domain Default);
#           user outsider / password outsider-secret, no role anywhere; admin / admin-secret.
# Catalog:  object-store, public + internal in RegionOne -> the Keystone-auth proxy;
#           public in RegionTwo -> a port nothing listens on.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${CHUNKVAULT_KEYSTONE_DIR:-/var/tmp/chunkvault-keystone}
SWIFT_D=${CHUNKVAULT_SWIFT_DIR:-/var/tmp/chunkvault-swift}
KPORT=${CHUNKVAULT_KEYSTONE_PORT:-5000}
PPORT=${CHUNKVAULT_SWIFT_KEYSTONE_PORT:-8081}
DEAD_PORT=${CHUNKVAULT_DEAD_PORT:-5999}
KURL=http://127.0.0.1:$KPORT/v3
PURL=http://127.0.0.1:$PPORT
PY=/usr/bin/python3 # Debian's python, where the OpenStack modules are

# Keystone's public WSGI application on a threaded server (the packaged keystone-wsgi-public
# serves one connection at a time, so one idle client stalls everybody).
SERVE='
import os, socketserver, wsgiref.simple_server as w
from keystone.server.wsgi import initialize_public_application
class Server(socketserver.ThreadingMixIn, w.WSGIServer):
    daemon_threads = True
w.make_server("127.0.0.1", int(os.environ["KEYSTONE_PORT"]), initialize_public_application(), server_class=Server).serve_forever()
'

source "$(dirname "$0")/lib/daemons.sh"

die() { echo "keystone: $*" >&2; exit 1; }
token() { # user password project -> prints a project-scoped token
  curl -fsS -m 10 -D - -o /dev/null -H 'content-type: application/json' "$KURL/auth/tokens" -d \
    "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$1\",\"domain\":{\"name\":\"Default\"},\"password\":\"$2\"}}},\"scope\":{\"project\":{\"name\":\"$3\",\"domain\":{\"name\":\"Default\"}}}}}" |
    tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p'
}
healthy() {
  [[ $(curl -s -m 2 "$PURL/healthcheck" 2>/dev/null) == OK ]] || return 1
  local t; t=$(token chunkvault backup-secret backups 2>/dev/null) && [[ -n $t ]] || return 1
  curl -fsS -m 5 -o /dev/null -H "x-auth-token: $t" "$PURL/info" 2>/dev/null
}

install() {
  bash "$HERE/swift-saio.sh" install
  if [[ -x /usr/bin/keystone-manage ]] && $PY -c 'import keystonemiddleware' 2>/dev/null; then return; fi
  [[ -n ${CHUNKVAULT_APT_UPDATED:-} ]] || apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    python3-keystone python3-keystonemiddleware curl >/dev/null
}

keystone_conf() {
  cat <<CONF
[DEFAULT]
log_file = $D/log/keystone.log
[database]
connection = sqlite:///$D/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $D/fernet-keys
[fernet_receipts]
key_repository = $D/fernet-keys
[credential]
key_repository = $D/credential-keys
[cache]
# without a cache every token validation runs hundreds of queries (about 1 CPU-second)
enabled = true
backend = dogpile.cache.memory
CONF
}

# keystone-manage may print a traceback from its thread library on exit: its status is what counts.
manage() { keystone-manage --config-file "$D/keystone.conf" "$@" >> "$D/log/manage.log" 2>&1 || die "keystone-manage $1 failed (see $D/log/manage.log)"; }

bootstrap() {
  rm -rf "$D/keystone.db" "$D/fernet-keys" "$D/credential-keys"
  manage db_sync
  manage fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  manage credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  manage bootstrap --bootstrap-password admin-secret --bootstrap-region-id RegionOne \
    --bootstrap-public-url "$KURL/" --bootstrap-internal-url "$KURL/" --bootstrap-admin-url "$KURL/"
  # Keystone leaves read transactions open between requests; in SQLite's default journal mode
  # they block the next writer ("database is locked"), in WAL mode they do not.
  $PY -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("pragma journal_mode=wal")' "$D/keystone.db"
}

# Users, project, role and the object-store catalog, through Keystone's own API.
provision() {
  KURL=$KURL PURL=$PURL DEAD=http://127.0.0.1:$DEAD_PORT $PY - <<'PY'
import json, os, urllib.request
K = os.environ["KURL"]
def call(method, path, body=None, token=None):
    req = urllib.request.Request(K + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json", **({"x-auth-token": token} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return r.headers, (json.loads(data) if data else None)
auth = {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": "admin-secret"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}
headers, _ = call("POST", "/auth/tokens", {"auth": auth})
t = headers["x-subject-token"]
role = {r["name"]: r["id"] for r in call("GET", "/roles", token=t)[1]["roles"]}["member"]
project = call("POST", "/projects", {"project": {"name": "backups", "domain_id": "default"}}, t)[1]["project"]["id"]
user = call("POST", "/users", {"user": {"name": "chunkvault", "password": "backup-secret", "domain_id": "default"}}, t)[1]["user"]["id"]
call("POST", "/users", {"user": {"name": "outsider", "password": "outsider-secret", "domain_id": "default"}}, t)
call("PUT", f"/projects/{project}/users/{user}/roles/{role}", token=t)
call("POST", "/regions", {"region": {"id": "RegionTwo"}}, t)
service = call("POST", "/services", {"service": {"type": "object-store", "name": "swift"}}, t)[1]["service"]["id"]
for interface, region, base in (("public", "RegionOne", os.environ["PURL"]), ("internal", "RegionOne", os.environ["PURL"]),
                                ("public", "RegionTwo", os.environ["DEAD"])):
    call("POST", "/endpoints", {"endpoint": {"service_id": service, "interface": interface, "region_id": region,
                                             "url": base + "/v1/AUTH_%(tenant_id)s"}}, t)
PY
}

proxy_conf() {
  # The tempauth proxy's configuration with another port and Keystone auth in its pipeline.
  sed -e "s/^bind_port = .*/bind_port = $PPORT/" -e 's/^log_name = .*/log_name = proxy-keystone/' \
    -e 's/^pipeline = .*s3api tempauth/pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats authtoken keystoneauth/' \
    "$SWIFT_D/etc/proxy-server.conf"
  cat <<CONF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = http://127.0.0.1:$KPORT
auth_url = http://127.0.0.1:$KPORT
auth_type = password
username = admin
password = admin-secret
project_name = admin
user_domain_name = Default
project_domain_name = Default
delay_auth_decision = true
include_service_catalog = false
# a revoked token is refused within 2 s
token_cache_time = 2

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
CONF
}

wait_for() { # what command...
  local what=$1 deadline=$((SECONDS + 120)); shift
  while ((SECONDS < deadline)); do "$@" >/dev/null 2>&1 && return; sleep 0.2; done
  tail -n 30 "$D"/log/*.log >&2 || true
  die "$what did not become healthy"
}

start() {
  bash "$HERE/swift-saio.sh" start >/dev/null
  mkdir -p "$D"/{run,log}
  exec 9> "${D%/}.lock"
  flock 9
  if healthy; then echo "keystone: already up at $KURL, Swift with Keystone auth at $PURL"; return; fi
  [[ -x /usr/bin/keystone-manage ]] && $PY -c 'import keystonemiddleware' 2>/dev/null || install
  stop >/dev/null 2>&1 || true
  keystone_conf > "$D/keystone.conf"
  local fresh=
  [[ -s $D/keystone.db && -f $D/provisioned ]] || { bootstrap; fresh=1; }
  OS_KEYSTONE_CONFIG_FILES=$D/keystone.conf KEYSTONE_PORT=$KPORT launch keystone $PY -c "$SERVE"
  wait_for Keystone curl -fsS -m 2 "$KURL"
  if [[ -n $fresh ]]; then provision; touch "$D/provisioned"; fi
  proxy_conf > "$D/proxy-keystone.conf"
  launch proxy swift-proxy-server "$D/proxy-keystone.conf" -v
  wait_for "the Keystone-auth Swift proxy" healthy
  echo "keystone: up at $KURL, Swift with Keystone auth at $PURL"
}

env_lines() {
  echo "export CHUNKVAULT_TEST_KEYSTONE_URL=$KURL CHUNKVAULT_TEST_SWIFT_KEYSTONE_URL=$PURL CHUNKVAULT_TEST_DEAD_URL=http://127.0.0.1:$DEAD_PORT"
}

source "$(dirname "$0")/lib/command.sh"
script_command 17 "${1:-}"
