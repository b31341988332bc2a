#!/usr/bin/env bash
# A first look at the latency and throughput Lexora adds over direct access
# to an engine: wrk against the mock engine directly, then through Lexora
# (release build), with the gateway pinned to CPU 0 and wrk plus the engine
# to CPU 1. Interleaved rounds; prints medians. Not part of the tests.
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
cat >"$work/gw.yaml" <<YAML
logging: {level: warn}
backends:
  engine: {url: "$engine", models: [{name: m}]}
YAML
start gateway 0 serve --config "$work/gw.yaml" --host 127.0.0.1 --port 0
gateway=$URL
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
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
  : >"$work/direct.$c"; : >"$work/lexora.$c"
  for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS, $c connection(s)..." >&2
    run "$engine" "$c" >>"$work/direct.$c"
    run "$gateway" "$c" >>"$work/lexora.$c"
  done
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/${pids[1]}/status")
echo "| target | conns | req/s | p50 µs | p99 µs |"
echo "|---|---|---|---|---|"
for c in 1 64; do
  for t in direct lexora; do
    rps=$(cut -d' ' -f1 "$work/$t.$c" | median)
    p50=$(cut -d' ' -f2 "$work/$t.$c" | median)
    p99=$(cut -d' ' -f3 "$work/$t.$c" | median)
    echo "| $t | $c | $rps | $p50 | $p99 |"
  done
done
echo
echo "Lexora RSS after the run: $((rss / 1024)) MB"
