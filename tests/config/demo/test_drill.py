"""The README's first command, as a test: the demo closes every loop as its simulation predicts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

from config.demo.drill import run_demo


@pytest.mark.timeout(300)
async def test_demo_closes_every_loop_and_writes_the_report(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    result = await run_demo(tmp_path / "demo", seed=7, speed=20.0, console=console)
    output = console.export_text()
    assert result.ok, result.mismatches
    assert "Loop closed as predicted: yes" in output and "Audit chain: verified" in output
    assert "SANDBOX" in output  # the sandbox channels are named, never passed off as real
    headline = re.search(r"issued to (\d+) recipients", output)
    last_rows = dict(re.findall(r"│\s*(凤凰镇|宁厂镇|上磺镇)\s*│\s*(\d+)\s*│", output))  # the table's last render
    assert headline and len(last_rows) == 3
    assert sum(int(n) for n in last_rows.values()) == int(headline.group(1)), "the headline and the table disagree"
    html = result.report.read_text(encoding="utf-8")
    assert result.report.exists() and "演练" in html


@pytest.mark.timeout(400)  # a 28-minute drill at 10x, over real HTTP and MQTT
async def test_demo_over_real_adapters_against_local_fakes_closes_the_same_way(tmp_path: Path) -> None:
    console = Console(record=True, width=160)
    result = await run_demo(tmp_path / "demo", seed=7, speed=10.0, console=console, real_local=True)
    output = console.export_text()
    assert result.ok, result.mismatches
    assert "Real adapters against local fakes" in output
    assert "SANDBOX" not in output
    traffic = output[output.index("Wire traffic:") :]
    assert "Twilio 0 messages" not in traffic and "WeCom 0 cards" not in traffic
