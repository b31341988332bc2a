# shellcheck shell=bash disable=SC2154,SC2034  # variables come from, and LAUNCH goes to, the caller
# Sourced by scripts/bench.sh --soak (not run): SOAK_REQUESTS non-streamed
# requests and SOAK_STREAMS streams through Lexora with every policy on, in
# SOAK_CHUNKS chunks; after each chunk the gateway's RSS and CPU are read, so
# the report shows whether memory grows with the number of requests served
# (issue 6: no growth over a 1-million-request run). Writes OUT/soak.md and
# OUT/soak.json.

SOAK_CHUNKS="${SOAK_CHUNKS:-20}"
SOAK_CONNECTIONS="${SOAK_CONNECTIONS:-16}"

LAUNCH=(taskset -c "$CPU_LOAD")
start_lexora_bin engine 200 mock --port 0 --model m --chunks 16
ENGINE=$URL
# Unpaced streams: the soak is about memory per stream, not about pacing.
start_lexora_bin stream-engine 200 mock --port 0 --model s --chunks "$STREAM_TOKENS"
STREAM_ENGINE=$URL
LAUNCH=(taskset -c "$CPU_TARGET")
lexora_config on "$ENGINE" "$STREAM_ENGINE" >"$work/on.yaml"
start_lexora_bin lexora-on 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
LEXORA=$URL LEXORA_PID=$PID
check_answer lexora-on "$LEXORA" m 0 16
check_answer lexora-on "$LEXORA" s 1 16
sleep 0.5

soak_run() { # name count args... -> raw/soak.<name>.json
  taskset -c "$CPU_LOAD" "$BIN/lexora-bench" --url "$LEXORA/v1/chat/completions" \
    --connections "$SOAK_CONNECTIONS" --requests "$2" --warmup 0 --duration 100000 \
    -H "Authorization: Bearer $KEY" "${@:3}" >"$work/raw/soak.$1.json"
}

log "soak: $SOAK_REQUESTS requests and $SOAK_STREAMS streams ($STREAM_TOKENS chunks) through Lexora" \
  "(every policy on), $SOAK_CONNECTIONS connections, in $SOAK_CHUNKS chunks"
# One line per sample: chunk requests-so-far streams-so-far seconds rss_kb cpu_ticks
echo "0 0 0 0 $(rss_kb "$LEXORA_PID") $(cpu_ticks "$LEXORA_PID")" >"$work/soak.samples"
started=$SECONDS done_requests=0 done_streams=0
for c in $(seq "$SOAK_CHUNKS"); do
  # Cumulative targets, so the chunks add up exactly to the totals.
  requests=$((SOAK_REQUESTS * c / SOAK_CHUNKS - done_requests))
  streams=$((SOAK_STREAMS * c / SOAK_CHUNKS - done_streams))
  soak_run "plain.$c" "$requests"
  [ "$streams" -gt 0 ] && soak_run "stream.$c" "$streams" --stream --model s --max-tokens "$STREAM_TOKENS"
  done_requests=$((done_requests + requests)) done_streams=$((done_streams + streams))
  rss=$(rss_kb "$LEXORA_PID")
  echo "$c $done_requests $done_streams $((SECONDS - started)) $rss $(cpu_ticks "$LEXORA_PID")" >>"$work/soak.samples"
  errors=$(python3 -c 'import json, sys; print(sum(json.load(open(p))["errors"] for p in sys.argv[1:]))' \
    "$work"/raw/soak.*.json)
  log "soak $c/$SOAK_CHUNKS: $done_requests requests, $done_streams streams, RSS $((rss / 1024)) MB," \
    "errors $errors, $((SECONDS - started)) s"
done

mkdir -p "$OUT"
python3 "$ROOT/bench/soak_report.py" "$work" "$OUT" "$SOAK_CONNECTIONS" "$STREAM_TOKENS" "$(getconf CLK_TCK)"
cat "$OUT/soak.md"
