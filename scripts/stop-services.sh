#!/usr/bin/env bash
# Stops the servers test helpers may have started.
cd "$(dirname "$0")/.."
for s in scripts/keystone.sh scripts/swift-saio.sh scripts/pg-local.sh; do
  [ -f "$s" ] && bash "$s" stop || true
done
# Service processes a test left behind (a test file killed by its timeout cannot clean up).
pkill -KILL -f "$PWD/dist/src/cli/main.js (serve|worker)" 2>/dev/null || true
