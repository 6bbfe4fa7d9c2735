"""Two engine processes on one machine, under one node name: neither takes the other's deliveries while both live,
and when one is killed, the other sends what it had in flight within a heartbeat, not after the two-minute lease.

Real processes (`python -m config.engine_process run`) on one SQLite file, both with HOSTNAME=duty-host. SMS and
calls go to a local Twilio that holds every request until the test opens its gate, so deliveries stay in flight
(claimed, `sending`) for as long as the test needs.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.issue.alerts import AlertService
from alerting.model.clock import SystemClock
from alerting.model.domain import ChannelKind, DeliveryState
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery, EngineOwner
from escalation.policy.rules import PolicySet
from tests.conftest import SmallCounty
from tests.escalation.test_exactly_once import (
    EngineProcess,
    chain_finished,
    engines,
    policy,
    policy_file,
    sends_per_delivery,
    wait_for,
)
from tests.fakes.server import serve_app
from tests.fakes.twilio import FakeTwilio
from tests.harness import RED

pytestmark = pytest.mark.timeout(120)
__all__ = ["policy", "policy_file"]  # fixtures

TWILIO = (ChannelKind.SMS.value, ChannelKind.VOICE.value)


class GatedTwilio(FakeTwilio):
    """The fake Twilio, with a gate every request waits at before it is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

        @self.app.middleware("http")
        async def wait_at_gate(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
            await self.gate.wait()
            return await call_next(request)

    def sent_per_delivery(self) -> Counter[str]:
        """delivery id -> how many messages and calls the provider created for it."""
        counts: Counter[str] = Counter()
        for r in self.received:
            callback = r.field("StatusCallback")
            if r.sid and callback:
                counts[parse_qs(urlsplit(callback).query)["d"][0]] += 1
        return counts


async def twilio_deliveries(db: Database, alert_id: int) -> list[Delivery]:
    async with db.session() as s:
        rows = await s.execute(
            select(Delivery).where(col(Delivery.alert_id) == alert_id, col(Delivery.channel).in_(TWILIO))
        )
        return list(rows.scalars())


async def holders(db: Database, alert_id: int) -> Counter[str]:
    """Who holds the alert's SMS and calls in flight: claimer -> how many."""
    return Counter(
        str(d.claimed_by) for d in await twilio_deliveries(db, alert_id) if d.state == DeliveryState.SENDING.value
    )


async def owners(db: Database) -> list[EngineOwner]:
    async with db.session() as s:
        return list((await s.execute(select(EngineOwner).order_by(col(EngineOwner.started_at)))).scalars())


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[GatedTwilio, str]]:
    fake = GatedTwilio()
    async with serve_app(fake.app) as url:
        yield fake, url
        fake.gate.set()  # let held requests finish so the server can stop


def on_duty_host(tmp_path: Path, db: Database, policy_file: Path, fake: GatedTwilio, url: str) -> EngineProcess:
    engine = EngineProcess(tmp_path, db.url, policy_file, "duty-host")
    engine.env.update(
        JIAOYING_TWILIO_ACCOUNT_SID=fake.account_sid,
        JIAOYING_TWILIO_AUTH_TOKEN=fake.auth_token,
        JIAOYING_TWILIO_FROM_NUMBER="+8613800000000",
        JIAOYING_TWILIO_BASE_URL=url,
        JIAOYING_TWILIO_CALLS_PER_SECOND="50",
        # The gate holds the first sends while the second engine starts, which on a busy machine can pass the
        # default 10 s: a timed-out send would be retried, and this test is about who sends, not about timeouts.
        JIAOYING_TWILIO_TIMEOUT_S="120",
    )
    return engine


async def test_two_live_engines_on_one_host_never_send_each_others_deliveries_and_recover_a_killed_one_at_once(
    tmp_path: Path,
    db: Database,
    county: SmallCounty,
    policy_file: Path,
    policy: PolicySet,
    twilio: tuple[GatedTwilio, str],
) -> None:
    fake, url = twilio
    first = on_duty_host(tmp_path, db, policy_file, fake, url)
    second = on_duty_host(tmp_path, db, policy_file, fake, url)
    alerts = AlertService(db, SystemClock(), policy)
    async with engines(first, second):
        # 1. the first engine has the first wave's SMS and calls in flight when its sibling starts
        await first.start("--claim-batch", "2")
        await first.ready()
        issued = await alerts.trigger(RED, actor="duty:test")

        async def first_holds_some() -> bool:
            return sum((await holders(db, issued.alert_id)).values()) >= 4

        await wait_for(first_holds_some, 15, first, what="the first engine's sends in flight")
        held = await holders(db, issued.alert_id)
        assert len(held) == 1
        [(first_owner, in_flight)] = held.items()
        await second.start("--claim-batch", "2")
        await second.ready()  # its start-up took over nothing of a live process's
        await asyncio.sleep(0.5)
        assert (await holders(db, issued.alert_id))[first_owner] == in_flight
        live = [o for o in await owners(db) if o.ended_at is None]
        assert sorted((o.node, o.live_slot) for o in live) == [("duty-host", 0), ("duty-host", 1)]
        fake.gate.set()
        await wait_for(lambda: chain_finished(db), 40, first, second, what="the first alert's whole chain")

        sent = fake.sent_per_delivery()
        audited = await sends_per_delivery(db, issued.alert_id)
        deliveries = await twilio_deliveries(db, issued.alert_id)
        assert deliveries
        for d in deliveries:
            assert sent[d.id] == 1, f"{d.channel} to {d.person_id} went out {sent[d.id]} times"
            assert audited[d.id] == [1], f"{d.channel} to {d.person_id}: sends {audited[d.id]}"
        senders = Counter(a.split("/")[1] for a in await sender_owners(db, issued.alert_id))
        assert len(senders) == 2, f"only one process sent: {senders}"

        # 2. both hold sends of a second alert when the first is killed: the second sends them within a heartbeat
        fake.gate.clear()
        again = await alerts.trigger(RED.model_copy(update={"title": "山洪红色预警（续）"}), actor="duty:test")

        async def both_hold_some() -> bool:
            return len(await holders(db, again.alert_id)) == 2

        await wait_for(both_hold_some, 15, first, second, what="both engines' sends in flight")
        orphaned = {d.id for d in await twilio_deliveries(db, again.alert_id) if d.claimed_by == first_owner}
        assert orphaned
        assert await first.kill(signal.SIGKILL) == -signal.SIGKILL
        killed_at = datetime.now(UTC)
        fake.gate.set()
        await wait_for(lambda: chain_finished(db), 40, second, what="the second alert's whole chain")
        recovered = datetime.now(UTC) - killed_at
        assert await second.kill(signal.SIGTERM) == 0

    assert recovered.total_seconds() < 60, f"took {recovered} to recover: the lease, not the liveness check"
    audited = await sends_per_delivery(db, again.alert_id)
    by = await sender_by_delivery(db, again.alert_id)
    for d in await twilio_deliveries(db, again.alert_id):
        assert d.state == DeliveryState.SENT.value
        assert audited[d.id], f"{d.channel} to {d.person_id} never went out"
    second_owner = next(o.owner for o in await owners(db) if o.owner != first_owner)
    assert {by[i] for i in orphaned} == {second_owner}, "the killed engine's sends were not sent again"
    async with db.session() as s:
        resumed = list(
            (
                await s.execute(
                    select(AuditEvent).where(
                        col(AuditEvent.kind) == "dispatch.resumed", col(AuditEvent.actor) == second_owner
                    )
                )
            ).scalars()
        )
    assert [e.data["dead"] for e in resumed] == [[first_owner]]


async def sender_owners(db: Database, alert_id: int) -> list[str]:
    return list((await sender_by_delivery(db, alert_id, every=True)).values())


async def sender_by_delivery(db: Database, alert_id: int, *, every: bool = False) -> dict[str, str]:
    """delivery id -> the process whose send of it was recorded last (`every`: keyed by audit seq instead)."""
    async with db.session() as s:
        rows = await s.execute(
            select(AuditEvent)
            .where(col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "delivery.sent")
            .order_by(col(AuditEvent.seq))
        )
        return {(str(e.seq) if every else str(e.subject)): e.actor for e in rows.scalars()}
