#!/usr/bin/env bash
# Installs the peer gateways that `scripts/bench.sh --peers` measures, each in
# its own venv under ~/.cache/lexora keyed by its version (a version bump gets
# a fresh venv; an interrupted install is redone because `.complete` is only
# written at the end). Prints the python of each venv, one per line, on stdout;
# progress goes to stderr.
#
#   scripts/bench-peers-install.sh      both peers
#
# Environment: LITELLM_VERSION (1.74.9), SGLANG_ROUTER_VERSION (0.3.2),
# LEXORA_CACHE (~/.cache/lexora). Needs python3 with venv and PyPI access.
set -euo pipefail

CACHE="${LEXORA_CACHE:-$HOME/.cache/lexora}"
LITELLM_VERSION="${LITELLM_VERSION:-1.74.9}"
SGLANG_ROUTER_VERSION="${SGLANG_ROUTER_VERSION:-0.3.2}"

log() { echo "[peers $(date +%T)] $*" >&2; }

install() { # venv-name requirement import-check
  local venv="$CACHE/$1" requirement=$2 check=$3 started=$SECONDS
  if [ -f "$venv/.complete" ]; then
    log "$requirement: cached in $venv"
  else
    log "$requirement: installing into $venv (LiteLLM takes ~1-2 min)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # Progress on stderr: pip's own per-package lines, without the noise.
    "$venv/bin/pip" install --disable-pip-version-check --progress-bar off "$requirement" 2>&1 \
      | grep -E '^(Collecting|Successfully)' | sed 's/^/  /' >&2 || true
    # pip's status is hidden by the pipe; importing is the real check (LiteLLM
    # would otherwise try to download its model cost map at import).
    LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/python" -c "$check" \
      || { log "$requirement: install failed"; exit 1; }
    touch "$venv/.complete"
    log "$requirement: installed in $((SECONDS - started)) s"
  fi
  echo "$venv/bin/python"
}

mkdir -p "$CACHE"
install "venv-sglang-router-$SGLANG_ROUTER_VERSION" "sglang-router==$SGLANG_ROUTER_VERSION" \
  "import sglang_router"
install "venv-litellm-$LITELLM_VERSION" "litellm[proxy]==$LITELLM_VERSION" \
  "import litellm.proxy.proxy_server"
