"""The board's alarm facts: what the console sounds for is read from the store, not guessed in the browser.

A new alert sounds for its first ten minutes; a silent person whose target reached the last escalation step
(the county duty room in the default red plan, 20 to 25 minutes in) raises it further, and one still silent after
that step's wait (five minutes) further again. Time passes on the injected clock."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole, Principal
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import TargetKind, TargetState
from alerting.store.db import Database
from alerting.store.tables import Target
from alerting.views.board import AlarmLevel, read_board
from config.wiring import AssembledEngine
from tests.alerting.board_setup import DUTY, FENGHUANG, NINGCHANG, TOWNSHIP, issue

pytestmark = pytest.mark.both_databases

LAST = 5  # the default red plan: first wave, redial, backup, parent, township duty, county duty room


async def open_people(db: Database, alert_id: int, *, at_step: int) -> list[Target]:
    async with db.session() as s:
        rows = await s.execute(
            select(Target).where(
                col(Target.alert_id) == alert_id,
                col(Target.kind) == TargetKind.PERSON.value,
                col(Target.state) == TargetState.OPEN.value,
                col(Target.step) == at_step,
            )
        )
        return list(rows.scalars())


async def alarm_in_api(api: httpx.AsyncClient, alert_id: int, key: dict[str, str] = DUTY) -> dict[str, object]:
    board = (await api.get("/api/v1/board", headers=key)).json()
    alarm: dict[str, object] = next(a for a in board["alerts"] if a["id"] == alert_id)["alarm"]
    return alarm


async def minutes_pass(engine: AssembledEngine, clock: ManualClock, minutes: int) -> None:
    """Minute by minute, every escalation step due on the way runs and its messages go out."""
    for _ in range(minutes):
        clock.advance(minutes=1)
        await engine.escalation.run_due()
        await engine.dispatcher.drain()


async def test_a_new_alert_then_the_county_step_then_past_it_raise_the_alarm(
    engine: AssembledEngine, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    alert_id = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await engine.dispatcher.drain()
    alarm = await alarm_in_api(api, alert_id)
    assert (alarm["level"], alarm["new"], alarm["at_last_step"], alarm["past_last_step"]) == (1, True, 0, 0)
    assert alarm["label"] == "新预警" and alarm["text"] == "新预警：凤凰镇山洪"
    assert alarm["last_step_who"] == "县值班室"

    await minutes_pass(engine, clock, 11)  # no longer new, and nobody near the end of the plan
    alarm = await alarm_in_api(api, alert_id)
    assert (alarm["level"], alarm["new"], alarm["at_last_step"]) == (0, False, 0)

    # minute by minute until the county duty room's step first runs for someone silent (20 minutes for those
    # whose backup step reached nobody, 25 for the others): they are at the last step, not yet past it
    at_county: list[Target] = []
    for _ in range(20):
        await minutes_pass(engine, clock, 1)
        if at_county := await open_people(engine.core.db, alert_id, at_step=LAST):
            break
    assert at_county, "nobody reached the county step: the test's clock did not move the escalation"
    alarm = await alarm_in_api(api, alert_id)
    assert (alarm["level"], alarm["at_last_step"], alarm["past_last_step"]) == (2, len(at_county), 0)
    assert alarm["text"] == f"{len(at_county)} 人已升级到最后一步（县值班室），仍未应答"

    # the duty officer answers for one of them: one fewer at the end of the plan
    await engine.core.acks.answer_on_behalf(
        alert_id, at_county[0].id, by=Actor.officer("user:duty"), reason="电话确认", at=clock.now()
    )
    assert (await alarm_in_api(api, alert_id))["at_last_step"] == len(at_county) - 1

    await minutes_pass(engine, clock, 5)  # the county step's wait (300 s in the red plan) ran out for them
    alarm = await alarm_in_api(api, alert_id)
    assert alarm["level"] == AlarmLevel.PAST_LAST_STEP
    assert alarm["past_last_step"] == len(at_county) - 1, "the ones who reached the county step first are past it"
    assert alarm["text"] == f"{len(at_county) - 1} 人在最后一步（县值班室）等待已超时，仍未应答"


async def test_a_township_officer_s_alarm_counts_only_their_township(
    engine: AssembledEngine, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    alert_id = await issue(api, [FENGHUANG, NINGCHANG], title="两镇山洪")
    await engine.dispatcher.drain()
    await minutes_pass(engine, clock, 25)
    everyone = await open_people(engine.core.db, alert_id, at_step=LAST)
    async with engine.core.db.session() as s:
        inside = [t for t in everyone if (await s.get(Target, t.id)) and t.unit_code.startswith(FENGHUANG)]
    assert 0 < len(inside) < len(everyone)
    assert (await alarm_in_api(api, alert_id))["at_last_step"] == len(everyone)
    assert (await alarm_in_api(api, alert_id, TOWNSHIP))["at_last_step"] == len(inside)


async def test_an_ended_alert_sounds_nothing_and_the_board_reads_the_same_as_the_api(
    engine: AssembledEngine, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    alert_id = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await engine.dispatcher.drain()
    duty = Principal(AccountRole.DUTY, "user:duty", "王值班")
    board = await read_board(engine.core.db, duty, now=clock.now())
    assert [a.alarm.level for a in board.alerts] == [AlarmLevel.NEW]
    r = await api.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": "雨停"}, headers=DUTY)
    assert r.status_code == 200, r.text
    board = await read_board(engine.core.db, duty, now=clock.now())
    assert board.alerts == []
