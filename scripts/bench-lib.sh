# shellcheck shell=bash disable=SC2154  # ROOT, KEY, CPU_* ... come from the caller
# Shared by scripts/bench.sh and scripts/bench-callgrind.sh (sourced, not run):
# the Lexora configurations under test and small process helpers, so that
# every harness measures the same "policies off" and "policies on" gateway.
#
# Callers set ROOT and KEY (the API key), and call bench_setup for BIN, work
# and pids.

# Builds the release binaries (BIN) and makes the scratch dir (work); every
# PID added to `pids` is stopped and reaped on exit, however the script ends.
bench_setup() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  cargo build --release -p lexora -p lexora-bench >&2
  BIN="$CARGO_TARGET_DIR/release"
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  set_halt_poll
}

# GUEST_HALT_POLL_NS: on a KVM guest whose idle driver is haltpoll, how long
# (ns) an idle vCPU polls for work before it halts: the kernel's own busy
# polling, for every process alike. A halted vCPU takes tens of µs to wake,
# and each hand-off between the cores of a run pays it. Set for the run
# (needs root) and put back on exit; unset, the machine is measured as it is.
HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
set_halt_poll() {
  [ -n "${GUEST_HALT_POLL_NS:-}" ] || return 0
  [ -w "$HALT_POLL" ] || { echo "GUEST_HALT_POLL_NS: $HALT_POLL is not writable here (a KVM guest with the haltpoll idle driver, as root)" >&2; exit 1; }
  HALT_POLL_BEFORE=$(cat "$HALT_POLL")
  echo "$GUEST_HALT_POLL_NS" >"$HALT_POLL"
  log "guest halt polling: $GUEST_HALT_POLL_NS ns for this run (was $HALT_POLL_BEFORE)"
}

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  if [ -n "${HALT_POLL_BEFORE:-}" ]; then echo "$HALT_POLL_BEFORE" >"$HALT_POLL" || true; fi
}

log() { echo "[${LOG_TAG:-bench} $(date +%T)] $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url [tries of 0.05 s]: until it accepts a TCP connection
  local hostport=${1#http://} tries=${2:-200}
  hostport=${hostport%%/*}
  for _ in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2; return 1
}

# Starts a lexora binary (serve or mock) and waits for its "listening on URL"
# line; sets URL and PID. A prefix command (taskset, valgrind) goes in
# LAUNCH (an array), so the PID is the launched process's own.
start_lexora_bin() { # name tries args...
  local name=$1 tries=$2; shift 2
  "${LAUNCH[@]}" "$BIN/lexora" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  PID=$!; pids+=("$PID")
  for _ in $(seq "$tries"); do grep -q http "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  URL=$(awk '{print $NF}' "$work/$name.out")
  [ -n "$URL" ] || { echo "$name did not start:" >&2; cat "$work/$name.err" >&2; exit 1; }
}

# lexora-relay in front of each upstream URL given (bytes relayed on tokio's
# event loop, no HTTP read: the floor of a proxy), on the CPUs in LAUNCH.
# Sets RELAY_URL (one per upstream, in the order given) and PID.
start_relay() { # upstream-url...
  local args=() u
  for u in "$@"; do args+=(--to "$u"); done
  "${LAUNCH[@]}" "$BIN/lexora-relay" "${args[@]}" >"$work/relay.out" 2>"$work/relay.err" &
  PID=$!; pids+=("$PID")
  for _ in $(seq 200); do [ "$(grep -c http "$work/relay.out" 2>/dev/null)" = "$#" ] && break; sleep 0.05; done
  mapfile -t RELAY_URL < <(awk '{print $3}' "$work/relay.out")
  [ "${#RELAY_URL[@]}" = "$#" ] || { echo "lexora-relay did not start:" >&2; cat "$work/relay.err" >&2; exit 1; }
}

# nginx as the reference reverse proxy: one worker (on the CPUs in LAUNCH),
# keep-alive to every upstream, no buffering, one listener per NAME=URL
# pair given. Sets NGINX_URL[NAME] and PID.
declare -A NGINX_URL
start_nginx() { # name=upstream-url...
  local dir="$work/nginx" pair name port upstreams="" servers=""
  mkdir -p "$dir"
  for pair in "$@"; do
    name=${pair%%=*} port=$(free_port)
    upstreams+="  upstream $name { server ${pair#*=http://}; keepalive 256; keepalive_requests 1000000; }"$'\n'
    # The same listen backlog as Lexora's (nginx's default is 511), so a
    # burst of connections finds both with room to queue.
    servers+="  server { listen 127.0.0.1:$port backlog=4096; location / { proxy_pass http://$name; } }"$'\n'
    NGINX_URL[$name]="http://127.0.0.1:$port"
  done
  cat >"$dir/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
$upstreams
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_buffering off;
  proxy_read_timeout 120s;
  tcp_nodelay on;
$servers
}
NGINX
  "${LAUNCH[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$work/nginx.out" 2>&1 &
  PID=$!; pids+=("$PID")
  wait_http "${NGINX_URL[$name]}"
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

# The backends every Lexora target proxies to: model m (16-token answers),
# s (paced 64-chunk streams) and, when given, l (long streams).
backends_yaml() { # extra-keys engine-url stream-url [long-url]
  echo "backends:"
  echo "  engine: {url: \"$2\", $1 models: [{name: m}]}"
  echo "  stream: {url: \"$3\", $1 models: [{name: s}]}"
  if [ -n "${4:-}" ]; then echo "  long: {url: \"$4\", $1 models: [{name: l}]}"; fi
}

lexora_config() { # off|on|busy engine-url stream-url [long-url]
  local mode=$1; shift
  case $mode in
    off) # Policies off: the default rate limit, retries and breaker disabled.
      cat <<YAML
logging: {level: warn}
rate_limit: {enabled: false}
retry: {max_retries: 0}
circuit_breaker: {enabled: false}
YAML
      backends_yaml "" "$@" ;;
    on|busy) # Every policy on (API key, per-user limits never refusing,
        # queue, retries, breaker, stats, metrics). The queue and
        # concurrency limit leave room for 1,000 concurrent streams. busy:
        # the same with busy polling (server.busy_poll_us).
      if [ "$mode" = busy ]; then echo "server: {busy_poll_us: 200}"; fi
      cat <<YAML
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
      backends_yaml "max_concurrency: 1024," "$@" ;;
    *) echo "lexora_config: unknown mode $mode" >&2; return 1 ;;
  esac
}

# The mock engines of the stage timings and the PGO training, on CPU 1:
# plain 16-chunk answers (model m) and 64-chunk streams at 1,000 tokens/s
# (model s). Sets ENGINE and STREAM_ENGINE, and writes every policy on in
# front of them to $work/on.yaml.
start_mock_engines() {
  LAUNCH=(taskset -c 1)
  start_lexora_bin engine 200 mock --port 0 --model m --chunks 16
  ENGINE=$URL
  start_lexora_bin stream-engine 200 mock --port 0 --model s --chunks 64 --tokens-per-second 1000
  STREAM_ENGINE=$URL
  lexora_config on "$ENGINE" "$STREAM_ENGINE" >"$work/on.yaml"
}

# wrk's request: a 16-token chat completion with the bench API key.
wrk_post_lua() {
  cat <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":16}'
LUA
}

# Sends one chat completion (streamed or not) and checks it is answered 200
# with generated text; logs the start of the answer. Every target is checked
# before it is measured, so a misconfigured one fails loudly instead of
# producing a table of fast errors. Retries for a while: some targets accept
# connections before they can route.
check_answer() { # name url model stream(0|1) max-tokens
  python3 - "$@" <<'PY'
import json, sys, time, urllib.request
name, url, model, stream, max_tokens = sys.argv[1:6]
stream = stream == "1"
body = {"model": model, "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": int(max_tokens)}
if stream:
    body["stream"] = True
request = urllib.request.Request(
    url + "/v1/chat/completions", data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench-000000001"})
error = None
for _ in range(60):
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        break
    except Exception as e:  # not up yet, or answering errors: retry, then report
        error = e
        time.sleep(0.5)
else:
    sys.exit(f"{name}: no answer from {url} for model {model}: {error}")
if stream:
    events = [json.loads(l[5:]) for l in text.splitlines() if l.startswith("data:") and "[DONE]" not in l]
    content = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices", []))
    summary = f"{len(events)} events, text {content[:40]!r}"
else:
    content = json.loads(text)["choices"][0]["message"]["content"]
    summary = f"text {content[:40]!r}"
if not content:
    sys.exit(f"{name}: answered without text: {text[:200]}")
print(f"[check] {name} ({model}{', stream' if stream else ''}): 200, {summary}", file=sys.stderr)
PY
}
