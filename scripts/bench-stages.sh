#!/usr/bin/env bash
# The gateway's own time on a request's way in and back, stage by stage,
# timed inside the process (the `stage-probe` feature, src/probe.rs), at
# several spacings between requests: back to back, 1 ms apart, 50 ms apart,
# and streams one at a time and at 100/s. Issue 6's stream target is lost
# on this path; the outside benchmark moves by more between runs than most
# changes to it are worth, these figures by about a tenth (a quarter at 100
# streams/s).
#
#   scripts/bench-stages.sh            (~2 min with one round, after the probe build)
#
# Environment: ROUNDS (1; the median of the rounds' medians is printed),
# BASELINE (another lexora binary built with `--features stage-probe`,
# measured in the same rounds: an A/B of two builds), CARGO_TARGET_DIR.
# The probe build goes to $CARGO_TARGET_DIR/stage-probe, apart from the
# ordinary release build. Pinning as in scripts/bench.sh: the gateway
# (every policy on) on CPU 0, the load generator and the mock engines on
# CPU 1. Needs taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
ROUNDS="${ROUNDS:-1}"
KEY="sk-bench-000000001"
LOG_TAG=stages
bench_setup # the mock engines and lexora-bench come from the ordinary build
log "building lexora with the stage probe"
cargo build --release -p lexora --features stage-probe \
  --target-dir "$CARGO_TARGET_DIR/stage-probe" >&2
declare -A BUILD=([lexora]="$CARGO_TARGET_DIR/stage-probe/release/lexora")
TARGETS=(lexora)
if [ -n "${BASELINE:-}" ]; then BUILD[baseline]=$BASELINE; TARGETS+=(baseline); fi

start_mock_engines

# name: seconds and lexora-bench arguments.
SCENARIOS=(c1 r1000 r20 s1 s100)
declare -A LOAD=(
  [c1]="3 --connections 1"
  [r1000]="3 --rate 1000"
  [r20]="10 --rate 20"
  [s1]="16 --model s --stream --max-tokens 64 --connections 1"
  [s100]="4 --model s --stream --max-tokens 64 --rate 100"
)
for r in $(seq "$ROUNDS"); do
  for s in "${SCENARIOS[@]}"; do
    for t in "${TARGETS[@]}"; do
      log "round $r/$ROUNDS: $s, $t"
      # A fresh gateway for each: its probe lines are this scenario's only.
      BIN_SAVED=$BIN BIN=$work/$t
      mkdir -p "$BIN" && cp "${BUILD[$t]}" "$BIN/lexora"
      LAUNCH=(taskset -c 0)
      start_lexora_bin "$t.$s.$r" 200 serve --config "$work/on.yaml" --host 127.0.0.1 --port 0
      BIN=$BIN_SAVED
      read -r seconds args <<<"${LOAD[$s]}"
      # shellcheck disable=SC2086  # args is a list of arguments
      taskset -c 1 "$BIN/lexora-bench" --warmup 1 --duration "$seconds" \
        -H "Authorization: Bearer $KEY" --url "$URL/v1/chat/completions" $args >"$work/$t.$s.$r.json"
      kill "$PID"; wait "$PID" 2>/dev/null || true
    done
  done
done

python3 - "$work" "$ROUNDS" "${TARGETS[*]}" "${SCENARIOS[*]}" <<'PY'
import datetime, json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
targets, scenarios = sys.argv[3].split(), sys.argv[4].split()
stages = ["request built", "dispatched", "key checked, body read", "body parsed", "routed",
          "rate limits", "queue, breaker", "engine connection", "written to the engine",
          "(the engine, and the wake-ups)", "answer ready", "first write to the client"]
def p50s(target, scenario, r):
    """The medians of each probe line (BATCH requests) of one gateway run."""
    lines = []
    with open(f"{work}/{target}.{scenario}.{r}.err") as f:
        for line in f:
            if line.startswith("stage-probe "):
                lines.append(json.loads(line.split(" ", 1)[1])["p50_ns"])
    if not lines:
        sys.exit(f"{target}/{scenario}: no stage-probe lines (too few requests, or not a probe build)")
    return [statistics.median(l[i] for l in lines if l[i] is not None) for i in range(len(stages))]
def table(target):
    per = {s: [p50s(target, s, r) for r in range(1, rounds + 1)] for s in scenarios}
    med = {s: [statistics.median(run[i] for run in per[s]) for i in range(len(stages))] for s in scenarios}
    print(f"\n{target}: the gateway's time per stage, µs (medians)\n")
    print("| stage | " + " | ".join(scenarios) + " |")
    print("|---|" + "---|" * len(scenarios))
    for i, name in enumerate(stages):
        print(f"| {name} | " + " | ".join(f"{med[s][i] / 1000:.1f}" for s in scenarios) + " |")
    for name, part in (("way in (to the engine)", range(0, 9)), ("way back (to the client)", range(10, 12))):
        print(f"| **{name}** | " + " | ".join(f"**{sum(med[s][i] for i in part) / 1000:.1f}**"
                                             for s in scenarios) + " |")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"{now}; {rounds} round(s); every policy on; c1: plain answers back to back; r1000, r20: plain "
      "answers at 1,000 and 20 per second; s1: 64-chunk streams one at a time; s100: 100 streams/s")
for t in targets:
    table(t)
PY
