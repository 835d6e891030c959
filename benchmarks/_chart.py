"""A horizontal bar chart as a standalone SVG file, on a logarithmic axis, with no plotting dependency."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

LABEL_WIDTH = 330
PLOT_WIDTH = 440
VALUE_WIDTH = 110
BAR_HEIGHT = 18
GAP = 8
TOP = 48
BOTTOM = 34


def _colour(label: str) -> str:
    if label.startswith("floor"):
        return "#9e9e9e"
    if label.startswith("eventbus"):
        return "#3f51b5"
    return "#ff9800"


def bar_chart(title: str, unit: str, bars: list[tuple[str, float]], path: Path) -> None:
    """Write ``bars`` (label, value > 0) to ``path`` as an SVG bar chart, one bar per row, log-scaled."""
    if not bars or min(value for _, value in bars) <= 0:
        raise ValueError(f"a log-scaled chart needs positive values, got {bars!r}")
    low = 10 ** math.floor(math.log10(min(value for _, value in bars)))
    high = 10 ** math.ceil(math.log10(max(value for _, value in bars)))
    decades = max(1, round(math.log10(high / low)))

    def x(value: float) -> float:
        return LABEL_WIDTH + PLOT_WIDTH * math.log10(value / low) / decades

    height = TOP + len(bars) * (BAR_HEIGHT + GAP) + BOTTOM
    width = LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    axis_bottom = height - BOTTOM + 4
    for decade in range(decades + 1):
        tick = low * 10**decade
        position = x(tick)
        parts.append(
            f'<line x1="{position:.1f}" y1="{TOP - 6}" x2="{position:.1f}" y2="{axis_bottom}" stroke="#e0e0e0"/>'
        )
        parts.append(
            f'<text x="{position:.1f}" y="{axis_bottom + 14}" text-anchor="middle" fill="#616161">{tick:,.0f}</text>'
        )
    parts.append(
        f'<text x="{LABEL_WIDTH + PLOT_WIDTH / 2}" y="{height - 2}" text-anchor="middle" fill="#616161">'
        f"{escape(unit)} (log scale)</text>"
    )
    for index, (label, value) in enumerate(bars):
        top = TOP + index * (BAR_HEIGHT + GAP)
        middle = top + BAR_HEIGHT / 2 + 4
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{middle}" text-anchor="end">{escape(label)}</text>')
        parts.append(
            f'<rect x="{LABEL_WIDTH}" y="{top}" width="{max(1.0, x(value) - LABEL_WIDTH):.1f}" '
            f'height="{BAR_HEIGHT}" fill="{_colour(label)}"/>'
        )
        parts.append(f'<text x="{x(value) + 6:.1f}" y="{middle}">{value:,.0f}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
