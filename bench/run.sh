#!/usr/bin/env bash
# npm run bench: see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/src/cli/main.js ] || npx tsc -p tsconfig.json
for t in mke2fs debugfs cmp; do command -v "$t" >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 install -y -qq e2fsprogs diffutils; break; }; done
exec python3 bench/bench.py "$@"
