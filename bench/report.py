#!/usr/bin/env python3
"""Turns the raw per-round measurements of scripts/bench.sh into results.json,
results.md and latency.svg (medians over rounds; "added" = a target's median
minus direct's median). Called by scripts/bench.sh as `report.py WORK OUT`;
WORK holds raw/, settings, rss_idle, rss_rounds and notes."""

import datetime
import json
import os
import platform
import statistics
import sys

from plot import latency_svg

work, out = sys.argv[1:3]
with open(os.path.join(work, "settings")) as f:
    settings_raw = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
targets = [t for t in settings_raw["targets"].split(",") if t]
slow_targets = [t for t in settings_raw.get("slow_targets", "").split(",") if t]
rates = [int(r) for r in settings_raw["rates"].split()]
rounds = int(settings_raw["rounds"])
duration, warmup = float(settings_raw["duration"]), float(settings_raw["warmup"])
clk_tck = int(settings_raw["clk_tck"])
smoke = settings_raw["smoke"] == "1"
long_streams = int(settings_raw["long_streams"])


def load(target, scenario):
    runs = []
    for r in range(1, rounds + 1):
        path = os.path.join(work, "raw", f"{target}.{scenario}.{r}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append(json.load(f))
    return runs


def get(run, *keys):
    for key in keys:
        if not isinstance(run, dict) or run.get(key) is None:
            return None
        run = run[key]
    return run


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cpu_us_per_request(run):
    """CPU time of the target over the run divided by its requests. The CPU
    window of a lexora-bench run includes the warm-up, at about the same
    rate: scale the count. (wrk's CPU window is its measured run alone.)"""
    ticks, requests = run.get("cpu_ticks"), run.get("requests")
    if not ticks or not requests:
        return None
    if run.get("window_s"):
        requests = requests * (run.get("warmup_s", 0) + run["window_s"]) / run["window_s"]
    return ticks * 1e6 / clk_tck / requests


def median_curve(runs, hist):
    """Per-percentile median of the rounds' curves ([percentile, µs] pairs)."""
    curves = [get(r, hist, "curve") for r in runs]
    curves = [c for c in curves if c]
    if not curves:
        return None
    return [[p, statistics.median(c[i][1] for c in curves)] for i, (p, _) in enumerate(curves[0])]


def scenario_summary(target, scenario):
    runs = load(target, scenario)
    s = {
        "rounds": len(runs),
        "failed": sum(1 for r in runs if r.get("failed")),
        "requests": sum(r.get("requests", 0) or 0 for r in runs),
        "errors": sum(r.get("errors", 0) or 0 for r in runs),
        "achieved_rps": median([r.get("achieved_rps") for r in runs]),
        "target_rate": median([r.get("target_rate") for r in runs]),
        "window_s": median([r.get("window_s") for r in runs]),
        "cpu_us_per_request": median([cpu_us_per_request(r) for r in runs]),
    }
    for hist in ("latency_us", "ttft_us", "ttft_transit_us", "ttft_there_us", "ttft_back_us", "gap_us",
                 "event_delay_us", "gap_stretch_us"):
        for q in ("p50", "p90", "p99", "p999", "max"):
            value = median([get(r, hist, q) for r in runs])
            if value is not None:
                s[f"{hist[:-3]}_{q}_us"] = value
    curve = median_curve(runs, "latency_us")
    if curve:
        s["latency_curve_us"] = curve
    for key in ("rss_before_kb", "rss_peak_kb"):
        value = median([r.get(key) for r in runs])
        if value is not None:
            s[key] = value
    kinds = {}
    for r in runs:
        for k, v in (r.get("errors_by_kind") or {}).items():
            kinds[k] = kinds.get(k, 0) + v
    if kinds:
        s["errors_by_kind"] = kinds
    return s


def rss(path):
    table = {}
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            table.setdefault(parts[0], []).append(int(parts[-1]))
    return table


scenarios = ["c1"] + [f"rate{r}" for r in rates] + ["c64", "stream", "long"]
results = {t: {s: scenario_summary(t, s) for s in scenarios} for t in targets}
rss_idle, rss_rounds = rss(os.path.join(work, "rss_idle")), rss(os.path.join(work, "rss_rounds"))
for t in targets:
    results[t]["rss_kb"] = {"idle": (rss_idle.get(t) or [None])[0], "after_round": rss_rounds.get(t, [])}


def added(t, scenario, key):
    a, d = results[t][scenario].get(key), results["direct"][scenario].get(key)
    return None if a is None or d is None else a - d


cpu = {}
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu["model"] = line.split(":", 1)[1].strip()
            break
except OSError:
    pass


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


machine = {
    "nproc": os.cpu_count(),
    "cpu_model": cpu.get("model"),
    "mem_total_kb": next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), None),
    "kernel": platform.release(),
    # How idle CPUs wait: on a KVM guest with the haltpoll driver, a vCPU that
    # polls before halting wakes tens of µs sooner (GUEST_HALT_POLL_NS).
    "cpuidle_driver": read_text("/sys/devices/system/cpu/cpuidle/current_driver"),
    "guest_halt_poll_ns": read_text("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}
settings = {
    "rounds": rounds, "duration_s": duration, "warmup_s": warmup, "rates": rates,
    "stream_rate": float(settings_raw["stream_rate"]), "token_rate": float(settings_raw["token_rate"]),
    "stream_tokens": int(settings_raw["stream_tokens"]), "long_streams": long_streams,
    "long_tokens": int(settings_raw["long_tokens"]), "long_token_rate": float(settings_raw["long_token_rate"]),
    "slow_targets": slow_targets, "slow_rate": int(settings_raw["slow_rate"]),
    "slow_duration_s": float(settings_raw["slow_duration"]),
    "slow_stream_rate": float(settings_raw["slow_stream_rate"]), "smoke": smoke,
    "pinning": "target on CPU 0; load generator and mock engines on CPU 1",
}
notes_path = os.path.join(work, "notes")
notes = [l.strip() for l in open(notes_path) if l.strip()] if os.path.exists(notes_path) else []

# --- target checks (issue 6): each Lexora with every policy on, vs nginx ------
# lexora-on is the default build and config; lexora-busy adds busy polling
# (server.busy_poll_us), which trades CPU in quiet spells for latency;
# lexora-pgo (--pgo) is lexora-on built with profile-guided optimisation.
checks = []


def check(lexora, name, value, limit, ok):
    checks.append({"lexora": lexora, "target": name, "value": value, "limit": limit,
                   "holds": None if value is None or limit is None else ok(value, limit)})


def target_checks(name):
    on = results[name]
    if "nginx" in results:
        ng = results["nginx"]
        ng_rps = ng["c64"]["achieved_rps"]
        check(name, "throughput at 64 conns >= 0.8 x nginx", on["c64"]["achieved_rps"], ng_rps and 0.8 * ng_rps,
              lambda v, l: v >= l)
        ng_cpu = ng["c64"]["cpu_us_per_request"]
        on_cpu = on["c64"]["cpu_us_per_request"]
        # When the load side (one core for wrk + engine) caps nginx below its
        # own core's capacity, compare what each could do with a full core.
        check(name, "one-core ceiling (1e6 / CPU us per req) >= 0.8 x nginx's", on_cpu and 1e6 / on_cpu,
              ng_cpu and 0.8e6 / ng_cpu, lambda v, l: v >= l)
        check(name, "CPU per request (64 conns) <= 1.5 x nginx", on_cpu, ng_cpu and 1.5 * ng_cpu, lambda v, l: v <= l)
        ng_p99 = added("nginx", "c1", "latency_p99_us")
        check(name, "added p99 at concurrency 1 <= nginx's + 50 us", added(name, "c1", "latency_p99_us"),
              None if ng_p99 is None else ng_p99 + 50, lambda v, l: v <= l)
    check(name, "added TTFT p50 <= 200 us", added(name, "stream", "ttft_p50_us"), 200, lambda v, l: v <= l)
    check(name, "added TTFT p99 <= 200 us", added(name, "stream", "ttft_p99_us"), 200, lambda v, l: v <= l)
    # The same target read stream by stream: the engine's own time left out.
    for q in ("p50", "p99"):
        check(name, f"added first-token transit {q} <= 200 us", added(name, "stream", f"ttft_transit_{q}_us"),
              200, lambda v, l: v <= l)
    check(name, "added inter-chunk gap p99 <= 50 us", added(name, "stream", "gap_p99_us"), 50, lambda v, l: v <= l)
    # The same target gap by gap: the engine's pacing jitter left out.
    check(name, "added gap stretch p99 <= 50 us", added(name, "stream", "gap_stretch_p99_us"), 50,
          lambda v, l: v <= l)
    idle = on["rss_kb"]["idle"]
    check(name, "RSS idle <= 20 MB", idle and idle / 1024, 20, lambda v, l: v <= l)
    peak = on["long"].get("rss_peak_kb")
    check(name, f"RSS with {long_streams:,} concurrent streams <= 100 MB", peak and peak / 1024, 100,
          lambda v, l: v <= l)
    check(name, f"zero errors with {long_streams:,} concurrent streams", on["long"]["errors"] + on["long"]["failed"],
          0, lambda v, l: v == l)
    errs = sum(on[f"rate{r}"]["errors"] + on[f"rate{r}"]["failed"] for r in rates)
    check(name, f"zero errors at fixed rates {'/'.join(map(str, rates))} req/s", errs, 0, lambda v, l: v == l)


lexoras = [t for t in ("lexora-on", "lexora-busy", "lexora-pgo") if t in results]
for name in lexoras:
    target_checks(name)

with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"machine": machine, "settings": settings, "notes": notes, "targets": results,
               "checks": checks}, f, indent=2)


# --- plot ------------------------------------------------------------------------
def rate_title(r):
    return f"{r:,} req/s (open loop, from the scheduled time)"


panels = [("c1", "concurrency 1 (closed loop)")]
panels += [(f"rate{r}", rate_title(r)) for r in sorted({rates[0], rates[-1]})]
plot_panels = []
for scenario, title in panels:
    series = []
    for t in targets:
        s = results[t][scenario]
        if s.get("latency_curve_us"):
            errors = s["errors"] + s["failed"]
            label = t + (f" ({errors:,} errors of {s['requests']:,})" if errors else "")
            series.append((label, s["latency_curve_us"]))
    plot_panels.append((title, series))
with open(os.path.join(out, "latency.svg"), "w") as f:
    f.write(latency_svg(plot_panels, f"Latency percentiles, medians over {rounds} round(s), {machine['date']}"))


# --- markdown --------------------------------------------------------------------
def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def signed(v):
    return "–" if v is None else f"{v:+,.0f}"


def error_cell(s):
    errors = s["errors"] + s["failed"]
    kinds = s.get("errors_by_kind")
    share = f" ({errors / s['requests']:.0%})" if errors and s["requests"] else ""
    return f"{errors}{share}{' ' + json.dumps(kinds) if kinds else ''}"


def idle_note():
    if not machine["cpuidle_driver"]:
        return ""
    note = f", idle driver {machine['cpuidle_driver']}"
    ns = machine["guest_halt_poll_ns"]
    if ns is not None:
        note += " (no guest halt polling)" if int(ns) == 0 else f" (guest halt polling {int(ns) / 1000:g} µs)"
    return note


md = []
md.append(f"# Lexora benchmark results{' (smoke)' if smoke else ''}\n")
md.append(f"{machine['date']}; {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"{(machine['mem_total_kb'] or 0) / 1048576:.0f} GiB, Linux {machine['kernel']}{idle_note()}. "
          f"{settings['pinning']}. {rounds} round(s), each scenario run on every target in turn before the next, {duration:g} s per measurement "
          f"after {warmup:g} s warm-up; medians over rounds; \"added\" = target median − direct median. "
          "Mock engine: zero delay, 16-token answers. Latency is measured by `lexora-bench` "
          "from the intended send time (open loop: the schedule), so it includes the load "
          "generator's own ~100 µs scheduling/wake-up cost, identical for every target. "
          "Latency percentile curves: [`latency.svg`](latency.svg).\n")
if slow_targets:
    md.append(f"Slow targets ({', '.join(slow_targets)}) are measured with a lighter load so a run "
              f"stays minutes long: at most 256 requests in flight and a 10 s timeout (requests "
              f"beyond either count as errors), fixed rates above {settings['slow_rate']} req/s "
              f"over {settings['slow_duration_s']:g} s after 0.5 s warm-up, and "
              f"{settings['slow_stream_rate']:g} streams/s.\n")
md.append("## Latency at concurrency 1 (closed loop, 1 connection), µs\n")
md.append("| target | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | req/s | errors |")
md.append("|---|---|---|---|---|---|---|---|---|")
for t in targets:
    s = results[t]["c1"]
    md.append(f"| {t} | {fmt(s.get('latency_p50_us'))} | {fmt(s.get('latency_p99_us'))} | "
              f"{fmt(s.get('latency_p999_us'))} | {signed(added(t, 'c1', 'latency_p50_us'))} | "
              f"{signed(added(t, 'c1', 'latency_p99_us'))} | {signed(added(t, 'c1', 'latency_p999_us'))} | "
              f"{fmt(s['achieved_rps'])} | {error_cell(s)} |")
md.append("\n## Fixed rates (open loop), µs\n")
md.append("| target | rate | achieved | p50 | p99 | p99.9 | added p99 | errors (all rounds) |")
md.append("|---|---|---|---|---|---|---|---|")
for rate in rates:
    for t in targets:
        s = results[t][f"rate{rate}"]
        md.append(f"| {t} | {rate} | {fmt(s['achieved_rps'])} | {fmt(s.get('latency_p50_us'))} | "
                  f"{fmt(s.get('latency_p99_us'))} | {fmt(s.get('latency_p999_us'))} | "
                  f"{signed(added(t, f'rate{rate}', 'latency_p99_us'))} | {error_cell(s)} |")
tool = "lexora-bench" if smoke else "wrk -t1"
cpu_rate = 1000 if 1000 in rates else rates[len(rates) // 2]
md.append(f"\n## Maximum throughput, 64 connections ({tool}) and CPU per request\n")
md.append("| target | req/s | × direct | × nginx | p50 µs | p99 µs | CPU µs/req (64 conns) | target core busy | "
          f"CPU µs/req ({cpu_rate}/s) | errors |")
md.append("|---|---|---|---|---|---|---|---|---|---|")
d_rps = results["direct"]["c64"]["achieved_rps"]
n_rps = results.get("nginx", {}).get("c64", {}).get("achieved_rps")
for t in targets:
    s = results[t]["c64"]
    rps = s["achieved_rps"]
    md.append(f"| {t} | {fmt(rps)} | {fmt(rps / d_rps if rps and d_rps else None, 2)} | "
              f"{fmt(rps / n_rps if rps and n_rps else None, 2)} | {fmt(s.get('latency_p50_us'))} | "
              f"{fmt(s.get('latency_p99_us'))} | {fmt(s['cpu_us_per_request'], 1)} | "
              f"{fmt(rps and s['cpu_us_per_request'] and rps * s['cpu_us_per_request'] / 1e4)} % | "
              f"{fmt(results[t][f'rate{cpu_rate}']['cpu_us_per_request'], 1)} | {s['errors'] + s['failed']} |")
md.append(f"\n(direct's CPU is the mock engine's own. CPU from /proc/PID/stat utime+stime, "
          f"{clk_tck} ticks/s. \"target core busy\" = req/s × CPU per request: below ~100 % the "
          "load side — wrk and the engine sharing one core — was the limit, not the target.)\n")
md.append(f"## Streaming: {settings['stream_tokens']}-chunk streams at {settings['token_rate']:g} tokens/s "
          "(open loop), µs\n")
md.append("| target | streams/s | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | gap p50 | gap p99 | "
          "added gap p99 | CPU µs/stream | errors |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|")
for t in targets:
    s = results[t]["stream"]
    md.append(f"| {t} | {fmt(s['target_rate'])} | {fmt(s.get('ttft_p50_us'))} | {fmt(s.get('ttft_p99_us'))} | "
              f"{signed(added(t, 'stream', 'ttft_p50_us'))} | {signed(added(t, 'stream', 'ttft_p99_us'))} | "
              f"{fmt(s.get('gap_p50_us'))} | {fmt(s.get('gap_p99_us'))} | "
              f"{signed(added(t, 'stream', 'gap_p99_us'))} | {fmt(s['cpu_us_per_request'])} | {error_cell(s)} |")
md.append("\n(TTFT from the scheduled send time. A gap p50 near 0 means the target delivered chunks in batches "
          "rather than as they came; CPU per stream is the process serving the streams, over the run.)\n")
md.append("### The same streams, the engine's own time left out, µs\n")
md.append("| target | first-token transit p50 | p99 | added p50 | added p99 | of it there, p50 | back, p50 | "
          "chunk delay p50 | p99 | added p50 | added p99 | gap stretch p99 | added |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for t in targets:
    s = results[t]["stream"]
    md.append(f"| {t} | {fmt(s.get('ttft_transit_p50_us'))} | {fmt(s.get('ttft_transit_p99_us'))} | "
              f"{signed(added(t, 'stream', 'ttft_transit_p50_us'))} | "
              f"{signed(added(t, 'stream', 'ttft_transit_p99_us'))} | "
              f"{signed(added(t, 'stream', 'ttft_there_p50_us'))} | "
              f"{signed(added(t, 'stream', 'ttft_back_p50_us'))} | {fmt(s.get('event_delay_p50_us'))} | "
              f"{fmt(s.get('event_delay_p99_us'))} | {signed(added(t, 'stream', 'event_delay_p50_us'))} | "
              f"{signed(added(t, 'stream', 'event_delay_p99_us'))} | {fmt(s.get('gap_stretch_p99_us'))} | "
              f"{signed(added(t, 'stream', 'gap_stretch_p99_us'))} |")
md.append("\n(The mock engine stamps every event with its request's arrival and the event's write, on the "
          "wall clock all processes share (`lexora mock --stamp-events`). \"First-token transit\" is each "
          "stream's time to first token from the actual send, less the engine's part (arrival to the first "
          "token's write): the request's way to the engine (\"there\", from the send to the engine's arrival "
          "stamp) and the token's way back (\"back\", from the engine's write to the arrival here), each "
          "added over direct's at the median. \"Chunk delay\" is each "
          "event's time from the engine's write to its arrival at the load generator, and \"gap stretch\" how much "
          "longer each gap between two events after the first token was at the load generator than at the "
          "engine (the difference of their chunk delays; 1 when not longer). None of them carries the "
          "engine's own jitter (tokio's 1 ms timer: direct's gaps spread over several hundred µs) nor the "
          "load generator's lateness, so what a target adds to each stream shows on its own, stream by "
          "stream, where \"added TTFT\" above is a difference of two distributions' percentiles; – where a "
          "target drops the stamp fields.)\n")
md.append(f"\n## {long_streams:,} concurrent long streams ({settings['long_tokens']} tokens at "
          f"{settings['long_token_rate']:g} tokens/s each, one per connection, all at once)\n")
md.append("| target | streams ok | errors | RSS before MB | RSS peak MB | TTFT p99 ms | gap p50 ms | gap p99 ms | "
          "added gap p99 ms | chunk delay p99 ms | CPU µs/stream | took s |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for t in targets:
    s = results[t]["long"]
    ms = lambda key: s.get(key) and s[key] / 1000  # noqa: E731
    added_gap = added(t, "long", "gap_p99_us")
    md.append(f"| {t} | {fmt((s['requests'] - s['errors']) / max(s['rounds'], 1))} | {error_cell(s)} | "
              f"{fmt(s.get('rss_before_kb') and s['rss_before_kb'] / 1024, 1)} | "
              f"{fmt(s.get('rss_peak_kb') and s['rss_peak_kb'] / 1024, 1)} | {fmt(ms('ttft_p99_us'), 1)} | "
              f"{fmt(ms('gap_p50_us'), 1)} | {fmt(ms('gap_p99_us'), 1)} | "
              f"{'–' if added_gap is None else f'{added_gap / 1000:+,.1f}'} | {fmt(ms('event_delay_p99_us'), 1)} | "
              f"{fmt(s['cpu_us_per_request'])} | {fmt(s['window_s'], 1)} |")
md.append("\n(\"streams ok\" is per round; RSS of the process serving the long streams, sampled every "
          "0.1 s; for direct, the mock engine's. \"took\" = from the first stream's start to the "
          "last one's end.)\n")
md.append("## Memory (VmRSS), MB\n")
md.append("| target | idle | " + " | ".join(f"after round {r}" for r in range(1, rounds + 1)) + " |")
md.append("|---|---|" + "---|" * rounds)
for t in targets:
    r = results[t]["rss_kb"]
    md.append(f"| {t} | {fmt(r['idle'] and r['idle'] / 1024, 1)} | "
              + " | ".join(fmt(v / 1024, 1) for v in r["after_round"]) + " |")
md.append("\n(direct = the mock engine. Memory over a 1-million-request run: `scripts/bench.sh --soak`, "
          "[`soak.md`](soak.md).)\n")
# --- host noise: the same two programs measured in every round -----------------
noise_columns = [
    ("direct: p99 at 1 conn, µs", "direct", "c1", ("latency_us", "p99")),
    ("direct: stream TTFT p99, µs", "direct", "stream", ("ttft_us", "p99")),
    ("direct: first-token transit p99, µs", "direct", "stream", ("ttft_transit_us", "p99")),
    ("direct: chunk delay p99, µs", "direct", "stream", ("event_delay_us", "p99")),
    ("relay: first-token transit p99, µs", "relay", "stream", ("ttft_transit_us", "p99")),
    ("nginx: req/s at 64 conns", "nginx", "c64", ("achieved_rps",)),
    ("nginx: CPU µs/req at 64 conns", "nginx", "c64", None),
]
noise_rows = []
for label, target, scenario, keys in noise_columns:
    if target not in targets:
        continue
    per_round = []
    for r in range(1, rounds + 1):
        path = os.path.join(work, "raw", f"{target}.{scenario}.{r}.json")
        run = json.load(open(path)) if os.path.exists(path) else None
        if run is None:
            per_round.append(None)
        elif keys is None:
            per_round.append(cpu_us_per_request(run))
        else:
            per_round.append(get(run, *keys))
    noise_rows.append((label, per_round))
if noise_rows and rounds > 1 and not smoke:
    md.append("## Host noise: the references, round by round\n")
    md.append("| measurement | " + " | ".join(f"round {r}" for r in range(1, rounds + 1)) + " | max ÷ min |")
    md.append("|---|" + "---|" * (rounds + 1))
    for label, values in noise_rows:
        known = [v for v in values if v]
        spread = f"{max(known) / min(known):.2f}" if len(known) > 1 else "–"
        md.append(f"| {label} | " + " | ".join(fmt(v, 1 if 'CPU' in label else 0) for v in values)
                  + f" | {spread} |")
    md.append("\n(The same programs doing the same work in every round: what moves between rounds "
              "here is the machine's environment (on a VM, the host's other load), not the targets. "
              "A median over rounds survives one disturbed round; when several rounds moved, "
              "compare targets within this run only, and tails least of all.)\n")

if checks:
    md.append("## Issue 6 targets (Lexora with every policy on, vs nginx in this run)\n")
    md.append("| target | " + " | ".join(f"{t}: measured | limit | holds" for t in lexoras) + " |")
    md.append("|---|" + "---|---|---|" * len(lexoras))
    for target in dict.fromkeys(c["target"] for c in checks):
        cells = []
        for t in lexoras:
            c = next((c for c in checks if c["lexora"] == t and c["target"] == target), None)
            if c is None:
                cells.append("– | – | –")
                continue
            holds = {True: "yes", False: "**no**", None: "–"}[c["holds"]]
            cells.append(f"{fmt(c['value'], 1)} | {fmt(c['limit'], 1)} | {holds}")
        md.append(f"| {target} | " + " | ".join(cells) + " |")
    md.append("\n(lexora-busy is lexora-on with `server.busy_poll_us: 200`: after each request the "
              "gateway polls its sockets for 200 µs instead of letting its core sleep. \"One-core "
              "ceiling\" is not one of the issue's targets but a stricter reading of the throughput "
              "target: the requests per second each proxy's CPU per request allows on one fully busy "
              "core, so a load side that caps nginx cannot flatter Lexora. Holding it means CPU per "
              "request ≤ 1.25 × nginx's." + (" lexora-pgo is lexora-on built by `scripts/build-pgo.sh`: "
              "profile-guided optimisation trained on this benchmark's answers and streams."
              if "lexora-pgo" in results else "") + ")\n")
if "relay" in results:
    floor = [(label, added("relay", scenario, key)) for label, scenario, key in (
        ("added p99 at concurrency 1", "c1", "latency_p99_us"),
        ("added TTFT p50", "stream", "ttft_p50_us"),
        ("added TTFT p99", "stream", "ttft_p99_us"),
        ("added first-token transit p50", "stream", "ttft_transit_p50_us"),
        ("added first-token transit p99", "stream", "ttft_transit_p99_us"))]
    md.append("The floor of an event-loop proxy in this run: `lexora-relay` (one thread on tokio's event "
              "loop, as Lexora; no HTTP read, bytes passed between the client and a connection of its own "
              "to the engine) on the proxies' core: "
              + "; ".join(f"{label} {signed(v)} µs" for label, v in floor)
              + ". That much is what this machine charges for a process in the path (each hand-off "
                "between the two cores wakes one of them); what a proxy adds beyond it is its own work.\n")
for n in notes:
    md.append(f"- {n}")
with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(md) + "\n")
