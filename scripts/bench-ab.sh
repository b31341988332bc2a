#!/usr/bin/env bash
# A/B of two Lexora binaries in the same run: every policy on, wrk with 64
# connections, the gateways on CPU 0, wrk and the mock engine on CPU 1,
# interleaved rounds. Prints req/s and CPU µs per request for each.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY      (ROUNDS=3, DURATION=5)
#
# e.g. build a baseline with
#   git worktree add /tmp/base REV && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release -p lexora --manifest-path /tmp/base/Cargo.toml
# Needs wrk and taskset.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,12p' "$0"; exit 2; }
OLD=$1 NEW=$2
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}"
KEY="sk-bench-000000001"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

listening() { # file -> the URL a lexora process announced
  for _ in $(seq 100); do grep -q http "$1" 2>/dev/null && break; sleep 0.05; done
  awk '{print $NF; exit}' "$1"
}
taskset -c 1 "$NEW" mock --port 0 --model m --chunks 16 >"$work/mock.out" 2>/dev/null &
pids+=($!)
ENGINE=$(listening "$work/mock.out")
cat >"$work/on.yaml" <<YAML
logging: {level: warn}
auth:
  keys: [{key: $KEY, user: bench, max_priority: high}]
rate_limit: {enabled: true, default_rate: 1000000, default_burst: 1000000}
rate_limits:
  default: {requests_per_minute: 1000000000, tokens_per_minute: 1000000000000}
queue: {max_size: 4096}
retry: {max_retries: 3}
circuit_breaker: {enabled: true}
metrics: {enabled: true}
backends:
  engine: {url: "$ENGINE", max_concurrency: 1024, models: [{name: m}]}
YAML
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16}'
LUA
declare -A PID URL
for v in old new; do
  bin=$OLD; [ "$v" = new ] && bin=$NEW
  taskset -c 0 "$bin" serve --config "$work/on.yaml" --host 127.0.0.1 --port 0 >"$work/$v.out" 2>/dev/null &
  PID[$v]=$!; pids+=($!)
  URL[$v]=$(listening "$work/$v.out")
done
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
hz=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for v in old new; do
    taskset -c 1 wrk -t1 -c64 -d1s -s "$work/post.lua" "${URL[$v]}/v1/chat/completions" >/dev/null 2>&1
    before=$(ticks "${PID[$v]}")
    rps=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -s "$work/post.lua" "${URL[$v]}/v1/chat/completions" 2>&1 |
      awk '/Requests\/sec/ {print $2}')
    after=$(ticks "${PID[$v]}")
    python3 -c "print('%s round %s: %s req/s, %.1f µs CPU per request' % ('$v', $r, '$rps', ($after - $before) * 1e6 / $hz / ($rps * $DURATION)))"
  done
done
