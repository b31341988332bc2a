#!/usr/bin/env bash
# Latency at low load, focused: direct access to the mock engine,
# lexora-relay (the floor of a proxy), nginx as a reverse proxy, and Lexora
# with every policy on at several busy-poll windows (server.busy_poll_us;
# 0 = off), interleaved over rounds, medians printed
# as a markdown table. Scenarios: one connection, back to back (plain
# answers, then 64-chunk streams at 1,000 tokens/s), and 100 streams/s open
# loop. A quicker look than scripts/bench.sh at what busy polling buys.
#
#   scripts/bench-latency.sh          (~4 min with the defaults)
#
# Environment: ROUNDS (3), DURATION (4 s per measurement), WINDOWS ("100
# 200 400": the busy-poll windows, µs, measured beside 0; "" for none),
# BASELINE (another lexora binary, measured as lexora-baseline with every
# policy on and no busy polling: an A/B of two builds), CARGO_TARGET_DIR.
# Needs taskset, nginx (apt-get install -y nginx-light), python3.
# Pinning as in scripts/bench.sh: the target on CPU 0, the load generator
# and the engines on CPU 1. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-4}" WINDOWS="${WINDOWS-100 200 400}"
KEY="sk-bench-000000001"
command -v nginx >/dev/null || { echo "needs nginx (apt-get install -y nginx-light)" >&2; exit 1; }
bench_setup
LOG_TAG=latency

LAUNCH=(taskset -c 1)
start_lexora_bin engine 200 mock --port 0 --model m --chunks 16
ENGINE=$URL
start_lexora_bin stream-engine 200 mock --port 0 --model s --chunks 64 --tokens-per-second 1000 \
  --stamp-events
STREAM_ENGINE=$URL

LAUNCH=(taskset -c 0)
start_nginx engine="$ENGINE" stream="$STREAM_ENGINE"

declare -A URL_M URL_S
start_relay "$ENGINE" "$STREAM_ENGINE"
TARGETS=(direct relay nginx)
URL_M[direct]=$ENGINE URL_S[direct]=$STREAM_ENGINE
URL_M[relay]=${RELAY_URL[0]} URL_S[relay]=${RELAY_URL[1]}
URL_M[nginx]=${NGINX_URL[engine]} URL_S[nginx]=${NGINX_URL[stream]}
for window in 0 $WINDOWS; do
  name="lexora-busy$window"
  { echo "server: {busy_poll_us: $window}"; lexora_config on "$ENGINE" "$STREAM_ENGINE"; } >"$work/$name.yaml"
  start_lexora_bin "$name" 200 serve --config "$work/$name.yaml" --host 127.0.0.1 --port 0
  TARGETS+=("$name"); URL_M[$name]=$URL URL_S[$name]=$URL
done
if [ -n "${BASELINE:-}" ]; then
  lexora_config on "$ENGINE" "$STREAM_ENGINE" >"$work/baseline.yaml"
  # start_lexora_bin runs $BIN/lexora: give the baseline that name.
  mkdir -p "$work/baseline" && cp "$BASELINE" "$work/baseline/lexora"
  BIN_SAVED=$BIN BIN=$work/baseline
  start_lexora_bin lexora-baseline 200 serve --config "$work/baseline.yaml" --host 127.0.0.1 --port 0
  BIN=$BIN_SAVED
  TARGETS+=(lexora-baseline); URL_M[lexora-baseline]=$URL URL_S[lexora-baseline]=$URL
fi
for t in "${TARGETS[@]}"; do
  check_answer "$t" "${URL_M[$t]}" m 0 16
  check_answer "$t" "${URL_S[$t]}" s 1 16
done

load() { # target scenario round args...
  local t=$1 s=$2 r=$3; shift 3
  taskset -c 1 "$BIN/lexora-bench" --label "$t" --warmup 1 --duration "$DURATION" \
    -H "Authorization: Bearer $KEY" "$@" >"$work/$t.$s.$r.json"
}
for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    log "round $r/$ROUNDS: $t"
    load "$t" c1 "$r" --url "${URL_M[$t]}/v1/chat/completions" --connections 1
    load "$t" stream-c1 "$r" --url "${URL_S[$t]}/v1/chat/completions" --model s --stream \
      --max-tokens 64 --connections 1
    load "$t" stream "$r" --url "${URL_S[$t]}/v1/chat/completions" --model s --stream \
      --max-tokens 64 --rate 100
  done
done

python3 - "$work" "$ROUNDS" "$DURATION" "${TARGETS[@]}" <<'PY'
import datetime, json, statistics, sys
work, rounds, duration, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def med(t, scenario, hist, q):
    values = []
    for r in range(1, rounds + 1):
        with open(f"{work}/{t}.{scenario}.{r}.json") as f:
            run = json.load(f)
        if run.get("errors"):
            sys.exit(f"{t}/{scenario}: {run['errors']} errors")
        values.append(run[hist][q])
    return statistics.median(values)
cols = [("c1", "latency_us", "p50"), ("c1", "latency_us", "p99"), ("stream-c1", "ttft_us", "p50"),
        ("stream-c1", "ttft_us", "p99"), ("stream", "ttft_us", "p50"), ("stream", "ttft_us", "p99"),
        ("stream", "gap_us", "p99"), ("stream", "ttft_transit_us", "p50"), ("stream", "ttft_transit_us", "p99"),
        ("stream", "event_delay_us", "p50"), ("stream", "event_delay_us", "p99")]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"{now}; {rounds} interleaved rounds of {duration} s; medians; µs; (+added over direct)\n")
print("| target | 1 conn p50 | 1 conn p99 | 1 stream TTFT p50 | 1 stream TTFT p99 "
      "| 100 streams/s TTFT p50 | TTFT p99 | gap p99 | first-token transit p50 | first-token transit p99 "
      "| chunk delay p50 | chunk delay p99 |")
def rows(columns):
    print("|---|" + "---|" * len(columns))
    for t in targets:
        cells = []
        for scenario, hist, q in columns:
            v, d = med(t, scenario, hist, q), med("direct", scenario, hist, q)
            cells.append(f"{v:,.0f}" if t == "direct" else f"{v:,.0f} ({v - d:+,.0f})")
        print(f"| {t} | " + " | ".join(cells) + " |")
rows(cols)
legs = [(scenario, f"ttft_{leg}_us", q) for scenario in ("stream-c1", "stream")
        for leg in ("there", "back") for q in ("p50", "p99")]
print("\nThe first token's transit leg by leg: *there* from the request's send to its arrival at "
      "the engine, *back* from the engine's write of the first token to its arrival at the client.\n")
print("| target | 1 stream there p50 | p99 | back p50 | p99 "
      "| 100 streams/s there p50 | p99 | back p50 | p99 |")
rows(legs)
PY
