#!/usr/bin/env bash
# Runs every Lexora test: Rust unit and integration tests (the real binary
# against the built-in mock engine; the engine manager against a real
# llama-server), end-to-end tests with the official `openai` and `anthropic`
# Python SDKs and a real llama-server built from source (once; cached under
# ~/.cache/lexora, keyed by version), and a short benchmark smoke run.
#
# Needs only the Rust toolchain, Python 3 and a C/C++ compiler; everything
# else is installed on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${LEXORA_CACHE:-$HOME/.cache/lexora}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
started=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - started))" "$*"; }

step "llama-server for the end-to-end tests (first run builds it: ~6 min)"
LLAMA_SERVER="$(scripts/llama-server.sh)"
echo "using $LLAMA_SERVER"

step "Python environment for the end-to-end tests"
req_hash=$(sha256sum tests/e2e/requirements.txt | cut -c1-12)
VENV="$CACHE/venv-e2e-$req_hash"
if [ ! -f "$VENV/.complete" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
  touch "$VENV/.complete"
fi
echo "using $VENV"

step "cargo build (debug)"
cargo build --locked --bins

step "cargo test: unit and integration tests (engine tests use the real llama-server)"
LLAMA_SERVER="$LLAMA_SERVER" LEXORA_PYTHON="$VENV/bin/python" cargo test --locked --workspace

step "the stage probe (lexora-core's stage-probe feature, for scripts/bench-stages.sh)"
cargo test --locked -p lexora-core --features stage-probe --lib probe::tests

step "end-to-end tests: openai SDK, real llama-server"
LEXORA_BIN="$TARGET_DIR/debug/lexora" LLAMA_SERVER="$LLAMA_SERVER" \
  "$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider

step "benchmark smoke run (one tiny round; the full run is scripts/bench.sh)"
./scripts/bench.sh --smoke

step "all tests passed"
