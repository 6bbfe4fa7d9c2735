"""The HTTP API as the duty room and an auditor use it: issue, follow, lift; keys, roles and problem+json errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from alerting.answer.acks import AckService
from alerting.deliver.tokens import TokenSigner
from alerting.issue.alerts import AlertService
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from alerting.people.accounts import AccountService
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery
from alerting.web.api.auth import key_label
from alerting.web.app import create_app
from alerting.web.core import ChannelInfo, Core
from escalation.policy.rules import default_policy
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

PROBLEM = "application/problem+json"
DUTY = {"X-API-Key": "k-duty-0001"}
AUDITOR = {"X-API-Key": "k-aud-0002"}
SANDBOXED = [ChannelInfo("sms", "sandbox", True), ChannelInfo("voice", "twilio", False)]


def make_core(db: Database, clock: ManualClock, channels: list[ChannelInfo] | None = None) -> Core:
    return Core(
        db,
        clock,
        AlertService(db, clock, default_policy()),
        AckService(db),
        TokenSigner(b"test-secret"),
        AccountService(db, clock),
        api_keys={"k-duty-0001": "duty", "k-aud-0002": "auditor", "k-admin-003": "admin"},
        channels=SANDBOXED if channels is None else channels,
    )


@asynccontextmanager
async def serve(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(core))
    async with httpx.AsyncClient(transport=transport, base_url="http://jy.test") as client:
        yield client


def rainstorm(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "level": "red",
        "hazard": "暴雨",
        "title": "凤凰镇强降雨",
        "text": "预计未来3小时降雨超过100毫米。",
        "instructions": "立即转移危险区群众。",
        "units": ["500238101001"],
    }
    return body | changes


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    return make_core(db, clock)


@pytest.fixture
async def api(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(core) as client:
        yield client


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return body


async def test_duty_officer_issues_an_alert_and_follows_its_progress(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)
    assert r.status_code == 201, r.text
    issued = r.json()
    # 东坪村: its head, two grid workers, a siren and a broadcast zone
    assert issued["targets"] == 5
    assert issued["by_channel"] == {"voice": 3, "sms": 3, "wecom": 2, "device": 1, "broadcast": 1}
    assert issued["unreachable"] == 0
    assert r.headers["location"] == issued["links"]["self"] == f"/api/v1/alerts/{issued['id']}"

    r = await api.get(issued["links"]["self"], headers=AUDITOR)
    assert r.status_code == 200
    alert = r.json()
    assert (alert["level"], alert["level_label"], alert["status"], alert["exercise"]) == (
        "red",
        "红色",
        "active",
        False,
    )
    assert alert["created_by"] == f"api:duty:{key_label('k-duty-0001')}"
    progress = alert["progress"]
    assert (progress["total"], progress["closed"], progress["silent"], progress["escalated"]) == (5, 0, 5, 0)
    assert progress["deliveries"]["sms"] == {"pending": 3}
    # sms runs in sandbox here: the duty officer must see that those messages reach nobody
    assert (progress["sandbox_channels"], progress["sandbox"]) == (["sms"], True)

    r = await api.get("/api/v1/alerts", params={"active": "true"}, headers=AUDITOR)
    assert [a["id"] for a in r.json()["items"]] == [issued["id"]]


async def test_the_audit_names_the_api_key_that_issued(api: httpx.AsyncClient, db: Database) -> None:
    r = await api.post("/api/v1/alerts", json=rainstorm(), headers={"Authorization": "Bearer k-admin-003"})
    assert r.status_code == 201
    async with db.session() as s:
        actors = set(
            (await s.execute(select(col(AuditEvent.actor)).where(col(AuditEvent.kind) == "alert.triggered"))).scalars()
        )
    assert actors == {f"api:admin:{key_label('k-admin-003')}"}


async def test_alerts_are_listed_newest_first_in_pages(api: httpx.AsyncClient) -> None:
    ids = [
        (await api.post("/api/v1/alerts", json=rainstorm(title=f"第{i}次"), headers=DUTY)).json()["id"]
        for i in range(3)
    ]
    await api.post(f"/api/v1/alerts/{ids[0]}/cancel", json={"reason": "雨停"}, headers=DUTY)

    page = (await api.get("/api/v1/alerts", params={"limit": 2}, headers=AUDITOR)).json()
    assert ([a["id"] for a in page["items"]], page["total"]) == ([ids[2], ids[1]], 3)
    page = (await api.get("/api/v1/alerts", params={"limit": 2, "offset": 2}, headers=AUDITOR)).json()
    assert [a["id"] for a in page["items"]] == [ids[0]]
    active = (await api.get("/api/v1/alerts", params={"active": "true"}, headers=AUDITOR)).json()
    assert ([a["id"] for a in active["items"]], active["total"]) == ([ids[2], ids[1]], 2)


async def test_an_auditor_reads_but_cannot_issue_or_cancel(api: httpx.AsyncClient) -> None:
    body = assert_problem(await api.post("/api/v1/alerts", json=rainstorm(), headers=AUDITOR), 403)
    assert "duty" in body["detail"]
    alert_id = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()["id"]
    assert_problem(await api.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": "x"}, headers=AUDITOR), 403)
    assert (await api.get(f"/api/v1/alerts/{alert_id}", headers=AUDITOR)).json()["status"] == "active"


async def test_no_key_or_an_unknown_key_is_401(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/alerts", json=rainstorm())
    assert_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert_problem(await api.get("/api/v1/alerts", headers={"X-API-Key": "k-duty-0002"}), 401)
    assert_problem(await api.get("/api/v1/alerts", headers={"Authorization": "Bearer nope"}), 401)
    assert (await api.get("/api/v1/alerts", headers={"Authorization": "Bearer k-aud-0002"})).status_code == 200


async def test_a_bad_body_is_a_422_problem_naming_the_fields(api: httpx.AsyncClient) -> None:
    bad = rainstorm(level="purple")
    del bad["title"]
    body = assert_problem(await api.post("/api/v1/alerts", json=bad, headers=DUTY), 422)
    fields = {e["field"]: e for e in body["errors"]}
    assert set(fields) == {"level", "title"}
    assert (fields["title"]["pointer"], fields["title"]["location"]) == ("#/title", "body")
    assert body["detail"] == "check these fields: level, title"

    body = assert_problem(
        await api.post("/api/v1/alerts", content=b"{not json", headers=DUTY | {"content-type": "application/json"}),
        422,
    )
    assert "JSON" in body["errors"][0]["message"]


async def test_an_unknown_unit_code_is_a_422_naming_it(api: httpx.AsyncClient, db: Database) -> None:
    r = await api.post("/api/v1/alerts", json=rainstorm(units=["500238101001", "500238999999"]), headers=DUTY)
    body = assert_problem(r, 422)
    assert body["unknown_units"] == ["500238999999"]
    assert "500238999999" in body["detail"]
    assert body["errors"] == [
        {
            "field": "units.1",
            "location": "body",
            "pointer": "#/units/1",
            "message": "unknown unit code 500238999999",
        }
    ]
    async with db.session() as s:  # nothing half-written
        assert (await s.execute(select(col(Delivery.id)))).first() is None


async def test_lifting_twice_is_a_409(api: httpx.AsyncClient) -> None:
    alert_id = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()["id"]
    r = await api.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": "雨情减弱"}, headers=DUTY)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["cancelled_deliveries"] == 10  # nothing had been sent yet: every delivery stops
    alert = (await api.get(f"/api/v1/alerts/{alert_id}", headers=AUDITOR)).json()
    assert (alert["status"], alert["status_label"], alert["end_reason"]) == ("cancelled", "已解除", "雨情减弱")

    body = assert_problem(
        await api.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": "again"}, headers=DUTY), 409
    )
    assert "cancelled" in body["detail"]
    assert_problem(await api.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": ""}, headers=DUTY), 422)
    assert_problem(await api.post("/api/v1/alerts/9999/cancel", json={"reason": "x"}, headers=DUTY), 404)


async def test_recipients_are_paged_with_masked_phones(api: httpx.AsyncClient) -> None:
    alert_id = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()["id"]
    page = (await api.get(f"/api/v1/alerts/{alert_id}/recipients", params={"limit": 3}, headers=AUDITOR)).json()
    assert (page["total"], len(page["items"])) == (5, 3)
    rest = (
        await api.get(f"/api/v1/alerts/{alert_id}/recipients", params={"limit": 3, "offset": 3}, headers=AUDITOR)
    ).json()
    everyone = {r["name"]: r for r in page["items"] + rest["items"]}
    assert set(everyone) == {"东坪村主任", "网格员甲", "网格员乙", "500238101001 预警喇叭", "500238101001 广播"}
    g1 = everyone["网格员甲"]
    assert g1["phone"] == "+86139****0008"
    assert (g1["unit_name"], g1["role_label"], g1["state"], g1["state_label"]) == (
        "第1网格",
        "网格员",
        "open",
        "未应答",
    )
    assert (g1["answered_at"], g1["step"]) == (None, 0)
    opened = await api.get(f"/api/v1/alerts/{alert_id}/recipients", params={"state": "answered"}, headers=AUDITOR)
    assert opened.json()["total"] == 0
    assert_problem(await api.get("/api/v1/alerts/9999/recipients", headers=AUDITOR), 404)


async def test_unknown_paths_and_alerts_are_problems_too(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/api/v1/alerts/424242", headers=AUDITOR), 404)
    assert_problem(await api.get("/api/v1/nothing-here", headers=AUDITOR), 404)
    assert_problem(await api.delete("/api/v1/alerts", headers=DUTY), 405)
    assert_problem(await api.get("/api/v1/alerts", params={"limit": 0}, headers=AUDITOR), 422)


async def test_docs_describe_the_api(api: httpx.AsyncClient) -> None:
    assert (await api.get("/docs")).status_code == 200
    spec = (await api.get("/openapi.json")).json()
    assert {"/api/v1/alerts", "/api/v1/alerts/{alert_id}/cancel", "/healthz"} <= set(spec["paths"])
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])


async def test_health_lists_channels_and_says_when_the_database_is_down(
    api: httpx.AsyncClient, clock: ManualClock, tmp_path: Path
) -> None:
    r = await api.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "database": "ok",
        "channels": [
            {"kind": "sms", "provider": "sandbox", "sandbox": True, "circuit": "closed", "last_error": None},
            {"kind": "voice", "provider": "twilio", "sandbox": False, "circuit": "closed", "last_error": None},
        ],
    }
    gone = Database(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    try:
        async with serve(make_core(gone, clock, [ChannelInfo(ChannelKind.SMS.value, "twilio", False)])) as down:
            r = await down.get("/healthz")
        assert r.status_code == 503
        assert (r.json()["status"], r.json()["database"]) == ("unavailable", "unavailable")
    finally:
        await gone.close()


async def test_a_duty_officer_raises_the_level_and_the_old_alert_is_superseded(api: httpx.AsyncClient) -> None:
    first = (await api.post("/api/v1/alerts", json=rainstorm(level="orange"), headers=DUTY)).json()["id"]
    assert_problem(await api.post(f"/api/v1/alerts/{first}/update", json={"level": "red"}, headers=AUDITOR), 403)
    r = await api.post(f"/api/v1/alerts/{first}/update", json={"level": "red"}, headers=DUTY)
    assert r.status_code == 201
    raised = r.json()
    assert r.headers["Location"] == raised["links"]["self"] and raised["id"] != first
    assert (await api.get(f"/api/v1/alerts/{first}", headers=AUDITOR)).json()["status"] == "superseded"
    assert (await api.get(raised["links"]["self"], headers=AUDITOR)).json()["level"] == "red"
    assert_problem(await api.post(f"/api/v1/alerts/{first}/update", json={"level": "red"}, headers=DUTY), 409)


async def test_an_alerts_audit_trail_reads_as_json_and_csv(api: httpx.AsyncClient) -> None:
    issued = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()
    await api.post(f"/api/v1/alerts/{issued['id']}/cancel", json={"reason": "雨停了"}, headers=DUTY)

    r = await api.get(issued["links"]["audit"], headers=AUDITOR)
    assert r.status_code == 200, r.text
    kinds = [e["kind"] for e in r.json()["items"]]
    assert kinds[0] == "alert.triggered" and "alert.cancelled" in kinds  # oldest first
    assert {e["alert_id"] for e in r.json()["items"]} == {issued["id"]}

    csv_text = (await api.get(issued["links"]["audit"], params={"format": "csv"}, headers=AUDITOR)).text
    assert csv_text.lstrip("\ufeff").startswith("seq,time (Asia/Shanghai),kind,actor")
    assert "雨停了" in csv_text and f"api:duty:{key_label('k-duty-0001')}" in csv_text

    assert_problem(await api.get("/api/v1/alerts/999/audit", headers=AUDITOR), 404)
