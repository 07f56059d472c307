#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds, runs every test file.
# Servers (Swift with the S3 API, PostgreSQL) are started by the tests' own helpers
# through scripts/*.sh on 127.0.0.1 and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then npm ci; fi
rm -rf dist # compiled copies of removed or renamed tests must not run
npx tsc -p tsconfig.json
trap 'bash scripts/stop-services.sh >/dev/null 2>&1 || true' EXIT
node --test --test-concurrency=2 --test-timeout=600000 "$@" $(find dist/test -name '*.test.js' | sort)
