#!/usr/bin/env python3
"""Draw docs/fanout.csv (subscribers, then one column per broker) as an SVG line chart.

Plain Python, no plotting library: the chart is a few lines and axes.
Usage: plot.py IN.csv OUT.svg
"""
import csv
import sys

W, H, L, R, T, B = 640, 400, 80, 150, 40, 50
COLORS = ["#c0392b", "#2c3e50", "#27ae60", "#8e44ad"]


def main(src, dst):
    with open(src) as f:
        rows = list(csv.reader(f))
    head, data = rows[0], rows[1:]
    xs = [float(r[0]) for r in data]
    series = {name: [float(r[i]) for r in data] for i, name in enumerate(head[1:], start=1)}
    ymax = max(max(v) for v in series.values()) * 1.1 or 1
    xmin, xmax = min(xs), max(xs)

    def px(x):  # subscribers on a log2 axis
        import math
        span = math.log2(xmax) - math.log2(xmin) or 1
        return L + (math.log2(x) - math.log2(xmin)) / span * (W - L - R)

    def py(y):
        return H - B - y / ymax * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{(W - R + L) / 2}" y="22" font-size="14" text-anchor="middle">Deliveries/s vs subscribers (1 publisher, QoS 0, 64 B)</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    for x in xs:
        out.append(f'<text x="{px(x) - 6}" y="{H - B + 18}">{int(x)}</text>')
    out.append(f'<text x="{(W - R + L) / 2 - 30}" y="{H - 10}">subscribers</text>')
    for k in range(6):
        y = ymax * k / 5
        out.append(f'<line x1="{L - 4}" y1="{py(y)}" x2="{W - R}" y2="{py(y)}" stroke="#ddd"/>')
        out.append(f'<text x="8" y="{py(y) + 4}">{y / 1e6:.2f} M</text>')
    for i, (name, ys) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in zip(xs, ys):
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{W - R + 15}" y="{T + 20 + 20 * i}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
