"""Issuing once per key, held by the database: requests sent together issue one alert, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from alerting.issue.alerts import AlertRequest, AlertService
from alerting.issue.once import KEY_TTL, KeyReused, KeyTaken, RequestKey, forget_expired, issue_once
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Delivery, IssueRequest, core_table
from escalation.policy.rules import default_policy
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

DUTY = "api:duty:0a1b2c3d"


def rainstorm(**changes: object) -> AlertRequest:
    body: dict[str, object] = {
        "level": Level.RED,
        "hazard": "暴雨",
        "title": "凤凰镇强降雨",
        "text": "预计未来3小时降雨超过100毫米。",
        "units": ["500238101"],
    }
    return AlertRequest.model_validate(body | changes)


async def count(db: Database, model: type[Alert] | type[Delivery] | type[IssueRequest]) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def triggered(db: Database) -> int:
    async with db.session() as s:
        n = await s.scalar(select(func.count()).where(col(AuditEvent.kind) == "alert.triggered"))
    return int(n or 0)


@pytest.fixture
def alerts(db: Database, clock: ManualClock, county: SmallCounty) -> AlertService:
    return AlertService(db, clock, default_policy())


async def test_five_requests_with_one_key_at_the_same_moment_issue_one_alert(
    alerts: AlertService, db: Database
) -> None:
    req = rainstorm()
    key = RequestKey.of(DUTY, "retry-7f3a", req)
    outcomes = await asyncio.gather(*(issue_once(alerts, req, actor=DUTY, key=key) for _ in range(5)))

    assert {o.issued.alert_id for o in outcomes} == {1}
    assert [o.repeated for o in outcomes].count(False) == 1
    assert await count(db, Alert) == 1 and await triggered(db) == 1
    first = next(o for o in outcomes if not o.repeated)
    # every repeat answers what the first one answered, counts included
    assert all(o.issued == first.issued for o in outcomes)
    assert await count(db, Delivery) == first.issued.deliveries


async def test_two_triggers_racing_for_one_key_leave_one_alert_and_the_loser_wrote_nothing(
    alerts: AlertService, db: Database
) -> None:
    """The race itself, below the look-up that usually answers first: the database decides."""
    req = rainstorm()
    key = RequestKey.of(DUTY, "same-moment", req)
    results = await asyncio.gather(
        *(alerts.trigger(req, actor=DUTY, once=key) for _ in range(2)), return_exceptions=True
    )

    assert sorted(type(r).__name__ for r in results) == ["Issued", "KeyTaken"]
    assert await count(db, Alert) == 1 and await triggered(db) == 1
    assert await count(db, IssueRequest) == 1


async def test_the_unique_constraint_refuses_a_second_row_for_one_callers_key(db: Database, clock: ManualClock) -> None:
    row = {"caller": DUTY, "key": "k", "fingerprint": "0" * 64, "created_at": clock.now(), "expires_at": clock.now()}
    async with db.session() as s:
        await s.execute(insert(core_table(IssueRequest)).values(row))
    with pytest.raises(IntegrityError):
        async with db.session() as s:
            await s.execute(insert(core_table(IssueRequest)).values(row))
    async with db.session() as s:  # another caller may use the same key
        await s.execute(insert(core_table(IssueRequest)).values(row | {"caller": "api:duty:ffffffff"}))
    assert await count(db, IssueRequest) == 2


async def test_the_same_key_with_another_request_is_refused_and_writes_nothing(
    alerts: AlertService, db: Database
) -> None:
    first = await issue_once(alerts, rainstorm(), actor=DUTY, key=RequestKey.of(DUTY, "k-1", rainstorm()))
    other = rainstorm(level=Level.ORANGE)
    with pytest.raises(KeyReused) as refused:
        await issue_once(alerts, other, actor=DUTY, key=RequestKey.of(DUTY, "k-1", other))
    assert refused.value.alert_id == first.issued.alert_id
    assert "'k-1'" in str(refused.value) and "different request" in str(refused.value)
    assert await count(db, Alert) == 1


async def test_the_same_request_reformatted_is_the_same_request(alerts: AlertService, db: Database) -> None:
    first = rainstorm(units=["500238101"])
    again = rainstorm(units=[" 500238101 ", "500238101"])  # the validated request is the same
    await issue_once(alerts, first, actor=DUTY, key=RequestKey.of(DUTY, "k-2", first))
    repeat = await issue_once(alerts, again, actor=DUTY, key=RequestKey.of(DUTY, "k-2", again))
    assert repeat.repeated and await count(db, Alert) == 1


async def test_each_caller_has_its_own_keys(alerts: AlertService, db: Database) -> None:
    req = rainstorm()
    a = await issue_once(alerts, req, actor=DUTY, key=RequestKey.of(DUTY, "shared", req))
    b = await issue_once(alerts, req, actor="user:duty", key=RequestKey.of("user:duty", "shared", req))
    assert not a.repeated and not b.repeated
    assert a.issued.alert_id != b.issued.alert_id


async def test_a_key_expires_after_a_day_by_the_clock(alerts: AlertService, db: Database, clock: ManualClock) -> None:
    req = rainstorm()
    key = RequestKey.of(DUTY, "daily", req)
    first = await issue_once(alerts, req, actor=DUTY, key=key)
    clock.advance(KEY_TTL - timedelta(seconds=1))
    assert (await issue_once(alerts, req, actor=DUTY, key=key)).issued.alert_id == first.issued.alert_id
    clock.advance(timedelta(seconds=1))
    later = await issue_once(alerts, req, actor=DUTY, key=key)
    assert not later.repeated and later.issued.alert_id != first.issued.alert_id
    assert await count(db, Alert) == 2
    assert await count(db, IssueRequest) == 1  # the expired key's row made way for the new one


async def test_an_issue_that_fails_keeps_no_key(alerts: AlertService, db: Database) -> None:
    from alerting.issue.planning import UnknownUnits

    req = rainstorm(units=["999999999"])
    key = RequestKey.of(DUTY, "k-bad", req)
    for _ in range(2):  # the retry is refused the same way, not answered with an alert that never was
        with pytest.raises(UnknownUnits):
            await issue_once(alerts, req, actor=DUTY, key=key)
    assert await count(db, IssueRequest) == 0 and await count(db, Alert) == 0


def test_key_taken_is_not_a_user_error() -> None:
    # it never leaves issue_once: a ValueError would be shown to users as their own mistake
    assert not issubclass(KeyTaken, ValueError)


async def test_expired_keys_are_forgotten_and_the_live_ones_kept(
    alerts: AlertService, db: Database, clock: ManualClock
) -> None:
    req = rainstorm()
    await issue_once(alerts, req, actor=DUTY, key=RequestKey.of(DUTY, "yesterday", req))
    clock.advance(timedelta(hours=2))
    kept = await issue_once(alerts, req, actor=DUTY, key=RequestKey.of(DUTY, "today", req))
    clock.advance(KEY_TTL - timedelta(hours=1))  # the first is a day old, the second 23 hours
    assert await forget_expired(db, clock.now()) == 1
    assert await count(db, IssueRequest) == 1
    again = await issue_once(alerts, req, actor=DUTY, key=RequestKey.of(DUTY, "today", req))
    assert again.repeated and again.issued.alert_id == kept.issued.alert_id
