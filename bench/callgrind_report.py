#!/usr/bin/env python3
"""Turns the run pairs of scripts/bench-callgrind.sh into callgrind.json and
callgrind.md: instructions per request = (I(n) - I(base)) / (n - base) for
each target and scenario, as a multiple of the mock engine's own (a minimal
server answering the same requests), the code lines the n run executed
(bench/code_lines.py), and the change of both from the previous
callgrind.json in the output folder (the regression signal). Called by the
script; not standalone."""

import datetime
import json
import os
import sys

results_tsv, out, valgrind, revision, stream_tokens, token_rate = sys.argv[1:7]

rows = []
with open(results_tsv) as f:
    for line in f:
        target, scenario, base, small, n, large, lines = line.split()
        base, small, n, large = int(base), int(small), int(n), int(large)
        rows.append({
            "target": target, "scenario": scenario,
            "base_requests": base, "base_instructions": small,
            "requests": n, "instructions": large,
            "per_request": (large - small) / (n - base),
            "code_lines": int(lines),
        })

per = {(r["target"], r["scenario"]): r["per_request"] for r in rows}
previous = {}
previous_path = os.path.join(out, "callgrind.json")
if os.path.exists(previous_path):
    with open(previous_path) as f:
        old = json.load(f)
    previous = {(r["target"], r["scenario"]): r for r in old.get("runs", [])}
    previous_label = f"{old.get('revision', '?')}, {old.get('date', '?')}"
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
with open(os.path.join(out, "callgrind.json"), "w") as f:
    json.dump({"date": date, "valgrind": valgrind, "revision": revision, "runs": rows}, f, indent=2)

md = [
    "# Instructions per request (callgrind)\n",
    f"{date}; {valgrind}; revision {revision}. Written by `scripts/bench-callgrind.sh`.",
    "Each target runs under `valgrind --tool=callgrind` pinned to one CPU (so a single-threaded runtime),",
    "instrumented only after start-up and 20 warm-up requests; lexora-bench, not under valgrind,",
    "then sends requests one at a time over one keep-alive connection; engines run natively.",
    "instructions/request = (I(n) − I(n/10)) / (n − n/10), so shutdown and per-connection",
    "costs cancel out. Counts repeat to well under 1 % between runs whatever the machine's",
    "load: compare them across commits to catch regressions.",
    "Code lines: distinct 64-byte lines of machine code the n run executed (its requests are",
    "all alike, so about what one request touches): what a request fetches again on a core",
    "whose caches other work has just refilled.",
    f"Streams: {stream_tokens} chunks paced at {float(token_rate):g} tokens/s.\n",
    "| target | scenario | requests (n/10 → n) | instructions (n/10 run) | instructions (n run) "
    "| instructions/request | × the mock's | previous run | change | code lines | previous | change |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def change(now, before):
    return "–" if not before else f"{(now / before - 1) * 100:+.2f} %"


for r in rows:
    key = (r["target"], r["scenario"])
    floor, old_row = per.get(("mock", r["scenario"])), previous.get(key, {})
    before, lines_before = old_row.get("per_request"), old_row.get("code_lines")
    ratio = "–" if r["target"] == "mock" or not floor else f"{r['per_request'] / floor:.2f}"
    md.append(f"| {r['target']} | {r['scenario']} | {r['base_requests']:,} → {r['requests']:,} | "
              f"{r['base_instructions']:,} | {r['instructions']:,} | {r['per_request']:,.0f} | {ratio} | "
              f"{'–' if not before else f'{before:,.0f}'} | {change(r['per_request'], before)} | "
              f"{r['code_lines']:,} | {'–' if not lines_before else f'{lines_before:,}'} | "
              f"{change(r['code_lines'], lines_before)} |")
if previous:
    md.append(f"\nPrevious run: {previous_label} (the callgrind.json this run replaced).")
with open(os.path.join(out, "callgrind.md"), "w") as f:
    f.write("\n".join(md) + "\n")
