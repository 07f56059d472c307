#!/usr/bin/env bash
# Backs up and restores a sample volume with the embedded default repository and catalog:
# a full backup, a change, an incremental backup, a verified restore compared with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/src/cli/main.js ] || npx tsc -p tsconfig.json
cv() { node dist/src/cli/main.js "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
vol="$work/sample.img"
# 64 MiB: some random data, text, and zeros (free space).
head -c 16777216 /dev/urandom > "$vol"
for _ in $(seq 64); do cat /etc/services 2>/dev/null || echo "sample text line"; done | head -c 16777216 >> "$vol"
truncate -s 64M "$vol"
cv backup "$vol" --volume-id 5a3e0000-0000-4000-8000-00000000de70 --name demo-full
printf 'changed block' | dd of="$vol" bs=1 seek=40000000 conv=notrunc status=none
cv backup "$vol" --volume-id 5a3e0000-0000-4000-8000-00000000de70 --incremental --name demo-incremental
cv list --volume 5a3e0000-0000-4000-8000-00000000de70
id=$(cv list --volume 5a3e0000-0000-4000-8000-00000000de70 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).at(-1).id))')
cv restore "$id" "$work/restored.img"
cmp "$vol" "$work/restored.img"
echo "restored volume is byte-identical to the source"
