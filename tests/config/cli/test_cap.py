"""`jiaoying cap import`: the duty officer checks a weather service message, then issues it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alerting.store.db import Database
from config.cli.main import app
from tests.conftest import build_small_county

CORPUS = Path(__file__).parents[2] / "alerting" / "cap" / "corpus"


@pytest.fixture
def county_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jiaoying.db'}"

    async def build() -> None:
        db = Database(url)
        await db.upgrade()
        await build_small_county(db)
        await db.close()

    asyncio.run(build())
    monkeypatch.setenv("JIAOYING_DATABASE_URL", url)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    return url


def test_check_then_issue_then_taken_once(county_db: str) -> None:
    runner = CliRunner()
    message = str(CORPUS / "valid" / "rainstorm_red.xml")
    shown = runner.invoke(app, ["cap", "import", message])
    assert shown.exit_code == 0, shown.output
    assert "发布预警" in shown.output and "红色" in shown.output and "凤凰镇 (500238101)" in shown.output
    assert "Nothing was issued" in shown.output
    issued = runner.invoke(app, ["cap", "import", message, "--issue"])
    assert issued.exit_code == 0, issued.output
    assert "issued: alert 1" in issued.output
    again = runner.invoke(app, ["cap", "import", message, "--issue"])
    assert again.exit_code == 0 and "Already taken before (issued, alert 1)" in again.output


def test_a_refusal_names_the_element(county_db: str) -> None:
    refused = CliRunner().invoke(app, ["cap", "import", str(CORPUS / "invalid" / "polygon_open.xml")])
    assert refused.exit_code == 2
    assert "info[0]/area[0]/polygon[0]" in refused.output
