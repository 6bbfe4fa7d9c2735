"""What a duty officer does to a running alert: call again, answer on behalf, lift, change level; and who may."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole
from alerting.model.domain import DeliveryState, Purpose
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Delivery, Target
from alerting.web.api.auth import key_label
from config.wiring import AssembledEngine
from tests.alerting.board_setup import (
    AUDITOR,
    DUTY,
    FENGHUANG,
    NINGCHANG,
    TOWNSHIP,
    alert_body,
    issue,
    signed_in,
)

pytestmark = pytest.mark.both_databases

PROBLEM = "application/problem+json"


async def target_of(db: Database, alert_id: int, person_id: str) -> Target:
    async with db.session() as s:
        t = (
            await s.execute(select(Target).where(col(Target.alert_id) == alert_id, col(Target.person_id) == person_id))
        ).scalar_one()
    return t


async def deliveries_to(db: Database, alert_id: int, target_id: str) -> list[Delivery]:
    async with db.session() as s:
        return list(
            (
                await s.execute(
                    select(Delivery)
                    .where(col(Delivery.alert_id) == alert_id, col(Delivery.target_id) == target_id)
                    .order_by(col(Delivery.created_at))
                )
            ).scalars()
        )


async def audit_of(db: Database, kind: str) -> list[AuditEvent]:
    async with db.session() as s:
        return list((await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == kind))).scalars())


async def test_call_again_queues_fresh_warnings_for_one_silent_recipient(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    g2 = await target_of(engine.core.db, alert_id, "g2")
    before = await deliveries_to(engine.core.db, alert_id, g2.id)
    assert before and all(d.state == DeliveryState.SENT.value for d in before)

    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"target_ids": [g2.id]}, headers=DUTY)
    assert r.status_code == 200, r.text
    done = r.json()
    # 网格员乙 has a phone but no WeCom: the red first wave's voice call and SMS again
    assert (done["targets"], done["by_channel"], done["skipped"]) == (1, {"voice": 1, "sms": 1}, 0)
    fresh = [d for d in await deliveries_to(engine.core.db, alert_id, g2.id) if d.id not in {b.id for b in before}]
    assert sorted(d.channel for d in fresh) == ["sms", "voice"]
    assert all(d.state == DeliveryState.PENDING.value and d.purpose == Purpose.WARN.value for d in fresh)
    [entry] = await audit_of(engine.core.db, "alert.called_again")
    assert (entry.actor, entry.alert_id, entry.subject) == (f"api:duty:{key_label('k-duty-0001')}", alert_id, g2.id)
    assert entry.data["targets"] == [g2.id]

    # asked again before those went out: nothing is queued twice
    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"target_ids": [g2.id]}, headers=DUTY)
    assert (r.json()["deliveries"], r.json()["skipped"]) == (0, 1)
    await engine.dispatcher.drain()
    sent = [d for d in await deliveries_to(engine.core.db, alert_id, g2.id) if d.id in {f.id for f in fresh}]
    assert {d.state for d in sent} == {DeliveryState.SENT.value}


async def test_call_again_skips_whoever_answered(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    g1 = await target_of(engine.core.db, alert_id, "g1")
    r = await api.post(
        f"/api/v1/alerts/{alert_id}/recipients/{g1.id}/answer", json={"reason": "电话确认"}, headers=DUTY
    )
    assert r.status_code == 200
    count = len(await deliveries_to(engine.core.db, alert_id, g1.id))
    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"target_ids": [g1.id]}, headers=DUTY)
    assert (r.json()["targets"], r.json()["deliveries"], r.json()["skipped"]) == (0, 0, 1)
    assert len(await deliveries_to(engine.core.db, alert_id, g1.id)) == count


async def test_call_again_for_all_silent_stays_inside_the_township(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG, NINGCHANG])
    await engine.dispatcher.drain()
    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"all_silent": True}, headers=TOWNSHIP)
    assert r.status_code == 200, r.text
    [entry] = await audit_of(engine.core.db, "alert.called_again")
    called = set(entry.data["targets"])
    nc = {(await target_of(engine.core.db, alert_id, p)).id for p in ("nc-duty", "nc-head")}
    assert called and not called & nc
    assert (await target_of(engine.core.db, alert_id, "g3")).id in called
    assert entry.actor == f"api:township:{key_label('k-town-0004')}"


async def test_call_again_dry_run_counts_and_sends_nothing(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    body = {"all_silent": True, "dry_run": True}
    would = (await api.post(f"/api/v1/alerts/{alert_id}/call-again", json=body, headers=DUTY)).json()
    assert would["deliveries"] > 0 and sum(would["by_channel"].values()) == would["deliveries"]
    assert await audit_of(engine.core.db, "alert.called_again") == []
    done = (await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"all_silent": True}, headers=DUTY)).json()
    assert (done["targets"], done["deliveries"], done["by_channel"]) == (
        would["targets"],
        would["deliveries"],
        would["by_channel"],
    )


async def test_call_again_needs_targets_or_all_silent(api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={}, headers=DUTY)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"target_ids": ["nope"]}, headers=DUTY)
    assert r.status_code == 404
    r = await api.post(f"/api/v1/alerts/{alert_id}/call-again", json={"all_silent": True}, headers=AUDITOR)
    assert r.status_code == 403


async def test_answer_on_behalf_needs_a_reason_and_is_audited(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    g3 = await target_of(engine.core.db, alert_id, "g3")
    url = f"/api/v1/alerts/{alert_id}/recipients/{g3.id}/answer"
    r = await api.post(url, json={"reason": "   "}, headers=DUTY)
    assert r.status_code == 422
    assert "reason" in r.text
    assert (await target_of(engine.core.db, alert_id, "g3")).state == "open"
    r = await api.post(url, json={"reason": "已电话联系，本人确认收到"}, headers=DUTY)
    assert r.status_code == 200
    assert (r.json()["counted"], r.json()["state"]) == (True, "answered_for")
    [entry] = await audit_of(engine.core.db, "target.answered_for")
    assert (entry.actor, entry.subject, entry.data["reason"]) == (
        f"api:duty:{key_label('k-duty-0001')}",
        g3.id,
        "已电话联系，本人确认收到",
    )


async def test_a_township_key_is_kept_inside_its_subtree(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    elsewhere = await issue(api, [NINGCHANG], title="宁厂镇山洪")
    both = await issue(api, [FENGHUANG, NINGCHANG], title="两镇山洪")
    own = await issue(api, [FENGHUANG], title="凤凰镇山洪")

    listed = (await api.get("/api/v1/alerts", headers=TOWNSHIP)).json()
    assert {a["id"] for a in listed["items"]} == {both, own} and listed["total"] == 2
    for path in ("", "/recipients"):
        r = await api.get(f"/api/v1/alerts/{elsewhere}{path}", headers=TOWNSHIP)
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    people = (await api.get(f"/api/v1/alerts/{both}/recipients", headers=TOWNSHIP)).json()
    assert people["items"] and all(p["person_id"] not in ("nc-duty", "nc-head") for p in people["items"])
    everyone = (await api.get(f"/api/v1/alerts/{both}/recipients", headers=DUTY)).json()
    assert everyone["total"] == people["total"] + 2
    progress = (await api.get(f"/api/v1/alerts/{both}", headers=TOWNSHIP)).json()["progress"]
    assert progress["total"] == people["total"]

    nc_head = await target_of(engine.core.db, both, "nc-head")
    r = await api.post(f"/api/v1/alerts/{both}/recipients/{nc_head.id}/answer", json={"reason": "x"}, headers=TOWNSHIP)
    assert r.status_code == 403
    r = await api.post(f"/api/v1/alerts/{both}/call-again", json={"target_ids": [nc_head.id]}, headers=TOWNSHIP)
    assert r.status_code == 403
    r = await api.post(f"/api/v1/alerts/{elsewhere}/call-again", json={"all_silent": True}, headers=TOWNSHIP)
    assert r.status_code == 404
    r = await api.post(f"/api/v1/alerts/{both}/cancel", json={"reason": "雨停"}, headers=TOWNSHIP)
    assert r.status_code == 403 and "500238102" in r.json()["detail"]
    r = await api.post(f"/api/v1/alerts/{both}/update", json={"level": "orange"}, headers=TOWNSHIP)
    assert r.status_code == 403
    r = await api.post("/api/v1/alerts", json=alert_body([NINGCHANG]), headers=TOWNSHIP)
    assert r.status_code == 403
    assert (await target_of(engine.core.db, both, "nc-head")).state == "open"

    # inside its own township it issues, lifts and updates
    r = await api.post("/api/v1/alerts", json=alert_body(["500238101001"]), headers=TOWNSHIP)
    assert r.status_code == 201
    r = await api.post(f"/api/v1/alerts/{own}/update", json={"level": "orange"}, headers=TOWNSHIP)
    assert r.status_code == 201
    r = await api.post(f"/api/v1/alerts/{r.json()['id']}/cancel", json={"reason": "雨停"}, headers=TOWNSHIP)
    assert r.status_code == 200


async def console(
    engine: AssembledEngine, name: str, role: AccountRole, unit: str | None = None
) -> tuple[httpx.AsyncClient, str]:
    from alerting.web.app import create_app

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine.core)), base_url="http://jy.test")
    csrf = await signed_in(engine.core, client, name, role, unit)
    return client, csrf


async def test_console_actions_redirect_back_with_a_notice(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    g1 = await target_of(engine.core.db, alert_id, "g1")
    duty, csrf = await console(engine, "duty", AccountRole.DUTY)
    async with duty:
        r = await duty.post(f"/console/alerts/{alert_id}/call-again", data={"target_id": g1.id})
        assert r.status_code == 403  # no CSRF token

        r = await duty.post(
            f"/console/alerts/{alert_id}/call-again", data={"csrf": csrf, "target_id": g1.id, "back": "/console/"}
        )
        assert (r.status_code, r.headers["location"]) == (303, "/console/")
        assert "已立即重呼 1 人" in httpx.URL("http://x/?n=" + r.cookies["jy_notice"]).params["n"]

        url = f"/console/alerts/{alert_id}/recipients/{g1.id}/answer"
        r = await duty.post(url, data={"csrf": csrf, "reason": " "})
        assert r.status_code == 303
        assert "请填写原因" in httpx.URL("http://x/?n=" + r.cookies["jy_notice"]).params["n"]
        assert (await target_of(engine.core.db, alert_id, "g1")).state == "open"
        r = await duty.post(url, data={"csrf": csrf, "reason": "村主任当面转告"})
        assert (r.status_code, r.headers["location"]) == (303, f"/console/alerts/{alert_id}")
        after = await target_of(engine.core.db, alert_id, "g1")
        assert (after.state, after.answered_by) == ("answered_for", "user:duty")
        page = (await duty.get(f"/console/alerts/{alert_id}")).text
        assert "代为确认" in page and "村主任当面转告" in page

        r = await duty.post(f"/console/alerts/{alert_id}/cancel", data={"csrf": csrf, "reason": ""})
        async with engine.core.db.session() as s:
            assert (await s.get(Alert, alert_id)).status == "active"  # type: ignore[union-attr]
        r = await duty.post(f"/console/alerts/{alert_id}/update", data={"csrf": csrf, "level": "orange"})
        assert r.status_code == 303
        new_id = int(r.headers["location"].rsplit("/", 1)[1])
        assert new_id != alert_id
        async with engine.core.db.session() as s:
            new = await s.get(Alert, new_id)
            assert new is not None and (new.level, new.supersedes_id) == ("orange", alert_id)
        page = (await duty.get(f"/console/alerts/{new_id}")).text
        assert f'href="/console/alerts/{alert_id}"' in page  # the chain
        r = await duty.post(f"/console/alerts/{new_id}/cancel", data={"csrf": csrf, "reason": "雨停，解除"})
        assert r.status_code == 303
        async with engine.core.db.session() as s:
            ended = await s.get(Alert, new_id)
            assert ended is not None and (ended.status, ended.end_reason) == ("cancelled", "雨停，解除")
        [entry] = await audit_of(engine.core.db, "alert.cancelled")
        assert entry.actor == "user:duty"


async def test_console_refuses_a_township_officer_outside(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    elsewhere = await issue(api, [NINGCHANG])
    both = await issue(api, [FENGHUANG, NINGCHANG])
    nc_head = await target_of(engine.core.db, both, "nc-head")
    town, csrf = await console(engine, "fenghuang", AccountRole.TOWNSHIP, FENGHUANG)
    async with town:
        r = await town.post(f"/console/alerts/{elsewhere}/cancel", data={"csrf": csrf, "reason": "雨停"})
        assert r.status_code == 404
        r = await town.post(f"/console/alerts/{both}/cancel", data={"csrf": csrf, "reason": "雨停"})
        assert r.status_code == 403 and "辖区以外" in r.text
        r = await town.post(
            f"/console/alerts/{both}/recipients/{nc_head.id}/answer", data={"csrf": csrf, "reason": "电话确认"}
        )
        assert r.status_code == 403
    async with engine.core.db.session() as s:
        assert {a.status for a in (await s.execute(select(Alert))).scalars()} == {"active"}
    assert (await target_of(engine.core.db, both, "nc-head")).state == "open"


def notice_of(r: httpx.Response) -> str:
    return httpx.URL("http://x/?n=" + r.cookies["jy_notice"]).params["n"]


async def test_an_update_that_changes_nothing_or_raises_to_red_unconfirmed_is_refused(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG], level="yellow")
    r = await api.post(f"/api/v1/alerts/{alert_id}/update", json={"level": "yellow"}, headers=DUTY)
    assert r.status_code == 422 and r.json()["type"].endswith("alert-unchanged")

    duty, csrf = await console(engine, "duty", AccountRole.DUTY)
    async with duty:
        r = await duty.post(f"/console/alerts/{alert_id}/update", data={"csrf": csrf, "level": "yellow"})
        assert "没有任何改动" in notice_of(r)
        r = await duty.post(f"/console/alerts/{alert_id}/update", data={"csrf": csrf, "level": "red"})
        assert "须勾选" in notice_of(r)
        async with engine.core.db.session() as s:
            still = await s.get(Alert, alert_id)
            assert still is not None and (still.status, still.level) == ("active", "yellow")  # nothing re-issued

        confirmed = {"csrf": csrf, "level": "red", "confirm_red": "1"}
        r = await duty.post(f"/console/alerts/{alert_id}/update", data=confirmed)
        new_id = int(r.headers["location"].rsplit("/", 1)[1])
    async with engine.core.db.session() as s:
        raised = await s.get(Alert, new_id)
        assert raised is not None and (raised.level, raised.supersedes_id) == ("red", alert_id)
