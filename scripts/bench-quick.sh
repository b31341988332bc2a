#!/usr/bin/env bash
# A first look at the latency and throughput Lexora adds over direct access
# to an engine: wrk against the mock engine directly, then through Lexora
# (release build) with its policies off and with every policy on (API key,
# limits, queue, retries, breaker), the gateway pinned to CPU 0 and wrk plus
# the engine to CPU 1. Interleaved rounds; prints medians. Not part of the tests.
# The full harness (nginx and peer gateways, open-loop rates) is separate.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --bin lexora >&2
BIN="$TARGET_DIR/release/lexora"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start() { # name, cpu, args... -> sets URL (no subshell, so pids is kept)
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$BIN" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q http "$work/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  URL=$(awk '{print $NF}' "$work/$name.out")
}

start engine 1 mock --port 0 --model m --chunks 16
engine=$URL
# Policies off: the seed-000 default rate limit, retries and breaker disabled.
cat >"$work/off.yaml" <<YAML
logging: {level: warn}
rate_limit: {enabled: false}
retry: {max_retries: 0}
circuit_breaker: {enabled: false}
backends:
  engine: {url: "$engine", models: [{name: m}]}
YAML
# Every policy on, with limits high enough never to refuse.
cat >"$work/on.yaml" <<YAML
logging: {level: warn}
auth:
  keys: [{key: sk-bench-000000001, user: bench, max_priority: high}]
rate_limit: {enabled: true, default_rate: 1000000, default_burst: 1000000}
rate_limits:
  default: {requests_per_minute: 1000000000, tokens_per_minute: 1000000000000}
retry: {max_retries: 3}
circuit_breaker: {enabled: true}
backends:
  engine: {url: "$engine", max_concurrency: 1024, models: [{name: m}]}
YAML
start off 0 serve --config "$work/off.yaml" --host 127.0.0.1 --port 0
off=$URL
start on 0 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
on=$URL
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-000000001"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16}'
LUA

run() { # url, connections -> "rps p50_us p99_us"
  taskset -c 1 wrk -t1 -c"$2" -d"$DURATION" --latency -s "$work/post.lua" "$1/v1/chat/completions" >"$work/wrk.txt"
  awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1000000; return v }
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=us($2)} /^ +99%/ {p99=us($2)}
    END {printf "%.0f %.0f %.0f\n", rps, p50, p99}' "$work/wrk.txt"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for c in 1 64; do
  : >"$work/direct.$c"; : >"$work/policies-off.$c"; : >"$work/policies-on.$c"
  for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS, $c connection(s)..." >&2
    run "$engine" "$c" >>"$work/direct.$c"
    run "$off" "$c" >>"$work/policies-off.$c"
    run "$on" "$c" >>"$work/policies-on.$c"
  done
done
rss_off=$(awk '/VmRSS/ {print $2}' "/proc/${pids[1]}/status")
rss_on=$(awk '/VmRSS/ {print $2}' "/proc/${pids[2]}/status")
echo "| target | conns | req/s | p50 µs | p99 µs |"
echo "|---|---|---|---|---|"
for c in 1 64; do
  for t in direct policies-off policies-on; do
    rps=$(cut -d' ' -f1 "$work/$t.$c" | median)
    p50=$(cut -d' ' -f2 "$work/$t.$c" | median)
    p99=$(cut -d' ' -f3 "$work/$t.$c" | median)
    echo "| $t | $c | $rps | $p50 | $p99 |"
  done
done
echo
echo "Lexora RSS after the run: $((rss_off / 1024)) MB (policies off), $((rss_on / 1024)) MB (policies on)"
