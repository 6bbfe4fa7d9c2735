"""Duty rosters at work: a step for the township duty officer reaches whoever is on duty when it fires,
and the duty room is warned about the hours in which nobody is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlmodel import col
from typer.testing import CliRunner

import config.cli.main  # noqa: F401  (the roster commands import it when they run; loaded here, it logs to the real stderr)
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level, Role
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Responsibility
from config.cli.roster import roster_app
from config.directory.rosters import import_roster, load_roster
from config.wiring import AssembledEngine
from escalation.rosters import coverage_gaps, on_duty
from tests.conftest import SmallCounty, build_small_county
from tests.harness import outbox, sandbox_engine

pytestmark = pytest.mark.both_databases

HEADER = "单位代码,值班人员,顺位,开始,结束\n"
# 凤凰镇's night officer hands over to the day officer at 08:00 on 2 July (Asia/Shanghai)
HANDOVER = (
    HEADER
    + "500238101,tw-duty,值班,2026-07-01 20:00,2026-07-02 08:00\n"
    + "500238101,tw-backup,值班,2026-07-02 08:00,2026-07-02 20:00\n"
)


async def import_text(db: Database, path: Path, text: str) -> None:
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    await import_roster(db, await load_roster([path]), actor="admin", at=datetime(2026, 6, 30, tzinfo=UTC))


def shanghai(text: str) -> datetime:
    """'2026-07-02 07:45' in Asia/Shanghai, as the UTC instant the clock and the store use."""
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


@pytest.fixture
async def night_engine(
    db: Database, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[AssembledEngine, ManualClock]]:
    clock = ManualClock(start=shanghai(request.param))
    await build_small_county(db)
    e = sandbox_engine(db, clock)
    await e.start(loops=False)
    yield e, clock
    await e.stop()


@pytest.mark.parametrize(
    ("night_engine", "reached"),
    [("2026-07-02 07:45", "tw-backup"), ("2026-07-02 07:25", "tw-duty")],
    indirect=["night_engine"],
)
async def test_the_township_duty_step_reaches_whoever_is_on_duty_when_it_fires(
    night_engine: tuple[AssembledEngine, ManualClock], reached: str, tmp_path: Path
) -> None:
    engine, clock = night_engine
    await import_text(engine.db, tmp_path / "凤凰镇值班表.csv", HANDOVER)
    issued = await engine.alerts.trigger(
        AlertRequest(
            level=Level.RED,
            hazard="山洪",
            title="东坪村山洪红色预警",
            text="上游降雨超过100毫米，山洪可能在1小时内到达。",
            units=["50023810100101"],
        ),
        actor="duty:test",
    )
    await engine.settle()
    for _ in range(4):  # g1 stays silent: redial, backup, parent, then the township on duty 20 minutes in
        clock.advance(minutes=5)
        await engine.settle()

    assert outbox(engine, ChannelKind.VOICE) == ["g1", "g1", "v1-deputy", "v1-head", reached]
    async with engine.db.session() as s:
        steps = (
            await s.execute(
                select(AuditEvent).where(
                    col(AuditEvent.alert_id) == issued.alert_id, col(AuditEvent.kind) == "target.escalated"
                )
            )
        ).scalars()
        township_step = next(e for e in steps if e.data["who"] == "township_duty")
    assert township_step.data["step"] == 4
    assert township_step.data["contacts"] == [reached]


async def test_on_duty_prefers_the_roster_and_falls_back_to_the_duty_person(
    db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    roster = HEADER + "500238101,tw-backup,值班,2026-07-02 08:00,2026-07-02 20:00\n"
    roster += "500238101,county-backup,备班,2026-07-02 20:00,2026-07-03 08:00\n"  # a backup alone at night
    await import_text(db, tmp_path / "r.csv", roster)
    async with db.session() as s:
        day = await on_duty(s, county.township, Role.TOWNSHIP_DUTY, shanghai("2026-07-02 12:00"))
        night = await on_duty(s, county.township, Role.TOWNSHIP_DUTY, shanghai("2026-07-02 23:00"))
        later = await on_duty(s, county.township, Role.TOWNSHIP_DUTY, shanghai("2026-07-03 09:00"))
    assert (day, night, later) == (["tw-backup"], ["county-backup"], ["tw-duty"])


async def test_a_gap_tonight_is_reported_in_local_time_and_a_unit_without_roster_falls_back(
    db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    roster = HEADER + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n"
    roster += "500238101,tw-backup,备班,2026-07-01 20:00,2026-07-02 08:00\n"  # a backup does not cover alone
    roster += "500238101,tw-backup,值班,2026-07-02 08:00,2026-07-02 20:00\n"
    await import_text(db, tmp_path / "r.csv", roster)

    gaps = await coverage_gaps(db, now=shanghai("2026-07-01 10:00"), hours=24)

    county_gap, township_gap = gaps
    assert (county_gap.unit_code, county_gap.no_roster, county_gap.covered_by_fallback) == ("500238", True, True)
    assert county_gap.fallback_name == "县值班室"
    assert (township_gap.unit_name, township_gap.no_roster, township_gap.covered_by_fallback) == (
        "凤凰镇",
        False,
        False,
    )
    assert (township_gap.starts_at, township_gap.ends_at) == (
        shanghai("2026-07-01 20:00"),
        shanghai("2026-07-02 08:00"),
    )
    assert "2026-07-01 20:00:00 – 2026-07-02 08:00:00" in township_gap.describe()
    assert "凤凰镇值班员 (tw-duty)" in township_gap.describe()  # who a step reaches meanwhile


async def test_a_unit_without_roster_or_duty_person_is_a_gap(db: Database, county: SmallCounty) -> None:
    async with db.session() as s:
        await s.execute(delete(Responsibility).where(col(Responsibility.unit_code) == county.county))
    gaps = await coverage_gaps(db, now=shanghai("2026-07-01 10:00"), hours=6)
    county_gap = next(g for g in gaps if g.unit_code == county.county)
    assert county_gap.no_roster
    assert county_gap.fallback_id is None
    assert not county_gap.covered_by_fallback


async def test_roster_check_prints_the_gaps_and_exits_1_until_the_night_is_covered(
    db: Database, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    day = HEADER + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n"
    await import_text(db, tmp_path / "day.csv", day + "500238101,tw-duty,值班,2026-07-02 08:00,2026-07-02 20:00\n")
    runner = CliRunner()
    check = ["check", "--from", "2026-07-01 10:00", "--hours", "24"]

    found = await asyncio.to_thread(runner.invoke, roster_app, check)
    assert found.exit_code == 1, found.output
    assert "凤凰镇" in found.output
    assert "2026-07-01 20:00" in found.output
    assert "2026-07-02 08:00" in found.output
    assert "1 gap(s) in 1 unit(s)" in found.output
    assert "no roster" in found.output  # the county, falling back to its duty room

    await import_text(
        db, tmp_path / "night.csv", HEADER + "500238101,tw-backup,值班,2026-07-01 20:00,2026-07-02 08:00\n"
    )
    covered = await asyncio.to_thread(runner.invoke, roster_app, check)
    assert covered.exit_code == 0, covered.output
    assert "Every township and the county has someone on duty" in covered.output
