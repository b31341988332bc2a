# shellcheck shell=bash disable=SC2154  # variables (work, BIN, ...) come from the caller
# Sourced by scripts/bench.sh --peers (not run): installs the peer gateways on
# first use (scripts/bench-peers-install.sh, venvs under ~/.cache/lexora keyed
# by version) and starts them on CPU 0 in front of the same mock engines,
# each configured the way its documentation suggests for production: no
# per-request logging. Adds them to TARGETS.

log "peer gateways: checking the install (first use: ~2 min from PyPI)"
mapfile -t peer_pythons < <("$ROOT/scripts/bench-peers-install.sh")
[ "${#peer_pythons[@]}" = 2 ] || { echo "installing the peer gateways failed" >&2; exit 1; }
SGLANG_PY=${peer_pythons[0]} LITELLM_PY=${peer_pythons[1]}
version_of() { "$1" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$2"; }

# SGLang's router proxies to worker URLs, not to models, so each upstream
# gets its own router; CPU and RSS are measured on the one serving the
# scenario. round_robin: with one worker, routing needs no cache-aware tree.
# Each needs its own Prometheus port (default 29000 for all).
start_sglang() { # name upstream -> URL, PID
  local port metrics_port
  port=$(free_port) metrics_port=$(free_port)
  taskset -c "$CPU_TARGET" "$SGLANG_PY" -m sglang_router.launch_router --host 127.0.0.1 --port "$port" \
    --worker-urls "$2" --policy round_robin --log-level warn --prometheus-host 127.0.0.1 \
    --prometheus-port "$metrics_port" >"$work/$1.log" 2>&1 &
  PID=$!; pids+=("$PID"); URL="http://127.0.0.1:$port"
  wait_http "$URL" 1200 || { cat "$work/$1.log" >&2; exit 1; }
}
start_sglang sglang-m "$ENGINE"; sg_m=$URL sg_m_pid=$PID
start_sglang sglang-s "$STREAM_ENGINE"; sg_s=$URL sg_s_pid=$PID
start_sglang sglang-l "$LONG_ENGINE"; sg_l=$URL sg_l_pid=$PID
add_target sglang-router "$sg_m" "$sg_s" "$sg_l" "$sg_m_pid" "$sg_s_pid" "$sg_l_pid"
NOTES+=("sglang-router: sglang-router $(version_of "$SGLANG_PY" sglang-router), one router per upstream (--policy round_robin --log-level warn); CPU and RSS are the router serving the scenario's.")

# LiteLLM: one proxy for the three models; no cost-map download (there is no
# network), access log and LiteLLM's own logging at warnings only.
port=$(free_port)
cat >"$work/litellm.yaml" <<YAML
model_list:
  - {model_name: m, litellm_params: {model: openai/m, api_base: "$ENGINE/v1", api_key: none}}
  - {model_name: s, litellm_params: {model: openai/s, api_base: "$STREAM_ENGINE/v1", api_key: none}}
  - {model_name: l, litellm_params: {model: openai/l, api_base: "$LONG_ENGINE/v1", api_key: none}}
litellm_settings: {telemetry: false}
YAML
cat >"$work/litellm-log.json" <<'JSON'
{"version": 1, "disable_existing_loggers": false,
 "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
 "root": {"level": "WARNING", "handlers": ["stderr"]},
 "loggers": {"uvicorn.access": {"level": "WARNING"}, "uvicorn.error": {"level": "WARNING"}}}
JSON
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR taskset -c "$CPU_TARGET" \
  "$(dirname "$LITELLM_PY")/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$port" \
  --log_config "$work/litellm-log.json" >"$work/litellm.log" 2>&1 &
PID=$!; pids+=("$PID")
wait_http "http://127.0.0.1:$port" 1200 || { cat "$work/litellm.log" >&2; exit 1; }
add_target litellm "http://127.0.0.1:$port" "http://127.0.0.1:$port" "http://127.0.0.1:$port" \
  "$PID" "$PID" "$PID" 1
NOTES+=("litellm: litellm[proxy] $(version_of "$LITELLM_PY" litellm), one uvicorn worker, logging at warnings; a slow target (see the settings above).")
