#!/usr/bin/env python3
"""Turns the samples of `scripts/bench.sh --soak` into soak.json and soak.md:
Lexora's RSS after each chunk of requests, the throughput and CPU per request
of each chunk, errors, and the growth of RSS once warmed up. Called by the
script; not standalone."""

import datetime
import glob
import json
import os
import sys

work, out, connections, stream_tokens, clk_tck = sys.argv[1:6]
clk_tck = int(clk_tck)

samples = []
with open(os.path.join(work, "soak.samples")) as f:
    for line in f:
        chunk, requests, streams, seconds, rss_kb, ticks = map(int, line.split())
        samples.append({"chunk": chunk, "requests": requests, "streams": streams,
                        "seconds": seconds, "rss_kb": rss_kb, "cpu_ticks": ticks})


def run(name):
    path = os.path.join(work, "raw", f"soak.{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


rows = []
for before, after in zip(samples, samples[1:]):
    plain, stream = run(f"plain.{after['chunk']}"), run(f"stream.{after['chunk']}")
    served = (after["requests"] - before["requests"]) + (after["streams"] - before["streams"])
    ticks = after["cpu_ticks"] - before["cpu_ticks"]
    rows.append({
        **after,
        "plain_rps": plain and plain["achieved_rps"],
        "plain_p99_us": plain and plain["latency_us"]["p99"],
        "stream_rps": stream and stream["achieved_rps"],
        "errors": sum(r["errors"] for r in (plain, stream) if r),
        "cpu_us_per_request": ticks * 1e6 / clk_tck / served if served else None,
    })

errors_by_kind = {}
for path in glob.glob(os.path.join(work, "raw", "soak.*.json")):
    with open(path) as f:
        for kind, count in json.load(f)["errors_by_kind"].items():
            errors_by_kind[kind] = errors_by_kind.get(kind, 0) + count

# Growth is judged from the second sample on: the first chunk fills the
# allocator's pools, connection buffers and the metrics registry once.
warm = rows[1] if len(rows) > 1 else rows[0]
last = rows[-1]
growth_kb = last["rss_kb"] - warm["rss_kb"]
# A leak grows with every request; an allocator keeping a larger pool steps
# once and stays flat. The second half tells the two apart.
half = rows[len(rows) // 2 - 1] if len(rows) > 1 else rows[0]
half_growth_kb = last["rss_kb"] - half["rss_kb"]


def served(row):
    return row["requests"] + row["streams"]


# RSS rises and falls between chunks (the allocator's pools fill and are
# returned), so two single samples can differ by megabytes either way. The
# trend over every warmed-up chunk is what a leak moves: a least-squares
# slope of RSS against requests served, and the largest RSS of each half.
warmed = rows[1:] if len(rows) > 2 else rows
xs = [served(r) for r in warmed]
ys = [r["rss_kb"] for r in warmed]
mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
spread = sum((x - mean_x) ** 2 for x in xs)
slope_kb = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
middle = len(warmed) // 2
summary = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "requests": last["requests"], "streams": last["streams"], "seconds": last["seconds"],
    "connections": int(connections), "stream_tokens": int(stream_tokens),
    "errors": sum(r["errors"] for r in rows), "errors_by_kind": errors_by_kind,
    "rss_idle_kb": samples[0]["rss_kb"], "rss_warm_kb": warm["rss_kb"], "rss_last_kb": last["rss_kb"],
    "rss_max_kb": max(r["rss_kb"] for r in rows),
    "growth_after_warmup_kb": growth_kb,
    "growth_second_half_kb": half_growth_kb,
    "requests_second_half": last["requests"] - half["requests"] + last["streams"] - half["streams"],
    "requests_after_warmup": last["requests"] - warm["requests"] + last["streams"] - warm["streams"],
    "trend_kb_per_100k": slope_kb * 100_000,
    "rss_max_first_half_kb": max(ys[:middle] or ys),
    "rss_max_second_half_kb": max(ys[middle:]),
}
with open(os.path.join(out, "soak.json"), "w") as f:
    json.dump({"summary": summary, "chunks": rows}, f, indent=2)


def mb(kb):
    return f"{kb / 1024:.1f}"


md = [
    "# Soak: Lexora, every policy on\n",
    f"{summary['date']}. Written by `scripts/bench.sh --soak`: {summary['requests']:,} non-streamed "
    f"requests and {summary['streams']:,} streams ({stream_tokens} chunks each, unpaced) from "
    f"lexora-bench with {connections} connections, in {len(rows)} chunks; Lexora on CPU 0, the load "
    f"generator and the mock engines on CPU 1. {summary['seconds']} s in all.\n",
    f"- Errors: {summary['errors']}" + (f" ({json.dumps(errors_by_kind)})" if errors_by_kind else ""),
    f"- RSS: {mb(summary['rss_idle_kb'])} MB idle, {mb(summary['rss_warm_kb'])} MB after chunk "
    f"{warm['chunk']}, {mb(summary['rss_last_kb'])} MB at the end (largest {mb(summary['rss_max_kb'])} MB): "
    f"{growth_kb / 1024:+.1f} MB over the last {summary['requests_after_warmup']:,} requests and streams, "
    f"{half_growth_kb / 1024:+.1f} MB over the last {summary['requests_second_half']:,} (after chunk "
    f"{half['chunk']}).",
    f"- Trend: {summary['trend_kb_per_100k'] / 1024:+.2f} MB per 100,000 requests and streams "
    f"(least squares over chunks {warmed[0]['chunk']}–{last['chunk']}); largest RSS "
    f"{mb(summary['rss_max_first_half_kb'])} MB in the first half of those chunks, "
    f"{mb(summary['rss_max_second_half_kb'])} MB in the second. A leak of 100 bytes a request "
    f"would add 9.5 MB per 100,000.\n",
    "| chunk | requests | streams | RSS MB | req/s | p99 µs | streams/s | CPU µs/request | errors |",
    "|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    md.append(f"| {r['chunk']} | {r['requests']:,} | {r['streams']:,} | {mb(r['rss_kb'])} | "
              f"{r['plain_rps'] or 0:,.0f} | {r['plain_p99_us'] or 0:,} | {r['stream_rps'] or 0:,.0f} | "
              f"{r['cpu_us_per_request'] or 0:.1f} | {r['errors']} |")
with open(os.path.join(out, "soak.md"), "w") as f:
    f.write("\n".join(md) + "\n")
