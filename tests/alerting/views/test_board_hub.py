"""The board hub: one read per change and scope, every screen kept current, a slow one holding nobody."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole, Principal
from alerting.model.domain import ChannelKind
from alerting.store.db import Database
from alerting.store.tables import Delivery
from alerting.views import board as board_module
from alerting.views import board_hub as board_hub_module
from alerting.views.board import Board
from alerting.views.board_hub import BoardHub
from config.wiring import AssembledEngine
from tests.alerting.board_setup import FENGHUANG, issue

pytestmark = pytest.mark.both_databases

OFFICERS = [Principal(AccountRole.DUTY, f"user:d{i}", "值班员") for i in range(10)]


@pytest.fixture
async def hub(engine: AssembledEngine) -> AsyncGenerator[BoardHub, None]:
    hub = BoardHub(engine.core.db, engine.core.clock, poll_s=0.02, min_gap_s=0.02, linger_s=0.2)
    yield hub
    await hub.close()


async def sms_of(db: Database, alert_id: int) -> list[Delivery]:
    async with db.session() as s:
        found = await s.execute(
            select(Delivery)
            .where(col(Delivery.alert_id) == alert_id, col(Delivery.channel) == ChannelKind.SMS.value)
            .order_by(col(Delivery.id))
        )
        return list(found.scalars())


async def answer(engine: AssembledEngine, delivery: Delivery) -> None:
    await engine.core.acks.answer_delivery(delivery.id, channel=ChannelKind.SMS, at=engine.core.clock.now())


async def until_answered(screen: AsyncGenerator[Board | None, None], count: int) -> Board:
    while True:
        board = await asyncio.wait_for(anext(screen), 5)
        if board is not None and board.alerts[0].totals.answered >= count:
            return board


async def test_ten_screens_see_every_answer_from_one_read_per_change(
    engine: AssembledEngine, api: httpx.AsyncClient, hub: BoardHub, reads: list[str | None]
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    screens = [hub.follow(p) for p in OFFICERS]
    await asyncio.gather(*(anext(s) for s in screens))
    assert reads == [None]  # ten screens opened: one read

    sms = await sms_of(engine.core.db, alert_id)
    for n, delivery in enumerate(sms[:4], start=1):
        await answer(engine, delivery)
        seen = await asyncio.gather(*(until_answered(s, n) for s in screens))
        assert {b.alerts[0].totals.answered for b in seen} == {n}
    # one read per change or so (an answer may move the audit twice), never one per screen per change
    assert len(reads) <= 1 + 2 * 4 < len(screens) * 4
    for s in screens:
        await s.aclose()


async def test_a_screen_that_stops_reading_holds_nobody_back(
    engine: AssembledEngine, api: httpx.AsyncClient, hub: BoardHub
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    stuck, live = hub.follow(OFFICERS[0]), hub.follow(OFFICERS[1])
    await anext(stuck)
    await anext(live)
    sms = await sms_of(engine.core.db, alert_id)
    for n, delivery in enumerate(sms[:3], start=1):
        await answer(engine, delivery)
        assert (await until_answered(live, n)).alerts[0].totals.answered == n
    # the stuck screen, when it reads again, gets the newest board, not the three it missed
    assert (await asyncio.wait_for(anext(stuck), 5)).alerts[0].totals.answered == 3  # type: ignore[union-attr]
    for s in (stuck, live):
        await s.aclose()


async def test_a_poll_includes_what_was_committed_before_it(
    engine: AssembledEngine, api: httpx.AsyncClient, reads: list[str | None]
) -> None:
    hub = BoardHub(engine.core.db, engine.core.clock, poll_s=5.0, min_gap_s=0.05)  # the reader rarely looks itself
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    assert (await hub.latest(OFFICERS[0])).alerts[0].totals.answered == 0
    for n, delivery in enumerate((await sms_of(engine.core.db, alert_id))[:3], start=1):
        await answer(engine, delivery)
        assert (await hub.latest(OFFICERS[n])).alerts[0].totals.answered == n
    # nothing changed since: polls are answered from the last read
    before = len(reads)
    await asyncio.gather(*(hub.latest(p) for p in OFFICERS))
    assert len(reads) == before
    await hub.close()


async def test_a_township_is_read_apart_from_the_county(
    engine: AssembledEngine, api: httpx.AsyncClient, hub: BoardHub, reads: list[str | None]
) -> None:
    await issue(api, [FENGHUANG])
    town = Principal(AccountRole.TOWNSHIP, "user:t", "镇", FENGHUANG, f"/500238/{FENGHUANG}/")
    county, mine = await asyncio.gather(hub.latest(OFFICERS[0]), hub.latest(town))
    assert sorted(reads, key=str) == sorted([None, town.unit_path], key=str)
    assert [t.code for t in mine.alerts[0].townships] == [FENGHUANG]
    assert county.alerts[0].id == mine.alerts[0].id


async def test_nobody_looking_means_no_reads(
    engine: AssembledEngine, api: httpx.AsyncClient, hub: BoardHub, reads: list[str | None]
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    await hub.latest(OFFICERS[0])
    await asyncio.sleep(0.5)  # linger_s 0.2 has passed: the reader has stopped
    before = len(reads)
    await answer(engine, (await sms_of(engine.core.db, alert_id))[0])
    await asyncio.sleep(0.2)
    assert len(reads) == before
    assert (await hub.latest(OFFICERS[0])).alerts[0].totals.answered == 1  # and the next look starts it again


async def test_a_failed_read_is_reported_to_the_poller_and_the_next_one_works(
    engine: AssembledEngine, api: httpx.AsyncClient, hub: BoardHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    await issue(api, [FENGHUANG])
    real_read = board_module.read_board
    broken = True  # every read fails until the poller has been told: the hub's reader may try before it asks

    async def flaky(db: Database, principal: Principal, *, now: datetime) -> Board:
        if broken:
            raise RuntimeError("database is locked")
        return await real_read(db, principal, now=now)

    monkeypatch.setattr(board_hub_module, "read_board", flaky)
    with pytest.raises(RuntimeError, match="database is locked"):
        await asyncio.wait_for(hub.latest(OFFICERS[0]), 5)
    broken = False
    assert (await asyncio.wait_for(hub.latest(OFFICERS[0]), 5)).alerts
