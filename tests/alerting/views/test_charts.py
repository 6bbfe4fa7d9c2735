"""Server-side SVG charts: well-formed, one bar per value, sized by value, labels escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from alerting.views.report.charts import Bar, bar_chart, cdf_chart, hbar_chart

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - the charts' own output, not untrusted input


def bars_of(svg: str) -> list[ET.Element]:
    root = parse(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [r for r in root.iterfind(".//svg:rect", NS) if r.get("class") == "bar"]


def test_a_bar_chart_has_one_bar_per_value_sized_by_value() -> None:
    svg = bar_chart([Bar("1分内", 4), Bar("1–2分", 2), Bar("2–5分", 0)], title="应答用时分布", unit="人")
    bars = bars_of(svg)
    assert [(b.get("data-label"), b.get("data-value")) for b in bars] == [
        ("1分内", "4"),
        ("1–2分", "2"),
        ("2–5分", "0"),
    ]
    heights = [float(b.get("height") or "nan") for b in bars]
    assert heights[0] == 2 * heights[1] and heights[2] == 0
    assert parse(svg).find("svg:title", NS) is not None


def test_labels_are_escaped_and_an_empty_chart_says_so() -> None:
    svg = hbar_chart([Bar("<短信> & 语音", 3), Bar("企业微信", 1)], title="渠道 <A&B>")
    bars = bars_of(svg)
    assert [b.get("data-label") for b in bars] == ["<短信> & 语音", "企业微信"]
    assert float(bars[0].get("width") or 0) == pytest.approx(3 * float(bars[1].get("width") or 0), abs=0.2)
    empty = bar_chart([], title="无", empty="暂无数据")
    assert bars_of(empty) == [] and "暂无数据" in empty


def test_the_cumulative_curve_ends_at_the_answer_rate() -> None:
    svg = cdf_chart([30, 180, 400], total=5, title="累计应答比例", window_s=300)
    root = parse(svg)
    line = next(p for p in root.iterfind(".//svg:polyline", NS) if p.get("class") == "cdf")
    assert line.get("data-final") == "0.6000"
    points = [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
    ys = [y for _, y in points]
    assert ys == sorted(ys, reverse=True)  # never goes down: answers only accumulate
    assert root.find(".//svg:line[@class='window']", NS) is not None
    assert "3/5" in svg
    assert "还没有人应答" in cdf_chart([], total=5, title="无")
