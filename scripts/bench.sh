#!/usr/bin/env bash
# The performance harness (issue 6): Lexora side by side with direct access to
# the mock engine (the floor) and nginx as a reverse proxy (the reference),
# in the same run, interleaved over rounds; medians reported.
#
#   scripts/bench.sh            full run -> bench/results.md, bench/results.json
#   scripts/bench.sh --smoke    one tiny round, direct + Lexora only (< 30 s),
#                               results in a temp dir; exits 1 on any error
#   scripts/bench.sh --peers    also LiteLLM / SGLang router when importable
#                               from a venv under ~/.cache/lexora
#
# Environment: ROUNDS (3), DURATION (5 s per measurement), WARMUP (1 s),
# RATES ("500 1000 2000"), STREAM_RATE (streams/s, 100), TOKEN_RATE (mock
# tokens/s, 1000), STREAM_TOKENS (64), OUT (bench), CARGO_TARGET_DIR.
# Needs: taskset, wrk and nginx (apt-get install -y wrk nginx-light), python3.
#
# Pinning: the target under test on CPU 0; the load generator and the mock
# engines on CPU 1. Only 127.0.0.1 is ever contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0 PEERS=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --peers) PEERS=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [ "$SMOKE" = 1 ]; then
  ROUNDS=1 DURATION=1 WARMUP=0.3 RATES="500" STREAM_RATE=50 PEERS=0
fi
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
RATES="${RATES:-500 1000 2000}"
STREAM_RATE="${STREAM_RATE:-100}"
TOKEN_RATE="${TOKEN_RATE:-1000}"
STREAM_TOKENS="${STREAM_TOKENS:-64}"
OUT="${OUT:-$ROOT/bench}"
CPU_TARGET=0 CPU_LOAD=1
KEY="sk-bench-000000001"

for tool in taskset python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [ "$SMOKE" = 0 ]; then
  for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y wrk nginx-light)" >&2; exit 1; }
  done
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -p lexora -p lexora-bench >&2
BIN="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/raw"

log() { echo "[bench $(date +%T)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url: until it accepts a TCP connection
  local hostport=${1#http://}; hostport=${hostport%%/*}
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2; return 1
}
start_lexora_bin() { # name cpu args... -> sets URL, PID
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$BIN/lexora" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  PID=$!; pids+=("$PID")
  for _ in $(seq 200); do grep -q http "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  URL=$(awk '{print $NF}' "$work/$name.out")
  [ -n "$URL" ] || { echo "$name did not start:" >&2; cat "$work/$name.err" >&2; exit 1; }
}
cpu_ticks() { # pids... -> utime+stime (clock ticks), summed
  local total=0 p t
  for p in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
    total=$((total + t))
  done
  echo "$total"
}
rss_kb() { # pids... -> VmRSS summed (kB)
  local total=0 p v
  for p in "$@"; do v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status"); total=$((total + v)); done
  echo "$total"
}

# --- upstreams (CPU 1) -------------------------------------------------------
start_lexora_bin engine "$CPU_LOAD" mock --port 0 --model m --chunks 16
ENGINE=$URL ENGINE_PID=$PID
start_lexora_bin stream-engine "$CPU_LOAD" mock --port 0 --model s --chunks "$STREAM_TOKENS" --tokens-per-second "$TOKEN_RATE"
STREAM_ENGINE=$URL STREAM_ENGINE_PID=$PID
log "mock engine $ENGINE, streaming mock $STREAM_ENGINE ($TOKEN_RATE tokens/s, $STREAM_TOKENS chunks)"

# --- targets (CPU 0) ---------------------------------------------------------
# Each target: NAME -> URL_M (16-token answers), URL_S (streams), PIDS (measured).
declare -A URL_M URL_S PIDS
TARGETS=()
add_target() { TARGETS+=("$1"); URL_M[$1]=$2; URL_S[$1]=$3; PIDS[$1]=$4; }

add_target direct "$ENGINE" "$STREAM_ENGINE" "$ENGINE_PID"

if [ "$SMOKE" = 0 ]; then
  mkdir -p "$work/nginx"
  NGINX_M=$(free_port) NGINX_S=$(free_port)
  cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  upstream engine { server ${ENGINE#http://}; keepalive 256; keepalive_requests 1000000; }
  upstream stream { server ${STREAM_ENGINE#http://}; keepalive 256; keepalive_requests 1000000; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_buffering off;
  tcp_nodelay on;
  server { listen 127.0.0.1:$NGINX_M; location / { proxy_pass http://engine; } }
  server { listen 127.0.0.1:$NGINX_S; location / { proxy_pass http://stream; } }
}
NGINX
  taskset -c "$CPU_TARGET" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
    >"$work/nginx.out" 2>&1 &
  PID=$!; pids+=("$PID")
  wait_http "http://127.0.0.1:$NGINX_M"
  add_target nginx "http://127.0.0.1:$NGINX_M" "http://127.0.0.1:$NGINX_S" "$PID"
fi

backends_yaml() { # extra keys for the backends (e.g. max_concurrency)
  cat <<YAML
backends:
  engine: {url: "$ENGINE", $1 models: [{name: m}]}
  stream: {url: "$STREAM_ENGINE", $1 models: [{name: s}]}
YAML
}
if [ "$SMOKE" = 0 ]; then
  # Policies off: the default rate limit, retries and breaker disabled.
  { cat <<YAML
logging: {level: warn}
rate_limit: {enabled: false}
retry: {max_retries: 0}
circuit_breaker: {enabled: false}
YAML
    backends_yaml ""; } >"$work/off.yaml"
  start_lexora_bin lexora-off "$CPU_TARGET" serve --config "$work/off.yaml" --host 127.0.0.1 --port 0
  add_target lexora-off "$URL" "$URL" "$PID"
fi
# Every policy on (API key, per-user limits never refusing, queue, retries,
# breaker, stats, metrics).
{ cat <<YAML
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
YAML
  backends_yaml "max_concurrency: 1024,"; } >"$work/on.yaml"
start_lexora_bin lexora-on "$CPU_TARGET" serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
add_target lexora-on "$URL" "$URL" "$PID"

NOTES=()
if [ "$PEERS" = 1 ]; then
  find_venv() { # module -> python path
    local py
    for py in "$HOME"/.cache/lexora/*/bin/python; do
      [ -x "$py" ] && "$py" -c "import $1" 2>/dev/null && { echo "$py"; return 0; }
    done
    return 1
  }
  if py=$(find_venv sglang_router); then
    start_sglang() { # port upstream -> PID
      taskset -c "$CPU_TARGET" "$py" -m sglang_router.launch_router --host 127.0.0.1 --port "$1" \
        --worker-urls "$2" >"$work/sglang-$1.log" 2>&1 &
      PID=$!; pids+=("$PID")
    }
    port=$(free_port) port_s=$(free_port)
    start_sglang "$port" "$ENGINE"; sg_m=$PID
    start_sglang "$port_s" "$STREAM_ENGINE"; sg_s=$PID
    wait_http "http://127.0.0.1:$port" && wait_http "http://127.0.0.1:$port_s"
    add_target sglang-router "http://127.0.0.1:$port" "http://127.0.0.1:$port_s" "$sg_m"  # RSS/CPU: the non-stream router
  else
    NOTES+=("sglang-router skipped: sglang_router not importable from a venv under ~/.cache/lexora (pip install sglang-router==0.3.2)")
  fi
  if py=$(find_venv litellm); then
    port=$(free_port)
    cat >"$work/litellm.yaml" <<YAML
model_list:
  - {model_name: m, litellm_params: {model: openai/m, api_base: "$ENGINE/v1", api_key: none}}
  - {model_name: s, litellm_params: {model: openai/s, api_base: "$STREAM_ENGINE/v1", api_key: none}}
litellm_settings: {telemetry: false}
YAML
    LITELLM_LOCAL_MODEL_COST_MAP=True taskset -c "$CPU_TARGET" "$(dirname "$py")/litellm" \
      --config "$work/litellm.yaml" --host 127.0.0.1 --port "$port" >"$work/litellm.log" 2>&1 &
    PID=$!; pids+=("$PID")
    wait_http "http://127.0.0.1:$port"
    add_target litellm "http://127.0.0.1:$port" "http://127.0.0.1:$port" "$PID"
  else
    NOTES+=("litellm skipped: litellm not importable from a venv under ~/.cache/lexora (pip install 'litellm[proxy]==1.74.9')")
  fi
fi

# --- measurements ------------------------------------------------------------
sleep 0.5
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2086
  echo "$t $(rss_kb ${PIDS[$t]})" >>"$work/rss_idle"
done

bench() { # target scenario round args... -> raw/<target>.<scenario>.<round>.json
  local t=$1 s=$2 r=$3; shift 3
  local out="$work/raw/$t.$s.$r.json" before after
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PIDS[$t]})
  if ! taskset -c "$CPU_LOAD" "$BIN/lexora-bench" --label "$t" --warmup "$WARMUP" --duration "$DURATION" \
      -H "Authorization: Bearer $KEY" "$@" >"$out.tmp" 2>"$work/raw/$t.$s.$r.err"; then
    echo '{"failed": true}' >"$out.tmp"
  fi
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PIDS[$t]})
  python3 - "$out.tmp" "$out" "$((after - before))" <<'PY'
import json, sys
data = json.load(open(sys.argv[1])); data["cpu_ticks"] = int(sys.argv[3])
json.dump(data, open(sys.argv[2], "w"))
PY
}
wrk_run() { # target round -> raw/<target>.c64.<round>.json (wrk, 64 connections)
  local t=$1 r=$2 before after
  cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16}'
LUA
  taskset -c "$CPU_LOAD" wrk -t1 -c64 -d1s -s "$work/post.lua" "${URL_M[$t]}/v1/chat/completions" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PIDS[$t]})
  taskset -c "$CPU_LOAD" wrk -t1 -c64 -d"${DURATION}s" --latency -s "$work/post.lua" \
    "${URL_M[$t]}/v1/chat/completions" >"$work/raw/$t.c64.$r.txt" 2>&1 || true
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PIDS[$t]})
  python3 - "$work/raw/$t.c64.$r.txt" "$work/raw/$t.c64.$r.json" "$((after - before))" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else None
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
req = re.search(r"(\d+) requests in", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
pct = {k: us(v) for k, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.M)}
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
json.dump({"achieved_rps": float(rps.group(1)) if rps else 0.0,
           "requests": int(req.group(1)) if req else 0, "errors": errors,
           "latency_us": {"p50": pct.get("50"), "p99": pct.get("99")},
           "cpu_ticks": int(sys.argv[3])}, open(sys.argv[2], "w"))
PY
}

n=${#TARGETS[@]}
for r in $(seq "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    # Rotate the order each round so no target always runs first.
    t=${TARGETS[$(((i + r - 1) % n))]}
    log "round $r/$ROUNDS: $t"
    bench "$t" c1 "$r" --url "${URL_M[$t]}/v1/chat/completions" --connections 1
    for rate in $RATES; do
      bench "$t" "rate$rate" "$r" --url "${URL_M[$t]}/v1/chat/completions" --rate "$rate"
    done
    bench "$t" stream "$r" --url "${URL_S[$t]}/v1/chat/completions" --model s --stream \
      --max-tokens "$STREAM_TOKENS" --rate "$STREAM_RATE"
    if [ "$SMOKE" = 1 ]; then
      bench "$t" c64 "$r" --url "${URL_M[$t]}/v1/chat/completions" --connections 64
    else
      wrk_run "$t" "$r"
    fi
    # shellcheck disable=SC2086
    echo "$t $r $(rss_kb ${PIDS[$t]})" >>"$work/rss_rounds"
  done
done

# --- report --------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then OUT="$work/out"; fi
mkdir -p "$OUT"
printf '%s\n' "${NOTES[@]}" >"$work/notes"
python3 "$ROOT/bench/report.py" "$work" "$OUT" \
  "$(printf '%s,' "${TARGETS[@]}")" "$RATES" "$ROUNDS" "$DURATION" "$WARMUP" \
  "$STREAM_RATE" "$TOKEN_RATE" "$STREAM_TOKENS" "$(getconf CLK_TCK)" "$SMOKE"
if [ "$SMOKE" = 0 ]; then # keep the raw per-round data next to the results
  rm -rf "$OUT/raw"; cp -r "$work/raw" "$OUT/raw"
  cp "$work/rss_idle" "$work/rss_rounds" "$work/notes" "$OUT/raw/"
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
