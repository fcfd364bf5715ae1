#!/usr/bin/env python3
"""Draw a Grafana dashboard's time-series panels as one SVG, from a real Prometheus.

Grafana cannot be installed on the machine the docs are made on, so this stands in
for its renderer: it reads the dashboard JSON, runs each panel's PromQL queries
(`$instance` as every instance) over the last MINUTES minutes through Prometheus'
HTTP API (/api/v1/query_range), and lays the panels out on the dashboard's own grid
(24 columns). Plain Python, no plotting library. Chromium turns the SVG into a PNG:

    render.py rumq-dashboard.json http://127.0.0.1:9090 20 out.svg
    chromium --headless --no-sandbox --disable-gpu --screenshot=out.png \
        --window-size=1600,1340 out.svg
"""
import json
import sys
import time
import urllib.parse
import urllib.request

COL, ROW = 64, 36  # pixels per grid column and row
COLORS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9"]
UNITS = {"ops": "/s", "s": "s", "Bps": "B/s", "bytes": "B", "short": ""}


def query_range(prom, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def human(v, unit):
    suffix = UNITS.get(unit, "")
    if unit == "s":
        for scale, name in [(1, "s"), (1e-3, "ms"), (1e-6, "µs")]:
            if abs(v) >= scale or scale == 1e-6:
                return f"{v / scale:.3g} {name}"
    for scale, name in [(1e9, "G"), (1e6, "M"), (1e3, "k")]:
        if abs(v) >= scale:
            return f"{v / scale:.3g}{name}{suffix}"
    return f"{v:.3g}{suffix}"


def panel_svg(p, series, start, end):
    g = p["gridPos"]
    x0, y0, w, h = g["x"] * COL, g["y"] * ROW, g["w"] * COL, g["h"] * ROW
    unit = p["fieldConfig"]["defaults"].get("unit", "short")
    out = [f'<g transform="translate({x0 + 4},{y0 + 4})">',
           f'<rect width="{w - 8}" height="{h - 8}" rx="3" fill="#181b1f" stroke="#2c3235"/>',
           f'<text x="10" y="20" fill="#ccccdc" font-size="13" font-weight="600">{p["title"]}</text>']
    L, R, T, B = 70, 14, 32, 46
    pw, ph = w - 8 - L - R, h - 8 - T - B
    values = [v for _, pts in series for _, v in pts]
    ymax = max(values) * 1.1 if values and max(values) > 0 else 1
    for i in range(5):
        y = T + ph - ph * i / 4
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y}" y2="{y}" stroke="#2c3235"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4}" fill="#8e8e8e" font-size="10" text-anchor="end">{human(ymax * i / 4, unit)}</text>')
    for i in range(5):
        t = start + (end - start) * i / 4
        out.append(f'<text x="{L + pw * i / 4}" y="{T + ph + 14}" fill="#8e8e8e" font-size="10" text-anchor="middle">{time.strftime("%H:%M", time.gmtime(t))}</text>')
    for n, (name, pts) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        path = " ".join(f"{L + pw * (t - start) / (end - start):.1f},{T + ph - ph * v / ymax:.1f}" for t, v in pts)
        if path:
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        lx = L + (n % 3) * (pw / 3)
        ly = T + ph + 28 + (n // 3) * 12
        out.append(f'<rect x="{lx}" y="{ly - 7}" width="10" height="3" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}" fill="#ccccdc" font-size="10">{name}</text>')
    out.append("</g>")
    return out


def main(dashboard, prom, minutes, dst):
    dash = json.load(open(dashboard))
    end = time.time()
    start = end - 60 * float(minutes)
    step = max(1, int((end - start) / 300))
    body = []
    bottom = 0
    for p in dash["panels"]:
        series = []
        for t in p["targets"]:
            expr = t["expr"].replace("$instance", ".*")
            for r in query_range(prom, expr, start, end, step):
                pts = [(float(ts), float(v)) for ts, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((legend(t.get("legendFormat", ""), r["metric"]), pts))
        body += panel_svg(p, series, start, end)
        g = p["gridPos"]
        bottom = max(bottom, (g["y"] + g["h"]) * ROW)
    W, H = 24 * COL, bottom + 40
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
            f'<rect width="{W}" height="{H}" fill="#111217"/>']
    title = f'{dash["title"]}: {time.strftime("%Y-%m-%d %H:%M", time.gmtime(start))} to {time.strftime("%H:%M UTC", time.gmtime(end))}'
    body = [f'<g transform="translate(0,36)">'] + body + ["</g>"]
    head.append(f'<text x="12" y="24" fill="#ccccdc" font-size="16" font-weight="600">{title}</text>')
    with open(dst, "w") as f:
        f.write("\n".join(head + body + ["</svg>"]))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
