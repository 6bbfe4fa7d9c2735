"""A duty room's script retries POST /api/v1/alerts with an Idempotency-Key: everyone is texted once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.issue.once import KEY_TTL
from alerting.model.clock import ManualClock
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Delivery
from alerting.web.core import Core
from tests.alerting.web.test_api import DUTY, assert_problem, make_core, rainstorm, serve
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

ADMIN = {"X-API-Key": "k-admin-003"}


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    return make_core(db, clock)


@pytest.fixture
async def api(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(core) as client:
        yield client


async def written(db: Database) -> tuple[int, int, int]:
    """Alerts, deliveries and alert.triggered audit entries: what a second issue would double."""
    async with db.session() as s:
        alerts = await s.scalar(select(func.count()).select_from(Alert))
        deliveries = await s.scalar(select(func.count()).select_from(Delivery))
        triggered = await s.scalar(select(func.count()).where(col(AuditEvent.kind) == "alert.triggered"))
    return int(alerts or 0), int(deliveries or 0), int(triggered or 0)


async def test_a_retry_with_the_same_key_answers_with_the_first_alert(api: httpx.AsyncClient, db: Database) -> None:
    headers = DUTY | {"Idempotency-Key": "0b9f6c1e-retry"}
    first = await api.post("/api/v1/alerts", json=rainstorm(), headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    before = await written(db)

    again = await api.post("/api/v1/alerts", json=rainstorm(), headers=headers)

    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()  # the same alert, the same counts, the same links
    assert again.headers["location"] == first.headers["location"]
    assert await written(db) == before == (1, first.json()["deliveries"], 1)


async def test_two_requests_with_one_key_at_the_same_moment_issue_one_alert(
    api: httpx.AsyncClient, db: Database
) -> None:
    headers = DUTY | {"Idempotency-Key": "double-click"}
    answers = await asyncio.gather(*(api.post("/api/v1/alerts", json=rainstorm(), headers=headers) for _ in range(2)))

    assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    alerts, deliveries, triggered = await written(db)
    assert (alerts, triggered) == (1, 1)
    assert deliveries == answers[0].json()["deliveries"]


async def test_the_same_key_with_another_body_is_refused_naming_the_header(
    api: httpx.AsyncClient, db: Database
) -> None:
    headers = DUTY | {"Idempotency-Key": "k-2026-07-01"}
    first = await api.post("/api/v1/alerts", json=rainstorm(), headers=headers)
    assert first.status_code == 201
    before = await written(db)

    r = await api.post("/api/v1/alerts", json=rainstorm(level="orange"), headers=headers)

    body = assert_problem(r, 422)
    assert "Idempotency-Key" in body["detail"]
    assert body["errors"] == [
        {"field": "Idempotency-Key", "location": "header", "message": body["errors"][0]["message"]}
    ]
    assert f"alert {first.json()['id']}" in body["errors"][0]["message"]
    assert body["alert_id"] == first.json()["id"]
    assert await written(db) == before


@pytest.mark.parametrize("bad", [b"", b"has a space", b"x" * 256, "键".encode()])
async def test_a_malformed_key_is_refused_before_anything_is_issued(core: Core, db: Database, bad: bytes) -> None:
    async with serve(core) as api:
        r = await api.post(
            "/api/v1/alerts",
            json=rainstorm(),
            headers=[(b"X-API-Key", DUTY["X-API-Key"].encode()), (b"Idempotency-Key", bad)],
        )
    body = assert_problem(r, 422)
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert "255 printable ASCII" in body["detail"]
    assert await written(db) == (0, 0, 0)


async def test_another_api_key_with_the_same_idempotency_key_issues_its_own(
    api: httpx.AsyncClient, db: Database
) -> None:
    a = await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY | {"Idempotency-Key": "shared"})
    b = await api.post("/api/v1/alerts", json=rainstorm(), headers=ADMIN | {"Idempotency-Key": "shared"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_a_key_is_forgotten_after_24_hours_by_the_clock(
    api: httpx.AsyncClient, db: Database, clock: ManualClock
) -> None:
    headers = DUTY | {"Idempotency-Key": "nightly-run"}
    first = await api.post("/api/v1/alerts", json=rainstorm(), headers=headers)
    clock.advance(KEY_TTL - timedelta(minutes=1))
    assert (await api.post("/api/v1/alerts", json=rainstorm(), headers=headers)).status_code == 200
    clock.advance(timedelta(minutes=1))
    later = await api.post("/api/v1/alerts", json=rainstorm(), headers=headers)
    assert later.status_code == 201
    assert later.json()["id"] != first.json()["id"]


async def test_without_a_key_every_request_issues(api: httpx.AsyncClient, db: Database) -> None:
    for _ in range(2):
        assert (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).status_code == 201
    assert (await written(db))[0] == 2


async def test_the_header_and_both_answers_are_in_the_openapi(api: httpx.AsyncClient) -> None:
    operation = (await api.get("/openapi.json")).json()["paths"]["/api/v1/alerts"]["post"]
    header = next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and "24 hours" in header["description"]
    assert {"200", "201"} <= set(operation["responses"])
    assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
