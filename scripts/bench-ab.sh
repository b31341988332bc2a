#!/usr/bin/env bash
# A/B of two Lexora binaries in the same run: every policy on (the same
# configuration as scripts/bench.sh), wrk with 64 connections, the gateways
# on CPU 0, wrk and the mock engine on CPU 1, interleaved rounds. Prints
# req/s and CPU µs per request for each.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY      (ROUNDS=3, DURATION=5)
#
# e.g. build a baseline with
#   git worktree add /tmp/base REV && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release -p lexora --manifest-path /tmp/base/Cargo.toml
# Needs wrk and taskset.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,12p' "$0"; exit 2; }
OLD=$(realpath "$1") NEW=$(realpath "$2")
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}"
KEY="sk-bench-000000001"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
work=$(mktemp -d)
pids=()
trap bench_cleanup EXIT

LAUNCH=(taskset -c 1) BIN=$(dirname "$NEW")
start_lexora_bin mock 200 mock --port 0 --model m --chunks 16
lexora_config on "$URL" "$URL" >"$work/on.yaml"
wrk_post_lua >"$work/post.lua"
declare -A PIDS URLS
for v in old new; do
  bin=$OLD; [ "$v" = new ] && bin=$NEW
  LAUNCH=(taskset -c 0) BIN=$(dirname "$bin")
  start_lexora_bin "$v" 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
  PIDS[$v]=$PID URLS[$v]=$URL
done
hz=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for v in old new; do
    url="${URLS[$v]}/v1/chat/completions"
    taskset -c 1 wrk -t1 -c64 -d1s -s "$work/post.lua" "$url" >/dev/null 2>&1
    before=$(cpu_ticks "${PIDS[$v]}")
    rps=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -s "$work/post.lua" "$url" 2>&1 |
      awk '/Requests\/sec/ {print $2}')
    after=$(cpu_ticks "${PIDS[$v]}")
    python3 -c "print('%s round %s: %s req/s, %.1f µs CPU per request' % ('$v', $r, '$rps', ($after - $before) * 1e6 / $hz / ($rps * $DURATION)))"
  done
done
