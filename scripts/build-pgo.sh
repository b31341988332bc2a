#!/usr/bin/env bash
# A profile-guided (PGO) build of the lexora binary, trained on the
# benchmark's own traffic: answers and streams through Lexora with every
# policy on (issue 6).
#
#   scripts/build-pgo.sh     -> $CARGO_TARGET_DIR/pgo/use/release/lexora
#
# Why: on this kind of machine a stream's request runs its ~38,000
# instructions on caches that the kernel's network stack and the other
# streams have just filled, at a fraction of the speed of the same path run
# back to back. PGO lays the hot path out contiguously and moves cold code
# aside, so fewer cache lines carry it.
#
# Steps: an instrumented build (-Cprofile-generate), the training run
# (mock engines, lexora-bench), llvm-profdata merge, the optimised build
# (-Cprofile-use), each in its own target directory under
# $CARGO_TARGET_DIR/pgo, so the ordinary release build is untouched, and a
# check that the optimised binary answers and streams. The end-to-end suite
# runs against it too: LEXORA_BIN=<that binary> python -m pytest tests/e2e
# (with the venv and LLAMA_SERVER that scripts/test.sh sets up).
#
# Needs llvm-profdata of rustc's LLVM major version: LLVM_PROFDATA, else the
# one of rustup's llvm-tools component (rustup component add llvm-tools),
# else llvm-profdata-N on PATH (on Debian: apt-get install -y llvm-N, where N
# is the major of `rustc -vV`'s "LLVM version"). Takes ~10 minutes on 2 cores;
# a second call with the same sources, toolchain and training (this script)
# reuses the binary it built (FORCE=1 rebuilds). FEATURES: cargo features of
# the lexora binary for both builds, e.g. FEATURES=stage-probe to time the
# PGO build with scripts/bench-stages.sh (BASELINE=...); such a build goes to
# $CARGO_TARGET_DIR/pgo-FEATURES instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
LOG_TAG=pgo
KEY="sk-bench-000000001"

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
# rustup's llvm-tools match rustc's LLVM by construction; a distribution's
# llvm-N only when N is the same major.
# LLVM_PROFDATA, when set, is used as given (a wrong one fails below
# rather than being replaced by another silently).
PROFDATA="${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata}"
if [ -z "${LLVM_PROFDATA:-}" ] && [ ! -x "$PROFDATA" ]; then
  PROFDATA=$(command -v "llvm-profdata-$llvm_major" || true)
fi
[ -x "$PROFDATA" ] || {
  echo "needs llvm-profdata for LLVM $llvm_major: rustup component add llvm-tools" \
    "(or apt-get install -y llvm-$llvm_major, or set LLVM_PROFDATA)" >&2
  exit 1
}
log "llvm-profdata: $PROFDATA"

bench_setup # the ordinary build: the mock engines and lexora-bench come from it
FEATURES="${FEATURES:-}"
PGO="$CARGO_TARGET_DIR/pgo${FEATURES:+-$FEATURES}"
# What the binary is built from: every source and manifest, the toolchain,
# and the training below. Equal to the last build's: nothing to do.
built_from=$( (rustc -vV && cd "$ROOT" && find crates Cargo.toml Cargo.lock scripts/build-pgo.sh \
  scripts/bench-lib.sh -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != 1 ] && [ -x "$PGO/use/release/lexora" ] &&
  [ "$(cat "$PGO/built-from" 2>/dev/null)" = "$built_from" ]; then
  log "$PGO/use/release/lexora is up to date (FORCE=1 rebuilds)"
  exit 0
fi
rm -f "$PGO/built-from"
rm -rf "$PGO/profraw"
mkdir -p "$PGO"

log "instrumented build"
RUSTFLAGS="-Cprofile-generate=$PGO/profraw" \
  cargo build --release -p lexora ${FEATURES:+--features "$FEATURES"} --target-dir "$PGO/gen" >&2

log "training run"
start_mock_engines
LAUNCH=(taskset -c 0)
ORDINARY=$BIN BIN="$PGO/gen/release"
start_lexora_bin lexora-gen 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
GEN_PID=$PID
BIN=$ORDINARY
train() { # what, lexora-bench args...
  log "  $1"; shift
  taskset -c 1 "$BIN/lexora-bench" --url "$URL/v1/chat/completions" --warmup 0 \
    -H "Authorization: Bearer $KEY" "$@" >/dev/null
}
train "answers, one connection" --connections 1 --duration 4
train "answers, 64 connections" --connections 64 --duration 4
train "streams, one connection" --model s --stream --max-tokens 64 --connections 1 --duration 4
train "100 streams/s" --model s --stream --max-tokens 64 --rate 100 --duration 4
# A graceful exit writes the profile.
kill -TERM "$GEN_PID"
wait "$GEN_PID" || true
compgen -G "$PGO/profraw/*.profraw" >/dev/null || { echo "the training run wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$PGO/lexora.profdata" "$PGO"/profraw/*.profraw

log "optimised build"
RUSTFLAGS="-Cprofile-use=$PGO/lexora.profdata" \
  cargo build --release -p lexora ${FEATURES:+--features "$FEATURES"} --target-dir "$PGO/use" >&2
log "checking it: an answer and a stream through every policy"
BIN="$PGO/use/release"
start_lexora_bin lexora-pgo 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
check_answer lexora-pgo "$URL" m 0 16
check_answer lexora-pgo "$URL" s 1 16
echo "$built_from" >"$PGO/built-from"
log "built $PGO/use/release/lexora"
