"""Charts as inline SVG, drawn on the server: no script, no network, and they print as sharply as the text.

Each bar is one `<rect class="bar">` carrying its label and value as data attributes, so a test (or a
screen reader via the <title> of each bar) can read back exactly what is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = '"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif'
INK, MUTED, GRID, BAR = "#1c1f23", "#5f6b76", "#d7dce1", "#0b57d0"
SVG_NS = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    note: str = ""  # shown after the value, e.g. a share: "（42%）"
    colour: str = BAR


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _nice_max(value: float) -> float:
    """The axis end: the first 1, 2 or 5 times a power of ten at or above the largest value."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= value))


def _open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="{SVG_NS}" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_attr(title)}" font-family="{_attr(FONT)}" font-size="12">',
        f"<title>{escape(title)}</title>",
    ]


def _empty(parts: list[str], width: int, height: int, message: str) -> str:
    parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{MUTED}">{escape(message)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 240,
    empty: str = "暂无数据",
) -> str:
    """Vertical bars, one per label, with the value written above each."""
    parts = _open(width, height, title)
    if not bars:
        return _empty(parts, width, height, empty)
    left, right, top, bottom = 44, 10, 22, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max(b.value for b in bars))
    for i in range(5):  # gridlines at 0, 25, 50, 75, 100 % of the axis
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{_num(round(v, 1))}</text>'
        )
    if unit:
        parts.append(f'<text x="4" y="12" fill="{MUTED}">{escape(unit)}</text>')
    slot = plot_w / len(bars)
    bar_w = max(2.0, slot * 0.7)
    for i, b in enumerate(bars):
        h = plot_h * b.value / top_value
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h - h
        centre = x + bar_w / 2
        parts.append(
            f'<rect class="bar" data-label="{_attr(b.label)}" data-value="{_attr(_num(b.value))}" '
            f'x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{_attr(b.colour)}">'
            f"<title>{escape(b.label)}：{_num(b.value)}{escape(unit)}{escape(b.note)}</title></rect>"
        )
        parts.append(
            f'<text x="{centre:.1f}" y="{y - 4:.1f}" text-anchor="middle" fill="{INK}">'
            f"{_num(b.value)}{escape(b.note)}</text>"
        )
        parts.append(
            f'<text x="{centre:.1f}" y="{top + plot_h + 16:.1f}" text-anchor="middle" fill="{INK}">'
            f"{escape(b.label)}</text>"
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{MUTED}"/></svg>'
    )
    return "".join(parts)


def hbar_chart(
    bars: Sequence[Bar], *, title: str, unit: str = "", width: int = 640, row: int = 26, empty: str = "暂无数据"
) -> str:
    """Horizontal bars: long Chinese labels read better beside a bar than under it."""
    height = max(60, row * len(bars) + 16)
    parts = _open(width, height, title)
    if not bars:
        return _empty(parts, width, height, empty)
    label_w, value_w = 120, 110
    plot_w = width - label_w - value_w
    top_value = max(b.value for b in bars) or 1.0
    for i, b in enumerate(bars):
        y = 8 + row * i
        w = plot_w * b.value / top_value
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row / 2 + 2:.1f}" text-anchor="end" fill="{INK}">{escape(b.label)}</text>'
        )
        parts.append(
            f'<rect class="bar" data-label="{_attr(b.label)}" data-value="{_attr(_num(b.value))}" '
            f'x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{_attr(b.colour)}">'
            f"<title>{escape(b.label)}：{_num(b.value)}{escape(unit)}{escape(b.note)}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + w + 6:.1f}" y="{y + row / 2 + 2:.1f}" fill="{INK}">'
            f"{_num(b.value)}{escape(unit)}{escape(b.note)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def cdf_chart(
    answer_s: Sequence[float],
    *,
    total: int,
    title: str,
    width: int = 640,
    height: int = 220,
    window_s: float | None = None,
    empty: str = "还没有人应答",
) -> str:
    """Share of everyone who had to answer that had answered, against minutes since the alert went out.

    The curve ends at the answer rate, not at 100 %: the gap above it is the people still silent.
    A dashed line marks the first answer window, when escalation starts.
    """
    parts = _open(width, height, title)
    if not answer_s or total <= 0:
        return _empty(parts, width, height, empty)
    left, right, top, bottom = 44, 14, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    ordered = sorted(max(0.0, s) for s in answer_s)
    end_min = _nice_max(max(ordered[-1], window_s or 0.0) / 60)

    def x(seconds: float) -> float:
        return left + plot_w * (seconds / 60) / end_min

    def y(share: float) -> float:
        return top + plot_h * (1 - share)

    for pct in (0, 25, 50, 75, 100):
        yy = y(pct / 100)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="{MUTED}">{pct}%</text>')
    for i in range(5):
        minutes = end_min * i / 4
        xx = left + plot_w * i / 4
        parts.append(
            f'<text x="{xx:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="{MUTED}">{_num(minutes)}分</text>'
        )
    if window_s:
        wx = x(window_s)
        parts.append(
            f'<line class="window" x1="{wx:.1f}" x2="{wx:.1f}" y1="{top}" y2="{top + plot_h}" '
            f'stroke="#ef6c00" stroke-dasharray="4 3"/>'
        )
    points = [(x(0), y(0))]
    for n, s in enumerate(ordered, 1):
        points += [(x(s), y((n - 1) / total)), (x(s), y(n / total))]
    points.append((x(end_min * 60), y(len(ordered) / total)))
    path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    rate = len(ordered) / total
    parts.append(
        f'<polyline class="cdf" data-final="{rate:.4f}" points="{path}" fill="none" stroke="{BAR}" stroke-width="2"/>'
    )
    parts.append(
        f'<text x="{width - right}" y="{y(rate) - 6:.1f}" text-anchor="end" fill="{INK}">'
        f"已应答 {len(ordered)}/{total}（{rate:.0%}）</text></svg>"
    )
    return "".join(parts)
