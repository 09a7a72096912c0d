#!/usr/bin/env python3
"""bench/chart.py — SVG charts from the benchmark CSVs, Python standard library only.

  chart.py bars  passthrough.csv OUT.svg   median TPS per (mode, clients), one bar per target
  chart.py lines incident-p99.csv OUT.svg  checkout p99 per second, one line per configuration

bench/report.py imports bar_chart() and line_chart() too.
"""

import csv
import math
import statistics
import sys
from html import escape

COLORS = {
    "direct": "#d62728",
    "pgward": "#1f77b4",
    "pgward-norules": "#1f77b4",
    "pgward, no rules": "#1f77b4",
    "pgward-rules": "#2ca02c",
    "pgward + rules.toml": "#2ca02c",
    "pgbouncer": "#ff7f0e",
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
FONT = 'font-family="DejaVu Sans, Arial, Helvetica, sans-serif"'


def color(name, i):
    return COLORS.get(name, PALETTE[i % len(PALETTE)])


def nice_step(span, ticks=6):
    raw = span / max(1, ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt(v):
    if v >= 1000 and v == int(v):
        return f"{int(v):,}".replace(",", " ")
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


def svg_open(w, h, title):
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold" {FONT}>{escape(title)}</text>',
    ]


def legend(out, names, x, y):
    for i, name in enumerate(names):
        yy = y + i * 18
        out.append(f'<rect x="{x}" y="{yy - 10}" width="12" height="12" fill="{color(name, i)}"/>')
        out.append(f'<text x="{x + 18}" y="{yy}" font-size="12" {FONT}>{escape(name)}</text>')


def bar_chart(groups, series, values, title, ylabel, subtitle=""):
    """groups: x labels; series: bar names; values[(group, series)] -> number or None."""
    gw = max(60, 28 * len(series) + 20)
    left, right, top, bottom = 80, 150, 50 if not subtitle else 66, 70
    w = left + right + gw * max(1, len(groups))
    h = 440
    ph = h - top - bottom
    vmax = max([v for v in values.values() if v is not None] or [1])
    step = nice_step(vmax)
    ymax = step * math.ceil(vmax / step) if vmax > 0 else 1
    out = svg_open(w, h, title)
    if subtitle:
        out.append(f'<text x="{w / 2}" y="44" text-anchor="middle" font-size="12" fill="#555" {FONT}>{escape(subtitle)}</text>')
    t = 0.0
    while t <= ymax + 1e-9:
        y = top + ph - ph * t / ymax
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" {FONT}>{fmt(t)}</text>')
        t += step
    out.append(
        f'<text x="18" y="{top + ph / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {top + ph / 2})" {FONT}>{escape(ylabel)}</text>'
    )
    bw = (gw - 20) / max(1, len(series))
    for gi, g in enumerate(groups):
        gx = left + gi * gw + 10
        for si, s in enumerate(series):
            v = values.get((g, s))
            if v is None:
                continue
            bh = ph * v / ymax
            x = gx + si * bw
            out.append(
                f'<rect x="{x:.1f}" y="{top + ph - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" fill="{color(s, si)}"><title>{escape(g)} {escape(s)}: {v:.0f}</title></rect>'
            )
        lines = str(g).split("\n")
        for li, line in enumerate(lines):
            out.append(
                f'<text x="{gx + (gw - 20) / 2:.1f}" y="{top + ph + 18 + 14 * li}" text-anchor="middle" font-size="11" {FONT}>{escape(line)}</text>'
            )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{w - right}" y2="{top + ph}" stroke="#333"/>')
    legend(out, series, w - right + 16, top + 10)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def line_chart(series, title, xlabel, ylabel, marks=(), log_y=True, subtitle="", x_from=None):
    """series: {name: [(x, y), ...]}; marks: [(x, label)] vertical dashed lines."""
    left, right, top, bottom = 80, 170, 50 if not subtitle else 66, 60
    w, h = 960, 460
    pw, ph = w - left - right, h - top - bottom
    pts = [p for s in series.values() for p in s if p[1] is not None and p[1] > 0]
    xs = [p[0] for p in pts] + [m[0] for m in marks] + ([x_from] if x_from is not None else [])
    xmin, xmax = (min(xs), max(xs)) if xs else (0, 1)
    if xmax <= xmin:
        xmax = xmin + 1
    ys = [p[1] for p in pts] or [1]
    if log_y:
        lo = 10 ** math.floor(math.log10(min(ys)))
        hi = 10 ** math.ceil(math.log10(max(ys)))
        if hi <= lo:
            hi = lo * 10

        def ypos(v):
            return top + ph - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

        ticks = []
        d = lo
        while d <= hi * 1.0001:
            ticks.append(d)
            d *= 10
    else:
        lo, hi = 0, max(ys)
        step = nice_step(hi)
        hi = step * math.ceil(hi / step)

        def ypos(v):
            return top + ph - ph * v / hi

        ticks = [i * step for i in range(int(round(hi / step)) + 1)]

    def xpos(v):
        return left + pw * (v - xmin) / (xmax - xmin)

    out = svg_open(w, h, title)
    if subtitle:
        out.append(f'<text x="{w / 2}" y="44" text-anchor="middle" font-size="12" fill="#555" {FONT}>{escape(subtitle)}</text>')
    for t in ticks:
        y = ypos(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" {FONT}>{fmt(t)}</text>')
    xstep = nice_step(xmax - xmin, 10)
    t = math.ceil(xmin / xstep) * xstep
    while t <= xmax + 1e-9:
        x = xpos(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle" font-size="11" {FONT}>{fmt(t)}</text>')
        t += xstep
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 14}" text-anchor="middle" font-size="12" {FONT}>{escape(xlabel)}</text>')
    out.append(
        f'<text x="18" y="{top + ph / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {top + ph / 2})" {FONT}>{escape(ylabel)}</text>'
    )
    for mx, label in marks:
        x = xpos(mx)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#555" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{x + 4:.1f}" y="{top + 12}" font-size="11" fill="#555" {FONT}>{escape(label)}</text>')
    names = list(series)
    for i, name in enumerate(names):
        segs, cur = [], []
        prev_x = None
        for x, y in sorted(series[name]):
            if y is None or y <= 0 or (prev_x is not None and x - prev_x > 1.5):
                if cur:
                    segs.append(cur)
                cur = []
            if y is not None and y > 0:
                cur.append((x, y))
            prev_x = x
        if cur:
            segs.append(cur)
        for seg in segs:
            if len(seg) == 1:
                x, y = seg[0]
                out.append(f'<circle cx="{xpos(x):.1f}" cy="{ypos(y):.1f}" r="2.5" fill="{color(name, i)}"/>')
                continue
            d = " ".join(f"{'M' if j == 0 else 'L'}{xpos(x):.1f},{ypos(y):.1f}" for j, (x, y) in enumerate(seg))
            out.append(f'<path d="{d}" fill="none" stroke="{color(name, i)}" stroke-width="2"/>')
    legend(out, names, left + pw + 16, top + 10)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def passthrough_bars(csv_path):
    """Median TPS per (mode, clients, target) from bench/passthrough.sh's CSV."""
    tps = {}
    order_g, order_t = [], []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            if not r.get("tps"):
                continue
            g = f"{r['mode']}\nc={r['clients']}"
            if g not in order_g:
                order_g.append(g)
            if r["target"] not in order_t:
                order_t.append(r["target"])
            tps.setdefault((g, r["target"]), []).append(float(r["tps"]))
    pref = ["direct", "pgward", "pgbouncer"]
    order_t.sort(key=lambda t: pref.index(t) if t in pref else len(pref))
    values = {k: statistics.median(v) for k, v in tps.items()}
    return bar_chart(order_g, order_t, values, "Pass-through: pgbench -S TPS (median)", "transactions per second")


def incident_lines(csv_path):
    """incident-p99.csv: config,round,second,phase,checkouts,p99_ms,flood_start_s (round 1)."""
    names = {"pgward-norules": "pgward, no rules", "pgward-rules": "pgward + rules.toml"}
    series = {}
    incident_at = None
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            if r["round"] != "1":
                continue
            y = float(r["p99_ms"]) if r["p99_ms"] else None
            # plotted at the middle of its second
            series.setdefault(names.get(r["config"], r["config"]), []).append((float(r["second"]) + 0.5, y))
            if r.get("flood_start_s"):
                incident_at = float(r["flood_start_s"])
    marks = [(incident_at, "recommendation flood starts")] if incident_at is not None else []
    return line_chart(series, "Checkout p99 latency per second", "seconds since start", "checkout p99 (ms, log scale)", marks, x_from=0)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("bars", "lines"):
        sys.exit(__doc__)
    kind, src, dst = sys.argv[1:]
    svg = passthrough_bars(src) if kind == "bars" else incident_lines(src)
    with open(dst, "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
