#!/usr/bin/env bash
# Stops the servers test helpers may have started.
cd "$(dirname "$0")/.."
for s in scripts/swift-saio.sh scripts/pg-local.sh; do
  [ -f "$s" ] && bash "$s" stop || true
done
