#!/usr/bin/env bash
# Instructions per request under `valgrind --tool=callgrind`: the regression
# signal that does not care how busy the machine is (issue 6). Instruction
# counts of the same binary on the same inputs repeat to well under 1 %,
# where wall-clock figures on this 2-core machine swing by 10 % or more.
#
#   scripts/bench-callgrind.sh     -> bench/callgrind.md, bench/callgrind.json
#
# Each target runs under callgrind while lexora-bench (native, not under
# valgrind) sends requests one at a time over one keep-alive connection;
# only what the target does after its first 20 requests is counted.
# Every figure is the difference of two runs of the same target, one with
# N requests and one with N/10, divided by the difference in requests, so
# start-up, shutdown and the first request's one-off work cancel out:
#   instructions/request = (I(N) - I(N/10)) / (N - N/10)
# Beside it, the code footprint: distinct 64-byte lines of machine code the
# N run executed (bench/code_lines.py). The requests are all alike, so that
# is what one request touches; on a core whose caches the network stack has
# just refilled, each of those lines is fetched again (at 100 streams/s the
# request path took several times as long as the same instructions back to
# back, most likely for that reason), so it counts for the first token as
# much as the instructions do.
# Targets: the mock engine alone (the floor), Lexora with policies off, and
# Lexora with every policy on (the configurations of scripts/bench.sh), and
# with PGO=1 also every policy on built by scripts/build-pgo.sh (lexora-pgo;
# the script runs it first, which reuses an up-to-date build); engines run
# natively. Non-streamed 16-token answers, and 64-chunk streams
# paced at 500 tokens/s (one event per write, so no timing-dependent batching).
#
# Environment: REQUESTS (4000), STREAMS (100), OUT (bench), REVISION (git
# describe; names the code measured), PROFILES (a directory to keep the
# callgrind profiles in, for callgrind_annotate or code_lines.py --top;
# default: not kept), PGO (1: also the PGO build), CARGO_TARGET_DIR.
# Needs valgrind. Takes ~3-4 minutes (with PGO=1, +1 minute and the PGO
# build's ~10 when it is not up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
LOG_TAG=callgrind

REQUESTS="${REQUESTS:-4000}"
STREAMS="${STREAMS:-100}"
WARM=20  # requests before instrumentation starts
STREAM_TOKENS=64
TOKEN_RATE=500
OUT="${OUT:-$ROOT/bench}"
KEY="sk-bench-000000001"

command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
if [ "${PGO:-0}" = 1 ]; then "$ROOT/scripts/build-pgo.sh"; fi
bench_setup
BENCH="$BIN/lexora-bench"  # BIN changes to measure the PGO build

# Engines, native. Only the target is under valgrind.
LAUNCH=(env)
start_lexora_bin engine 200 mock --port 0 --model m --chunks 16
ENGINE=$URL
start_lexora_bin stream-engine 200 mock --port 0 --model s --chunks "$STREAM_TOKENS" \
  --tokens-per-second "$TOKEN_RATE"
STREAM_ENGINE=$URL
# Health probes every hour: a probe every 10 s would add instructions in
# proportion to wall time, which under valgrind depends on the machine.
for mode in off on; do
  { lexora_config "$mode" "$ENGINE" "$STREAM_ENGINE"; echo "health: {check_interval: 3600}"; } \
    >"$work/$mode.yaml"
done

# One measured run: start the target under callgrind on one CPU (so its
# runtime has one worker thread and no work stealing to vary) with
# instrumentation off, send WARM requests, switch instrumentation on, send
# `count` requests, stop it with SIGTERM (a graceful exit writes the
# profile) and set TOTAL to its instruction count. Start-up and the first
# requests are left out because some of their work runs for a fixed wall
# time (the metrics clock calibrates itself by spinning on first use), and
# wall time under valgrind depends on the machine: counted, they made
# repeated runs differ by several percent. (Not in a $(...) subshell: the
# PIDs it starts must reach the cleanup.)
measure() { # name count client-args... -- target-args...
  local name=$1 count=$2; shift 2
  local client=() out="$work/$name.$count.callgrind"
  while [ "$1" != -- ]; do client+=("$1"); shift; done
  shift
  LAUNCH=(taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out"
    --dump-line=no --dump-instr=yes --log-file="$work/$name.$count.valgrind")
  start_lexora_bin "$name.$count" 1200 "$@"
  local target=$PID
  send() { # count output
    "$BENCH" --url "$URL/v1/chat/completions" --connections 1 --requests "$1" \
      --warmup 0 --duration 100000 --timeout 60 -H "Authorization: Bearer $KEY" "${client[@]}" >"$2" \
      || { echo "$name: lexora-bench failed" >&2; exit 1; }
  }
  send "$WARM" /dev/null
  callgrind_control --instr=on "$target" >/dev/null 2>&1
  send "$count" "$work/$name.$count.json"
  python3 - "$work/$name.$count.json" "$count" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if d["ok"] != int(sys.argv[2]) or d["errors"]:
    sys.exit(f"{sys.argv[1]}: {d['ok']} ok, {d['errors']} errors ({d['errors_by_kind']})")
PY
  # Off before the shutdown, so that the code lines are the requests' own.
  callgrind_control --instr=off "$target" >/dev/null 2>&1
  kill -TERM "$target"
  wait "$target" || { echo "$name: exited with $?" >&2; cat "$work/$name.$count.valgrind" >&2; exit 1; }
  TOTAL=$(awk '/^totals:/ {print $2; exit}' "$out")  # summary: is 0 once instrumentation is off
  LINES=$(python3 "$ROOT/bench/code_lines.py" "$out")
  if [ -n "${PROFILES:-}" ]; then mkdir -p "$PROFILES" && cp "$out" "$PROFILES/"; fi
}

results="$work/results.tsv"
: >"$results"
run_pair() { # target scenario n client-args... -- target-args...
  local target=$1 scenario=$2 n=$3; shift 3
  local base=$((n / 10)) small large
  log "$target, $scenario: $base then $n requests"
  measure "$target-$scenario" "$base" "$@"; small=$TOTAL
  measure "$target-$scenario" "$n" "$@"; large=$TOTAL
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$scenario" "$base" "$small" "$n" "$large" \
    "$LINES" >>"$results"
  log "$target, $scenario: $(((large - small) / (n - base))) instructions/request, $LINES code lines"
}

STREAM_ARGS=(--stream --model s --max-tokens "$STREAM_TOKENS")
run_pair mock plain "$REQUESTS" -- mock --port 0 --model m --chunks 16
run_pair mock stream "$STREAMS" "${STREAM_ARGS[@]}" -- mock --port 0 --model s \
  --chunks "$STREAM_TOKENS" --tokens-per-second "$TOKEN_RATE"
for mode in off on; do
  run_pair "lexora-$mode" plain "$REQUESTS" -- serve --config "$work/$mode.yaml" --host 127.0.0.1 --port 0
  run_pair "lexora-$mode" stream "$STREAMS" "${STREAM_ARGS[@]}" -- serve --config "$work/$mode.yaml" \
    --host 127.0.0.1 --port 0
done
if [ "${PGO:-0}" = 1 ]; then
  BIN="$CARGO_TARGET_DIR/pgo/use/release"
  run_pair lexora-pgo plain "$REQUESTS" -- serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
  run_pair lexora-pgo stream "$STREAMS" "${STREAM_ARGS[@]}" -- serve --config "$work/on.yaml" \
    --host 127.0.0.1 --port 0
fi

mkdir -p "$OUT"
python3 "$ROOT/bench/callgrind_report.py" "$results" "$OUT" "$(valgrind --version)" \
  "${REVISION:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)}" "$STREAM_TOKENS" "$TOKEN_RATE"
cat "$OUT/callgrind.md"
