"""Small server-side SVG charts for the dashboard, so plots need no JavaScript library or CDN.

Every label passes through `escape`, since series names and values come from stored data.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 360, 220
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 12, 28, 36
COLOURS = ["#1f5fbf", "#d9480f", "#2b8a3e", "#7048e8"]


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]  # (x, y), drawn in order.


def _bounds(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    return low - pad, high + pad


def line_chart(title: str, series: list[Series], *, x_label: str, y_label: str, lines: bool = True) -> str:
    """An SVG chart of one or more series; `lines=False` draws points only (a scatter plot)."""
    points = [point for one in series for point in one.points]
    if not points:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}: no data yet" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" class="chart">'
            f'<text x="{MARGIN_LEFT}" y="16" font-weight="600" font-size="13">{escape(title)}</text>'
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" fill="#5b6673">no data yet</text></svg>'
        )
    x_low, x_high = _bounds([x for x, _ in points])
    y_low, y_high = _bounds([y for _, y in points])
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_width

    def sy(y: float) -> float:
        return MARGIN_TOP + (1 - (y - y_low) / (y_high - y_low)) * plot_height

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" class="chart">',
        f'<text x="{MARGIN_LEFT}" y="16" font-weight="600" font-size="13">{escape(title)}</text>',
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#d9dde2"/>',
        f'<text x="{MARGIN_LEFT + plot_width / 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="12" y="{MARGIN_TOP + plot_height / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {MARGIN_TOP + plot_height / 2})">{escape(y_label)}</text>',
    ]
    for tick in (y_low, (y_low + y_high) / 2, y_high):
        parts.append(f'<text x="{MARGIN_LEFT - 4}" y="{sy(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.3g}</text>')
    for tick in (x_low, x_high):
        parts.append(f'<text x="{sx(tick):.1f}" y="{MARGIN_TOP + plot_height + 14}" font-size="10" text-anchor="middle">{tick:.3g}</text>')
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        coordinates = [(sx(x), sy(y)) for x, y in one.points]
        if lines and len(coordinates) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in coordinates:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        parts.append(f'<text x="{MARGIN_LEFT + 6 + 110 * index}" y="{MARGIN_TOP + 12}" font-size="11" fill="{colour}">{escape(one.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
