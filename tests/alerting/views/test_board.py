"""The live board and the alert detail page: numbers per township, the silent first, live updates, scope."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole, Principal
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from alerting.store.db import Database
from alerting.store.tables import Delivery, OrgUnit, Target
from alerting.views.board import read_board
from alerting.views.board_hub import BoardHub
from alerting.web.console.board_pages import board_stream
from config.wiring import AssembledEngine
from tests.alerting.board_setup import (
    DUTY,
    FENGHUANG,
    NINGCHANG,
    TOWNSHIP,
    issue,
    signed_in,
)
from tests.harness import RED as HARNESS_RED

pytestmark = pytest.mark.both_databases


async def targets_by_township(db: Database, alert_id: int) -> dict[str, list[Target]]:
    async with db.session() as s:
        rows = (
            await s.execute(
                select(Target, col(OrgUnit.path))
                .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
                .where(col(Target.alert_id) == alert_id)
            )
        ).all()
    found: dict[str, list[Target]] = {}
    for t, path in rows:
        parts = [p for p in path.split("/") if p]
        found.setdefault(parts[1] if len(parts) > 1 else "county", []).append(t)
    return found


async def first_delivery(db: Database, alert_id: int, person_id: str) -> Delivery:
    async with db.session() as s:
        d = (
            await s.execute(
                select(Delivery).where(
                    col(Delivery.alert_id) == alert_id,
                    col(Delivery.person_id) == person_id,
                    col(Delivery.channel) == ChannelKind.SMS.value,
                )
            )
        ).scalar_one()
    return d


async def test_the_board_counts_each_township_and_lists_the_silent(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG, NINGCHANG], title="两镇山洪")
    await engine.dispatcher.drain()
    expected = await targets_by_township(engine.core.db, alert_id)

    board = (await api.get("/api/v1/board", headers=DUTY)).json()
    mine = next(a for a in board["alerts"] if a["id"] == alert_id)
    rows = {t["code"]: t for t in mine["townships"]}
    assert set(rows) == {FENGHUANG, NINGCHANG}
    assert (rows[FENGHUANG]["name"], rows[NINGCHANG]["name"]) == ("凤凰镇", "宁厂镇")
    for code, row in rows.items():
        assert row["planned"] == len(expected[code])
        assert row["silent"] == len(expected[code])
        assert row["answered"] == 0
        assert row["sent"] == len(expected[code])  # the sandbox hands every first-wave message over
        assert row["delivered"] == 0  # and never claims one arrived
    assert mine["totals"]["planned"] == sum(len(v) for v in expected.values())
    assert mine["silent_total"] == mine["totals"]["planned"]

    # 网格员甲 answers through the link of their SMS: the board counts it and takes them off the silent list
    sms = await first_delivery(engine.core.db, alert_id, "g1")
    await engine.core.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=engine.core.clock.now())
    board = (await api.get("/api/v1/board", headers=DUTY)).json()
    mine = next(a for a in board["alerts"] if a["id"] == alert_id)
    rows = {t["code"]: t for t in mine["townships"]}
    assert rows[FENGHUANG]["answered"] == 1
    assert rows[FENGHUANG]["silent"] == len(expected[FENGHUANG]) - 1
    assert rows[NINGCHANG]["answered"] == 0
    assert "网格员甲" not in [r["name"] for r in mine["silent"]]
    assert "网格员乙" in [r["name"] for r in mine["silent"]]
    phones = [r["phone"] for r in mine["silent"] if r["name"] == "网格员乙"]
    assert phones == ["+86139****0009"]  # masked


async def test_a_township_officer_sees_only_their_subtree(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    both = await issue(api, [FENGHUANG, NINGCHANG], title="两镇山洪")
    elsewhere = await issue(api, [NINGCHANG], title="宁厂镇山洪")
    board = (await api.get("/api/v1/board", headers=TOWNSHIP)).json()
    assert [a["id"] for a in board["alerts"]] == [both]
    shown = board["alerts"][0]
    assert [t["code"] for t in shown["townships"]] == [FENGHUANG]
    assert all(r["unit_name"] not in ("宁厂镇", "宁河村") for r in shown["silent"])
    # the county sees both alerts
    county = (await api.get("/api/v1/board", headers=DUTY)).json()
    assert {both, elsewhere} <= {a["id"] for a in county["alerts"]}


async def test_ended_alerts_stay_on_the_board_for_a_day(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    r = await api.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": "雨停"}, headers=DUTY)
    assert r.status_code == 200
    board = (await api.get("/api/v1/board", headers=DUTY)).json()
    assert alert_id not in [a["id"] for a in board["alerts"]]
    assert [(e["id"], e["status_label"], e["end_reason"]) for e in board["ended"]] == [(alert_id, "已解除", "雨停")]
    assert isinstance(engine.core.clock, ManualClock)
    engine.core.clock.advance(hours=25)
    assert (await api.get("/api/v1/board", headers=DUTY)).json()["ended"] == []


async def test_the_stream_sends_a_snapshot_when_a_number_changes(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    officer = Principal(AccountRole.DUTY, "user:duty", "值班员")

    async def signed_in_still() -> bool:
        return True

    stream = board_stream(engine.core, officer, signed_in_still, poll_s=0.02)
    first = await asyncio.wait_for(anext(stream), 5)
    assert first.alerts[0].totals.answered == 0
    # nothing changes: nothing is sent
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(anext_task := asyncio.ensure_future(anext(stream))), 0.2)
    sms = await first_delivery(engine.core.db, alert_id, "g2")
    await engine.core.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=engine.core.clock.now())
    second = await asyncio.wait_for(anext_task, 5)
    assert second.alerts[0].totals.answered == 1
    assert second.alerts[0].totals.silent == first.alerts[0].totals.silent - 1
    await stream.aclose()


async def test_streams_of_one_scope_share_each_read_and_a_township_gets_its_own(
    engine: AssembledEngine, api: httpx.AsyncClient, reads: list[str | None]
) -> None:
    await issue(api, [FENGHUANG, NINGCHANG])
    hub = BoardHub(engine.core.db, engine.core.clock, poll_s=0.02, min_gap_s=0.02)

    async def alive() -> bool:
        return True

    county = [Principal(AccountRole.DUTY, f"user:d{i}", "值班员") for i in range(3)]
    town = Principal(AccountRole.TOWNSHIP, "user:t", "镇", FENGHUANG, f"/500238/{FENGHUANG}/")
    streams = [board_stream(engine.core, p, alive, hub=hub) for p in [*county, town]]
    firsts = await asyncio.gather(*(asyncio.wait_for(anext(st), 5) for st in streams))
    assert sorted(reads, key=str) == sorted([None, town.unit_path], key=str)  # one read per scope, not per screen
    assert firsts[0].fingerprint() == firsts[2].fingerprint()
    assert [t.code for t in firsts[3].alerts[0].townships] == [FENGHUANG]  # the township's own, never the county's
    for st in streams:
        await st.aclose()
    await hub.close()


async def test_the_board_page_shows_numbers_and_actions(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    page = await api.get("/console/")
    assert page.status_code == 200
    html = page.text
    assert "<h1>值守看板</h1>" in html
    assert f'data-alert="{alert_id}"' in html
    assert "凤凰镇山洪" in html and "演练" in html
    planned = len((await targets_by_township(engine.core.db, alert_id))[FENGHUANG])
    assert f'data-k="{alert_id}.total.planned" data-testid="total-planned">{planned}<' in html
    assert "立即重呼" in html and "代为确认" in html and "重呼全部未应答" in html
    assert '<meta http-equiv="refresh" content="30">' in html  # inside <noscript>
    assert "/static/board.js" in html


async def test_an_auditor_sees_the_board_without_actions(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await signed_in(engine.core, api, "audit", AccountRole.AUDITOR)
    html = (await api.get("/console/")).text
    assert "凤凰镇山洪" in html
    assert "立即重呼" not in html and "解除预警" not in html


async def test_the_detail_page_shows_each_recipients_timeline(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await engine.dispatcher.drain()
    sms = await first_delivery(engine.core.db, alert_id, "g1")
    await engine.core.acks.answer_delivery(
        sms.id, channel=ChannelKind.SMS, at=engine.core.clock.now(), feedback={"moved": 12, "note": "已转移"}
    )
    await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    page = await api.get(f"/console/alerts/{alert_id}")
    assert page.status_code == 200
    html = page.text
    assert "上游强降雨，河水暴涨。" in html and "立即转移沿河群众。" in html
    assert "网格员甲" in html and "转移 12 人" in html and "已转移" in html
    assert "应答“收到”" in html
    assert '<span class="pill">沙箱</span>' in html  # the sandbox deliveries say they reached nobody
    assert "预警设备" in html  # a red alert sounds the village sirens
    # silent first: the first recipient on the page has not answered
    first = html.index('data-testid="recipient"')
    assert "state-open" in html[first - 80 : first]

    silent = (await api.get(f"/console/alerts/{alert_id}", params={"show": "silent"})).text
    assert "网格员乙" in silent and "网格员甲" not in silent
    found = (await api.get(f"/console/alerts/{alert_id}", params={"q": "西坪"})).text
    assert "西坪村主任" in found and "网格员甲" not in found


async def test_the_detail_page_pages_through_many_recipients(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, ["500238"], title="全县山洪")
    await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    html = (await api.get(f"/console/alerts/{alert_id}")).text
    count = html.count('data-testid="recipient"')
    total = sum(len(v) for v in (await targets_by_township(engine.core.db, alert_id)).values())
    assert count == min(total, 50)


async def test_a_township_officer_gets_404_for_an_alert_outside(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    elsewhere = await issue(api, [NINGCHANG], title="宁厂镇山洪")
    both = await issue(api, [FENGHUANG, NINGCHANG], title="两镇山洪")
    await signed_in(engine.core, api, "fenghuang", AccountRole.TOWNSHIP, FENGHUANG)
    page = await api.get(f"/console/alerts/{elsewhere}")
    assert page.status_code == 404
    assert "宁厂镇山洪" not in page.text
    assert "宁厂镇山洪" not in (await api.get("/console/")).text
    detail = (await api.get(f"/console/alerts/{both}")).text
    assert "网格员甲" in detail
    assert "宁河村主任" not in detail and "宁厂镇值班员" not in detail


async def test_unknown_alert_is_a_404_page(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    page = await api.get("/console/alerts/99999")
    assert page.status_code == 404
    assert "没有编号为 99999 的预警" in page.text


async def test_the_board_is_empty_without_alerts(engine: AssembledEngine) -> None:
    board = await read_board(engine.core.db, Principal(AccountRole.DUTY, "t", "t"), now=engine.core.clock.now())
    assert board.alerts == [] and board.ended == []


async def test_the_silent_list_puts_people_before_devices_and_names_the_first_wave(
    engine: AssembledEngine, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    """The sirens and broadcast zones run out of steps within minutes, the people are still in their first wave:
    the officer still sees the people at the top of 未应答 (they are who can be phoned), each with township,
    village and grid, and a step reads 首轮, as in the issue preview, not 第 0 步."""
    alert_id = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await engine.dispatcher.drain()
    for _ in range(2):  # the devices' first window, then the resend's: their village heads get the task
        clock.advance(seconds=61)
        await engine.escalation.run_due()
        await engine.dispatcher.drain()

    board = (await api.get("/api/v1/board", headers=DUTY)).json()
    silent = next(a for a in board["alerts"] if a["id"] == alert_id)["silent"]
    kinds = [r["kind"] for r in silent]
    assert "device" in kinds and "person" in kinds
    assert kinds == sorted(kinds, key=lambda k: k != "person"), kinds  # every person before any device
    assert max(r["step"] for r in silent if r["kind"] == "device") > max(
        r["step"] for r in silent if r["kind"] == "person"
    )

    worker = next(r for r in silent if r["name"] == "网格员甲")
    assert worker["place"] == "凤凰镇 › 东坪村 › 第1网格"  # township, village and grid, not the grid alone

    await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    html = (await api.get("/console/")).text
    assert "首轮" in html and "第 0 步" not in html
    assert "凤凰镇 › 东坪村 › 第1网格" in html
    detail = (await api.get(f"/console/alerts/{alert_id}?show=silent")).text
    assert "第 0 步" not in detail and "凤凰镇 › 东坪村 › 第1网格" in detail


async def test_the_alert_page_names_who_issued_it(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    """By the account's name, not the audit's "user:wang"; an alert issued through the API says so."""
    await engine.core.accounts.create(
        "wang", "pass-word-0001", role=AccountRole.DUTY, display_name="王值班", unit_code=None, actor="test"
    )
    by_hand = await engine.alerts.trigger(HARNESS_RED, actor="user:wang")
    by_api = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    page = (await api.get(f"/console/alerts/{by_hand.alert_id}")).text
    assert "王值班" in page and "user:wang" not in page
    page = (await api.get(f"/console/alerts/{by_api}")).text
    assert "接口调用（县值班员）" in page and "api:duty" not in page


async def test_calling_all_silent_again_says_first_how_much_goes_out(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    """重呼全部未应答 opens a page that counts the messages and calls by channel, sending nothing yet; confirming
    sends exactly that many."""
    alert_id = await issue(api, [FENGHUANG], title="凤凰镇山洪")
    await engine.dispatcher.drain()

    async def deliveries() -> int:
        async with engine.core.db.session() as s:
            return len(list((await s.execute(select(Delivery).where(col(Delivery.alert_id) == alert_id))).scalars()))

    csrf = await signed_in(engine.core, api, "duty", AccountRole.DUTY)
    board = (await api.get("/console/")).text
    assert f'action="/console/alerts/{alert_id}/call-again"' in board and 'method="get"' in board
    before = await deliveries()
    page = await api.get(f"/console/alerts/{alert_id}/call-again", params={"back": "/console/"})
    assert page.status_code == 200
    would = int(page.text.split('data-testid="would-deliveries">')[1].split("<")[0])
    assert would > 0 and "短信" in page.text and f"确认重呼（{would} 条）" in page.text
    assert await deliveries() == before  # asking sent nothing

    done = await api.post(
        f"/console/alerts/{alert_id}/call-again", data={"csrf": csrf, "back": "/console/"}, follow_redirects=False
    )
    assert done.status_code == 303
    assert await deliveries() == before + would
