#!/usr/bin/env python3
"""Turns wrk's text output into the JSON shape lexora-bench prints (the
fields bench/report.py reads). Usage: wrk_json.py WRK_TXT OUT_JSON CPU_TICKS."""

import json
import re
import sys

text_path, out_path, cpu_ticks = sys.argv[1:4]
with open(text_path) as f:
    text = f.read()


def micros(value):
    match = re.match(r"([\d.]+)(us|ms|s)", value)
    return float(match.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[match.group(2)] if match else None


rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
requests = re.search(r"(\d+) requests in", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
percentiles = {k: micros(v) for k, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.M)}
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
with open(out_path, "w") as f:
    json.dump({"achieved_rps": float(rps.group(1)) if rps else 0.0,
               "requests": int(requests.group(1)) if requests else 0, "errors": errors,
               "latency_us": {"p50": percentiles.get("50"), "p99": percentiles.get("99")},
               "cpu_ticks": int(cpu_ticks)}, f)
