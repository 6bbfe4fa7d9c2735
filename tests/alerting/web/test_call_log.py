"""Click to call a silent person, then log how the call went in one step: 已接通 answers for them, 未接通 is put
on record and the loop stays open. The whole number is there to dial for whoever may act; an auditor reads it
masked, on the board, the alert page and the API alike."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Person, Target
from alerting.views.labels import CALL_ANSWERED_REASON
from config.wiring import AssembledEngine
from tests.alerting.board_setup import AUDITOR, DUTY, FENGHUANG, NINGCHANG, TOWNSHIP, issue
from tests.alerting.web.test_actions import console, target_of

pytestmark = pytest.mark.both_databases


async def phone_of(db: Database, person_id: str) -> str:
    async with db.session() as s:
        person = await s.get(Person, person_id)
    assert person is not None and person.phone
    return person.phone


async def calls_on_record(db: Database, target_id: str) -> list[AuditEvent]:
    async with db.session() as s:
        rows = await s.execute(
            select(AuditEvent)
            .where(col(AuditEvent.kind) == "target.called_no_answer", col(AuditEvent.subject) == target_id)
            .order_by(col(AuditEvent.seq))
        )
        return list(rows.scalars())


async def test_a_call_not_taken_is_on_record_and_the_loop_stays_open(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    g1 = await target_of(engine.core.db, alert_id, "g1")
    url = f"/api/v1/alerts/{alert_id}/recipients/{g1.id}/call"

    r = await api.post(url, json={"outcome": "no_answer", "note": "关机"}, headers=DUTY)
    assert r.status_code == 200, r.text
    assert (r.json()["outcome"], r.json()["counted"], r.json()["state"]) == ("no_answer", False, "open")
    assert (await target_of(engine.core.db, alert_id, "g1")).state == "open"
    [call] = await calls_on_record(engine.core.db, g1.id)
    phone = await phone_of(engine.core.db, "g1")
    assert call.data == {"outcome": "no_answer", "person": "g1", "dialled": mask_phone(phone), "note": "关机"}
    assert phone not in str(call.data), "the audit keeps the number masked"

    duty, _ = await console(engine, "duty", AccountRole.DUTY)
    async with duty:
        page = (await duty.get(f"/console/alerts/{alert_id}")).text
    assert page.count('data-testid="call"') == 1 and "打过电话，未接通</strong> · 值班员" in page and "关机" in page
    board = (await api.get("/api/v1/board", headers=DUTY)).json()
    assert g1.id in [r["target_id"] for r in board["alerts"][0]["silent"]], "still silent after a call not taken"

    r = await api.post(url, json={"outcome": "answered"}, headers=DUTY)
    assert (r.json()["counted"], r.json()["state"]) == (True, "answered_for")
    async with engine.core.db.session() as s:
        [entry] = (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "target.answered_for"))).scalars()
    assert (entry.subject, entry.data["reason"]) == (g1.id, CALL_ANSWERED_REASON)

    r = await api.post(url, json={"outcome": "answered"}, headers=DUTY)  # a second click changes nothing
    assert (r.status_code, r.json()["counted"]) == (200, False)
    assert len(await calls_on_record(engine.core.db, g1.id)) == 1


async def test_a_call_log_follows_the_rules_of_answering_on_behalf(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG, NINGCHANG])
    g1 = await target_of(engine.core.db, alert_id, "g1")
    outside = await target_of(engine.core.db, alert_id, "nc-head")
    url = f"/api/v1/alerts/{alert_id}/recipients/{{}}/call"

    r = await api.post(url.format(g1.id), json={"outcome": "no_answer"}, headers=AUDITOR)
    assert r.status_code == 403
    r = await api.post(url.format(outside.id), json={"outcome": "no_answer"}, headers=TOWNSHIP)
    assert r.status_code == 403, "a township officer cannot log calls outside their township"
    r = await api.post(url.format(g1.id), json={"outcome": "maybe"}, headers=DUTY)
    assert r.status_code == 422 and "outcome" in r.text
    async with engine.core.db.session() as s:
        device = (
            (await s.execute(select(Target).where(col(Target.alert_id) == alert_id, col(Target.person_id).is_(None))))
            .scalars()
            .first()
        )
    assert device is not None
    r = await api.post(url.format(device.id), json={"outcome": "no_answer"}, headers=DUTY)
    assert r.status_code == 404 and "device" in r.text
    assert await calls_on_record(engine.core.db, g1.id) == []
    assert await calls_on_record(engine.core.db, outside.id) == []


async def test_the_number_to_dial_is_whole_for_who_may_act_and_masked_for_the_auditor(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    g1 = await target_of(engine.core.db, alert_id, "g1")
    phone = await phone_of(engine.core.db, "g1")

    def silent_g1(board: dict[str, object]) -> dict[str, object]:
        alerts = board["alerts"]
        assert isinstance(alerts, list)
        return next(r for r in alerts[0]["silent"] if r["target_id"] == g1.id)

    duty_row = silent_g1((await api.get("/api/v1/board", headers=DUTY)).json())
    auditor_row = silent_g1((await api.get("/api/v1/board", headers=AUDITOR)).json())
    assert (duty_row["dial"], duty_row["phone"]) == (phone, mask_phone(phone))
    assert (auditor_row["dial"], auditor_row["phone"]) == (None, mask_phone(phone))

    duty, csrf = await console(engine, "duty", AccountRole.DUTY)
    auditor, _ = await console(engine, "audit", AccountRole.AUDITOR)
    async with duty, auditor:
        for page in ("/console/", f"/console/alerts/{alert_id}"):
            assert f'href="tel:{phone}"' in (await duty.get(page)).text
            seen = (await auditor.get(page)).text
            assert phone not in seen and mask_phone(phone) in seen

        r = await duty.post(
            f"/console/alerts/{alert_id}/recipients/{g1.id}/call", data={"csrf": csrf, "outcome": "no_answer"}
        )
        assert r.status_code == 303
        assert "未接通" in httpx.URL("http://x/?n=" + r.cookies["jy_notice"]).params["n"]
        page = (await duty.get(f"/console/alerts/{alert_id}")).text
        assert "打过电话，未接通" in page
        r = await duty.post(
            f"/console/alerts/{alert_id}/recipients/{g1.id}/call", data={"csrf": csrf, "outcome": "answered"}
        )
        assert "已代为确认" in httpx.URL("http://x/?n=" + r.cookies["jy_notice"]).params["n"]
        assert (await target_of(engine.core.db, alert_id, "g1")).state == "answered_for"
