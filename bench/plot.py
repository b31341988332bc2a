"""Latency percentile plots as a self-contained SVG (no plotting library, so
the smoke run in the test command needs nothing installed).

The x axis is the HDR-histogram "nines" scale, x = log10(1 / (1 - p)), so
each tail decade (90 %, 99 %, 99.9 % ...) gets the same width; the y axis is
latency on a log scale. One panel per scenario, one line per target."""

import math
from xml.sax.saxutils import escape

# Fixed colours per position, readable on white and for common colour-blindness.
COLOURS = ["#4d4d4d", "#e69f00", "#56b4e9", "#009e73", "#d55e00", "#cc79a7", "#0072b2", "#f0e442"]
PANEL_W, PANEL_H = 560, 340
MARGIN = {"left": 70, "right": 40, "top": 40, "bottom": 50}
MAX_NINES = 5  # 99.999 %


def _nines(p):
    return min(MAX_NINES, math.log10(1 / (1 - p / 100))) if p < 100 else None


def _micros_label(us):
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    if us >= 1e3:
        return f"{us / 1e3:g} ms"
    return f"{us:g} µs"


def _panel(x0, y0, title, series, colours):
    """One panel at (x0, y0): series is [(label, [[percentile, µs], ...])]."""
    w = PANEL_W - MARGIN["left"] - MARGIN["right"]
    h = PANEL_H - MARGIN["top"] - MARGIN["bottom"]
    left, top = x0 + MARGIN["left"], y0 + MARGIN["top"]
    out = [f'<text x="{left + w / 2}" y="{y0 + 24}" text-anchor="middle" font-size="15" '
           f'font-weight="bold">{escape(title)}</text>']
    values = [v for _, curve in series for p, v in curve if p < 100 and v > 0]
    if not values:
        out.append(f'<text x="{left + w / 2}" y="{top + h / 2}" text-anchor="middle">no data</text>')
        return out
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10

    def sx(nines):
        return left + w * nines / MAX_NINES

    def sy(us):
        return top + h * (1 - (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
    for decade in range(round(math.log10(lo)), round(math.log10(hi)) + 1):
        us = 10 ** decade
        y = sy(us)
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12">'
                   f'{_micros_label(us)}</text>')
        for minor in range(2, 10):
            if us * minor < hi:
                ym = sy(us * minor)
                out.append(f'<line x1="{left}" x2="{left + 5}" y1="{ym:.1f}" y2="{ym:.1f}" stroke="#aaa"/>')
    for nines, label in enumerate(["0 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %"]):
        x = sx(nines)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + h}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + h + 18}" text-anchor="middle" font-size="12">{label}</text>')
    out.append(f'<text x="{left + w / 2}" y="{top + h + 38}" text-anchor="middle" font-size="12">'
               'percentile</text>')
    for (label, curve), colour in zip(series, colours):
        points = [(_nines(p), v) for p, v in curve if p < 100 and v > 0]
        path = " ".join(f"{sx(n):.1f},{sy(v):.1f}" for n, v in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    return out


def latency_svg(panels, title):
    """panels: [(title, [(label, curve)])]; every target keeps one colour in all panels."""
    labels = []
    for _, series in panels:
        for label, _ in series:
            name = label.split(" (")[0]
            if name not in labels:
                labels.append(name)
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(labels)}
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    legend_rows = max(len(series) for _, series in panels) if panels else 0
    legend_h = 18 * legend_rows + 10
    width, height = cols * PANEL_W, rows * (PANEL_H + legend_h) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="26" text-anchor="middle" font-size="17">{escape(title)}</text>']
    for i, (panel_title, series) in enumerate(panels):
        x0, y0 = (i % cols) * PANEL_W, 40 + (i // cols) * (PANEL_H + legend_h)
        colours = [colour_of[label.split(" (")[0]] for label, _ in series]
        out += _panel(x0, y0, panel_title, series, colours)
        # Legend under each panel: its own labels carry its error counts.
        for j, ((label, _), colour) in enumerate(zip(series, colours)):
            y = y0 + PANEL_H + 4 + 18 * j
            lx = x0 + MARGIN["left"]
            out.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="3"/>')
            out.append(f'<text x="{lx + 30}" y="{y + 4}" font-size="12">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
