#!/usr/bin/env bash
# The performance harness (issue 6): Lexora (every policy off, every policy
# on, and every policy on with busy polling) side by side with direct access to
# the mock engine (the floor), lexora-relay (bytes relayed on tokio's event
# loop, no HTTP: the floor of a proxy), nginx as a reverse proxy (the
# reference) and,
# with --peers, LiteLLM's proxy and SGLang's router, in the same run,
# interleaved over rounds; medians reported.
#
#   scripts/bench.sh            full run -> bench/results.md, results.json,
#                               latency.svg (~11 min; ~20 min with --peers)
#   scripts/bench.sh --smoke    one tiny round, direct, the relay and Lexora (< 30 s),
#                               results in a temp dir; exits 1 on any error
#   scripts/bench.sh --peers    also LiteLLM and SGLang's router (installed into
#                               ~/.cache/lexora by scripts/bench-peers-install.sh)
#   scripts/bench.sh --pgo      also Lexora with every policy on, built with
#                               profile-guided optimisation (scripts/build-pgo.sh,
#                               ~10 min more; needs llvm-profdata of rustc's LLVM)
#   scripts/bench.sh --soak     only the soak: 1,000,000 requests (and 50,000
#                               streams) through Lexora with every policy on,
#                               RSS sampled along the way -> bench/soak.md (~2 min)
#
# Scenarios, each run on every target in turn before the next, every round:
# latency at concurrency 1; fixed rates (open loop); 64-chunk streams at a
# fixed rate; 64 connections (wrk); LONG_STREAMS concurrent long streams
# (peak RSS, errors); then each target's RSS after the round.
#
# Environment: ROUNDS (3), DURATION (5 s per measurement), WARMUP (1 s),
# RATES ("100 500 1000 2000"), STREAM_RATE (streams/s, 100), TOKEN_RATE (mock
# tokens/s, 1000), STREAM_TOKENS (64), LONG_STREAMS (1000), LONG_TOKENS (64),
# LONG_TOKEN_RATE (10 tokens/s, so a long stream lasts 6.4 s), OUT (bench),
# SOAK_REQUESTS (1000000), SOAK_STREAMS (50000), CARGO_TARGET_DIR.
# Slow targets (LiteLLM, ~124 req/s on one core) get SLOW_DURATION (2 s)
# at the fixed rates above SLOW_RATE (200), at most 256 requests in flight and
# a 10 s timeout (requests beyond count as errors), and SLOW_STREAM_RATE (10)
# streams/s, so a round stays minutes long; the tables say what each ran.
# Needs: taskset, wrk and nginx (apt-get install -y wrk nginx-light), python3.
#
# Pinning: the target under test on CPU 0; the load generator and the mock
# engines on CPU 1. Only 127.0.0.1 is ever contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

SMOKE=0 PEERS=0 SOAK=0 PGO=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --peers) PEERS=1 ;;
    --pgo) PGO=1 ;;
    --soak) SOAK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [ "$SMOKE" = 1 ]; then
  ROUNDS=1 DURATION=1 WARMUP=0.3 RATES="500" STREAM_RATE=50 PEERS=0 SOAK=0
  LONG_STREAMS=100 LONG_TOKENS=16 LONG_TOKEN_RATE=50
fi
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
RATES="${RATES:-100 500 1000 2000}"
STREAM_RATE="${STREAM_RATE:-100}"
TOKEN_RATE="${TOKEN_RATE:-1000}"
STREAM_TOKENS="${STREAM_TOKENS:-64}"
LONG_STREAMS="${LONG_STREAMS:-1000}"
LONG_TOKENS="${LONG_TOKENS:-64}"
LONG_TOKEN_RATE="${LONG_TOKEN_RATE:-10}"
SLOW_RATE="${SLOW_RATE:-200}"
SLOW_DURATION="${SLOW_DURATION:-2}"
SLOW_STREAM_RATE="${SLOW_STREAM_RATE:-10}"
SOAK_REQUESTS="${SOAK_REQUESTS:-1000000}"
SOAK_STREAMS="${SOAK_STREAMS:-50000}"
OUT="${OUT:-$ROOT/bench}"
CPU_TARGET=0 CPU_LOAD=1
KEY="sk-bench-000000001"

for tool in taskset python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [ "$SMOKE" = 0 ] && [ "$SOAK" = 0 ]; then
  for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y wrk nginx-light)" >&2; exit 1; }
  done
fi

bench_setup
mkdir -p "$work/raw"
if [ "$PGO" = 1 ]; then
  # Before any target starts: the build takes both cores for minutes.
  "$ROOT/scripts/build-pgo.sh"
fi

if [ "$SOAK" = 1 ]; then
  # shellcheck source=scripts/bench-soak.sh
  source "$ROOT/scripts/bench-soak.sh"
  exit 0
fi

# --- upstreams (CPU 1) -------------------------------------------------------
LAUNCH=(taskset -c "$CPU_LOAD")
start_lexora_bin engine 200 mock --port 0 --model m --chunks 16
ENGINE=$URL ENGINE_PID=$PID
# The streaming engines stamp each event with its write time, for
# lexora-bench's per-event delay (event_delay_us).
start_lexora_bin stream-engine 200 mock --port 0 --model s --chunks "$STREAM_TOKENS" \
  --tokens-per-second "$TOKEN_RATE" --stamp-events
STREAM_ENGINE=$URL STREAM_ENGINE_PID=$PID
start_lexora_bin long-engine 200 mock --port 0 --model l --chunks "$LONG_TOKENS" \
  --tokens-per-second "$LONG_TOKEN_RATE" --stamp-events
LONG_ENGINE=$URL LONG_ENGINE_PID=$PID
log "mock engine $ENGINE, streaming mock $STREAM_ENGINE ($TOKEN_RATE tokens/s, $STREAM_TOKENS chunks)," \
  "long-stream mock $LONG_ENGINE ($LONG_TOKEN_RATE tokens/s, $LONG_TOKENS chunks)"

# --- targets (CPU 0) ---------------------------------------------------------
# Each target: NAME -> URL_M (16-token answers), URL_S (streams), URL_L (long
# streams), and the PIDs whose CPU and RSS are measured for each (a peer may
# run one process per upstream). SLOW marks targets that get the lighter load.
declare -A URL_M URL_S URL_L PIDS PIDS_S PIDS_L SLOW
TARGETS=()
add_target() { # name url-m url-s url-l pids-m pids-s pids-l [slow]
  TARGETS+=("$1"); URL_M[$1]=$2; URL_S[$1]=$3; URL_L[$1]=$4
  PIDS[$1]=$5; PIDS_S[$1]=$6; PIDS_L[$1]=$7; SLOW[$1]=${8:-0}
}

add_target direct "$ENGINE" "$STREAM_ENGINE" "$LONG_ENGINE" "$ENGINE_PID" "$STREAM_ENGINE_PID" "$LONG_ENGINE_PID"

LAUNCH=(taskset -c "$CPU_TARGET")
# The floor of an event-loop proxy: lexora-relay passes bytes between the
# client and a connection of its own to the engine and reads no HTTP, so
# what it adds is what this machine charges for a process in the path on
# CPU 0 at all.
start_relay "$ENGINE" "$STREAM_ENGINE" "$LONG_ENGINE"
add_target relay "${RELAY_URL[0]}" "${RELAY_URL[1]}" "${RELAY_URL[2]}" "$PID" "$PID" "$PID"

if [ "$SMOKE" = 0 ]; then
  start_nginx engine="$ENGINE" stream="$STREAM_ENGINE" long="$LONG_ENGINE"
  add_target nginx "${NGINX_URL[engine]}" "${NGINX_URL[stream]}" "${NGINX_URL[long]}" "$PID" "$PID" "$PID"

  lexora_config off "$ENGINE" "$STREAM_ENGINE" "$LONG_ENGINE" >"$work/off.yaml"
  start_lexora_bin lexora-off 200 serve --config "$work/off.yaml" --host 127.0.0.1 --port 0
  add_target lexora-off "$URL" "$URL" "$URL" "$PID" "$PID" "$PID"
fi
lexora_config on "$ENGINE" "$STREAM_ENGINE" "$LONG_ENGINE" >"$work/on.yaml"
start_lexora_bin lexora-on 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
add_target lexora-on "$URL" "$URL" "$URL" "$PID" "$PID" "$PID"
lexora_config busy "$ENGINE" "$STREAM_ENGINE" "$LONG_ENGINE" >"$work/busy.yaml"
start_lexora_bin lexora-busy 200 serve --config "$work/busy.yaml" --host 127.0.0.1 --port 0
add_target lexora-busy "$URL" "$URL" "$URL" "$PID" "$PID" "$PID"
if [ "$PGO" = 1 ]; then
  # The same configuration as lexora-on; only the build differs.
  BIN_SAVED=$BIN BIN="$CARGO_TARGET_DIR/pgo/use/release"
  start_lexora_bin lexora-pgo 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
  BIN=$BIN_SAVED
  add_target lexora-pgo "$URL" "$URL" "$URL" "$PID" "$PID" "$PID"
fi

NOTES=()
if [ "$PEERS" = 1 ]; then
  # shellcheck source=scripts/bench-peers.sh
  source "$ROOT/scripts/bench-peers.sh"
fi

# Every target must really answer, streamed or not, on each upstream.
for t in "${TARGETS[@]}"; do
  check_answer "$t" "${URL_M[$t]}" m 0 16
  check_answer "$t" "${URL_S[$t]}" s 1 16
  check_answer "$t" "${URL_L[$t]}" l 1 2
done

# --- measurements ------------------------------------------------------------
sleep 0.5
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2086
  echo "$t $(rss_kb ${PIDS[$t]})" >>"$work/rss_idle"
done

# Waits (at most 30 s) until the target's processes are idle: a slow target
# may still be working off requests the load generator gave up on, and that
# work must not land on the next target's measurement (same core).
settle() { # pids...
  local before after
  for _ in $(seq 150); do
    before=$(cpu_ticks "$@"); sleep 0.2; after=$(cpu_ticks "$@")
    [ $((after - before)) -le 1 ] && return 0
  done
  log "still busy after 30 s: $*"
}

bench() { # target scenario round pids args... -> raw/<target>.<scenario>.<round>.json
  local t=$1 s=$2 r=$3 p=$4; shift 4
  local out="$work/raw/$t.$s.$r.json" before after
  # shellcheck disable=SC2086
  before=$(cpu_ticks $p)
  if ! taskset -c "$CPU_LOAD" "$BIN/lexora-bench" --label "$t" --warmup "$WARMUP" --duration "$DURATION" \
      -H "Authorization: Bearer $KEY" "$@" >"$out.tmp" 2>"$work/raw/$t.$s.$r.err"; then
    echo '{"failed": true}' >"$out.tmp"
  fi
  # shellcheck disable=SC2086
  after=$(cpu_ticks $p)
  python3 - "$out.tmp" "$out" "$((after - before))" <<'PY'
import json, sys
data = json.load(open(sys.argv[1])); data["cpu_ticks"] = int(sys.argv[3])
json.dump(data, open(sys.argv[2], "w"))
PY
  # shellcheck disable=SC2086
  settle $p
}

wrk_run() { # target round -> raw/<target>.c64.<round>.json (wrk, 64 connections)
  local t=$1 r=$2 before after
  wrk_post_lua >"$work/post.lua"
  taskset -c "$CPU_LOAD" wrk -t1 -c64 -d1s -s "$work/post.lua" "${URL_M[$t]}/v1/chat/completions" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PIDS[$t]})
  taskset -c "$CPU_LOAD" wrk -t1 -c64 -d"${DURATION}s" --latency -s "$work/post.lua" \
    "${URL_M[$t]}/v1/chat/completions" >"$work/raw/$t.c64.$r.txt" 2>&1 || true
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PIDS[$t]})
  python3 "$ROOT/bench/wrk_json.py" "$work/raw/$t.c64.$r.txt" "$work/raw/$t.c64.$r.json" "$((after - before))"
  # shellcheck disable=SC2086
  settle ${PIDS[$t]}
}

# LONG_STREAMS streams at once, one per connection, each LONG_TOKENS tokens
# at LONG_TOKEN_RATE: the target's peak RSS (sampled every 0.1 s) and errors.
long_run() { # target round -> raw/<target>.long.<round>.json
  local t=$1 r=$2 sampler
  local before
  # shellcheck disable=SC2086
  before=$(rss_kb ${PIDS_L[$t]})
  echo "$before" >"$work/long.peak"
  (
    peak=$before
    while :; do
      # shellcheck disable=SC2086
      v=$(rss_kb ${PIDS_L[$t]} 2>/dev/null || echo 0)
      if [ "$v" -gt "$peak" ]; then peak=$v; echo "$peak" >"$work/long.peak"; fi
      sleep 0.1
    done
  ) &
  sampler=$!; pids+=("$sampler")
  # The request budget makes it exactly one stream per connection: all
  # start at once, and none ends before the last has started.
  WARMUP=0 DURATION=100000 bench "$t" long "$r" "${PIDS_L[$t]}" --url "${URL_L[$t]}/v1/chat/completions" \
    --model l --stream --max-tokens "$LONG_TOKENS" --connections "$LONG_STREAMS" \
    --requests "$LONG_STREAMS" --timeout 60
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  python3 - "$work/raw/$t.long.$r.json" "$before" "$(<"$work/long.peak")" <<'PY'
import json, sys
path, before, peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = json.load(open(path)); data["rss_before_kb"] = before; data["rss_peak_kb"] = peak
json.dump(data, open(path, "w"))
PY
}

# One scenario on one target.
run_scenario() { # scenario target round
  local s=$1 t=$2 r=$3 slow=() stream_rate=$STREAM_RATE rate
  [ "${SLOW[$t]}" = 1 ] && slow=(--max-inflight 256 --timeout 10) && stream_rate=$SLOW_STREAM_RATE
  case $s in
    c1) bench "$t" c1 "$r" "${PIDS[$t]}" --url "${URL_M[$t]}/v1/chat/completions" --connections 1 ;;
    rate*)
      rate=${s#rate}
      if [ "${SLOW[$t]}" = 1 ] && [ "$rate" -gt "$SLOW_RATE" ]; then
        DURATION=$SLOW_DURATION WARMUP=0.5 bench "$t" "$s" "$r" "${PIDS[$t]}" \
          --url "${URL_M[$t]}/v1/chat/completions" --rate "$rate" "${slow[@]}"
      else
        bench "$t" "$s" "$r" "${PIDS[$t]}" --url "${URL_M[$t]}/v1/chat/completions" \
          --rate "$rate" "${slow[@]}"
      fi
      ;;
    stream)
      bench "$t" stream "$r" "${PIDS_S[$t]}" --url "${URL_S[$t]}/v1/chat/completions" --model s --stream \
        --max-tokens "$STREAM_TOKENS" --rate "$stream_rate" "${slow[@]}"
      ;;
    c64)
      if [ "$SMOKE" = 1 ]; then
        bench "$t" c64 "$r" "${PIDS[$t]}" --url "${URL_M[$t]}/v1/chat/completions" --connections 64
      else
        wrk_run "$t" "$r"
      fi
      ;;
    long) long_run "$t" "$r" ;;
  esac
}

# Scenario by scenario, every target back to back: what a target is
# compared with (direct access, nginx) was measured within the same minute,
# so a spell of load on the host (they last minutes on this VM) lands on
# all of them rather than on whichever target ran then.
SCENARIOS=(c1)
for rate in $RATES; do SCENARIOS+=("rate$rate"); done
SCENARIOS+=(stream c64 long)
n=${#TARGETS[@]}
for r in $(seq "$ROUNDS"); do
  for k in "${!SCENARIOS[@]}"; do
    s=${SCENARIOS[$k]}
    log "round $r/$ROUNDS: $s"
    for i in $(seq 0 $((n - 1))); do
      # Rotate the order with the round and the scenario, so no target
      # always runs first or always follows the same one.
      run_scenario "$s" "${TARGETS[$(((i + r - 1 + k) % n))]}" "$r"
    done
  done
  for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    echo "$t $r $(rss_kb ${PIDS[$t]})" >>"$work/rss_rounds"
  done
done

# --- report --------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then OUT="$work/out"; fi
mkdir -p "$OUT"
printf '%s\n' "${NOTES[@]}" >"$work/notes"
cat >"$work/settings" <<SETTINGS
targets=$(printf '%s,' "${TARGETS[@]}")
slow_targets=$(for t in "${TARGETS[@]}"; do [ "${SLOW[$t]}" = 1 ] && printf '%s,' "$t"; done; true)
rates=$RATES
rounds=$ROUNDS
duration=$DURATION
warmup=$WARMUP
stream_rate=$STREAM_RATE
token_rate=$TOKEN_RATE
stream_tokens=$STREAM_TOKENS
long_streams=$LONG_STREAMS
long_tokens=$LONG_TOKENS
long_token_rate=$LONG_TOKEN_RATE
slow_rate=$SLOW_RATE
slow_duration=$SLOW_DURATION
slow_stream_rate=$SLOW_STREAM_RATE
clk_tck=$(getconf CLK_TCK)
smoke=$SMOKE
SETTINGS
python3 "$ROOT/bench/report.py" "$work" "$OUT"
if [ "$SMOKE" = 0 ]; then # keep the raw per-round data next to the results
  rm -rf "$OUT/raw"; cp -r "$work/raw" "$OUT/raw"
  cp "$work/rss_idle" "$work/rss_rounds" "$work/notes" "$work/settings" "$OUT/raw/"
fi
cat "$OUT/results.md"
if [ "$SMOKE" = 1 ]; then
  python3 - "$OUT/results.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
bad = [f"{t}/{s}" for t, scen in data["targets"].items() for s, v in scen.items()
       if isinstance(v, dict) and (v.get("failed") or v.get("errors"))]
if bad:
    sys.exit(f"smoke: errors or failures in {', '.join(bad)}")
print("smoke: ok", file=sys.stderr)
PY
fi
