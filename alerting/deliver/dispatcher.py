"""The dispatcher: claim due deliveries, re-check, pace, send, record. One worker loop per channel kind.

A delivery is committed as `pending` before any provider is called and marked `sending` with this
process's claim before the call, so a crash can repeat a send (the delivery id is the idempotency
key) but never lose one: `resume` puts what a dead process had in flight back in the queue. Which processes
are dead the registry (alerting.liveness) says; a live one's claims are never taken, even on the same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.deliver.breaker import BreakerState, CircuitBreaker
from alerting.deliver.compose import Composer
from alerting.deliver.pacing import TokenBucket
from alerting.deliver.port import Channel, DeliveryError, OutboundMessage, Receipt
from alerting.deliver.retry import RetryPolicy
from alerting.model.clock import Clock
from alerting.model.domain import AlertStatus, ChannelKind, DeadlineState, DeliveryState, Purpose, TargetState
from alerting.model.ids import new_id
from alerting.people.liveness import ProcessRegistry, Verdict, node_name
from alerting.store.db import Database, rowcount
from alerting.store.tables import Alert, Deadline, Delivery, Target

log = structlog.get_logger()

ALL_CHANNELS = [k.value for k in ChannelKind]

# the Core table, for the executemany updates that bind each row's values
T = Delivery.metadata.tables[Delivery.__tablename__]


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    receipt: Receipt | None = None
    error: DeliveryError | None = None
    deferred_s: float | None = None  # the recipient's own rate limit: not sent, not an attempt, try later


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        channels: Mapping[ChannelKind, Channel],
        composer: Composer,
        *,
        node: str | None = None,
        registry: ProcessRegistry | None = None,
        batch_size: int = 200,
        lease: timedelta = timedelta(minutes=2),
        retry: RetryPolicy | None = None,
        idle_poll_s: float = 1.0,
        on_exhausted: Callable[[], None] = lambda: None,
    ) -> None:
        self.db, self.clock, self.channels, self.composer = db, clock, channels, composer
        self.registry = registry
        self.node = registry.node if registry else node_name(node)
        self.owner = registry.owner if registry else f"{self.node}/{new_id()[:8]}"
        self.batch_size, self.lease, self.retry = batch_size, lease, retry or RetryPolicy()
        self.idle_poll_s = idle_poll_s
        self._rng = random.Random()  # noqa: S311 (jitter only)
        self._wakers = {kind: asyncio.Event() for kind in ChannelKind}
        self._semaphores = {k: asyncio.Semaphore(c.limits.concurrency) for k, c in channels.items()}
        self._buckets = {k: TokenBucket(c.limits.per_second, c.limits.burst) for k, c in channels.items()}
        self._recipient_buckets: dict[tuple[ChannelKind, str], TokenBucket] = {}
        self.breakers = {k: CircuitBreaker(clock) for k in channels}
        self.on_exhausted = on_exhausted  # wakes the escalation engine when a step has no channel left
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle --------------------------------------------------------------------------

    def wake(self) -> None:
        for event in self._wakers.values():
            event.set()

    async def resume(self) -> int:
        """Put back in the queue what dead processes left in flight: at once for a run the registry knows is dead,
        after the lease for a claimer it does not know (one that never registered). A live run keeps its claims."""
        now = self.clock.now()
        async with self.db.session() as s:
            claimers = [
                str(c)
                for c in (
                    await s.execute(
                        select(col(Delivery.claimed_by))
                        .where(
                            col(Delivery.channel).in_(ALL_CHANNELS),  # with the state: the queue index, no scan
                            col(Delivery.state) == DeliveryState.SENDING.value,
                            col(Delivery.claimed_by) != self.owner,
                        )
                        .distinct()
                    )
                ).scalars()
            ]
        if not claimers:
            return 0
        known = await self.registry.verdict(claimers) if self.registry else Verdict(frozenset(), frozenset())
        async with self.db.session() as s:
            result = await s.execute(
                update(Delivery)
                .where(
                    col(Delivery.channel).in_(ALL_CHANNELS),
                    col(Delivery.state) == DeliveryState.SENDING.value,
                    col(Delivery.claimed_by) != self.owner,
                    or_(
                        col(Delivery.claimed_by).in_(known.dead),
                        and_(
                            col(Delivery.claimed_by).not_in(known.alive | {self.owner}),
                            col(Delivery.claimed_at) < now - self.lease,
                        ),
                    ),
                )
                .values(state=DeliveryState.PENDING.value, claimed_by=None, next_attempt_at=now)
            )
            count = rowcount(result)
            if count:
                await audit.record(
                    s,
                    "dispatch.resumed",
                    actor=self.owner,
                    at=now,
                    data={"deliveries": count, "dead": sorted(set(claimers) & known.dead)},
                )
        if count:
            log.warning("dispatch.resumed", deliveries=count, dead=sorted(set(claimers) & known.dead))
            self.wake()
        return count

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(kind), name=f"dispatch-{kind}") for kind in self.channels]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _loop(self, kind: ChannelKind) -> None:
        waker = self._wakers[kind]
        while True:
            try:
                done = await self.run_once(kind)
            except Exception:  # a failing database round must not end the loop; the rows stay queued
                log.exception("dispatch.round_failed", channel=kind.value)
                done = 0
            if done == 0:
                waker.clear()
                # a scaled or manual clock has its own idea of a second; the poll is wall time on purpose
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waker.wait(), self.idle_poll_s)

    async def drain(self, max_rounds: int = 10_000) -> int:
        """Send everything due now, over every channel; for tests, benchmarks and the CLI."""
        total = 0
        for _ in range(max_rounds):
            done = sum(await asyncio.gather(*(self.run_once(k) for k in self.channels)))
            total += done
            if done == 0:
                break
        return total

    # ---- one round: claim, check, send, record -------------------------------------------------

    async def run_once(self, kind: ChannelKind) -> int:
        if not self.breakers[kind].allow():
            return 0  # the provider is down: leave its deliveries queued until the cooldown passes
        claimed = await self._claim(kind)
        if not claimed:
            return 0
        live, dead = await self._recheck(claimed)
        async with self.db.session() as s:
            messages = await self.composer.compose(s, live)
        outcomes = await asyncio.gather(*(self._send(kind, messages[d.id], d) for d in live))
        self._update_breaker(kind, outcomes)
        await self._record(list(outcomes), dead)
        return len(claimed)

    async def _claim(self, kind: ChannelKind) -> list[Delivery]:
        now = self.clock.now()
        async with self.db.session() as s:
            due = (
                select(col(Delivery.id))
                .where(
                    col(Delivery.channel) == kind.value,
                    col(Delivery.state) == DeliveryState.PENDING.value,
                    col(Delivery.next_attempt_at) <= now,
                )
                .order_by(col(Delivery.priority), col(Delivery.next_attempt_at))
                .limit(self.batch_size)
            )
            if not self.db.is_sqlite:
                due = due.with_for_update(skip_locked=True)
            ids = list((await s.execute(due)).scalars())
            if not ids:
                return []
            await s.execute(
                update(Delivery)
                .where(col(Delivery.id).in_(ids), col(Delivery.state) == DeliveryState.PENDING.value)
                .values(state=DeliveryState.SENDING.value, claimed_by=self.owner, claimed_at=now)
            )
            rows = await s.execute(
                select(Delivery).where(col(Delivery.id).in_(ids), col(Delivery.claimed_by) == self.owner)
            )
            return list(rows.scalars())

    async def _recheck(self, claimed: Sequence[Delivery]) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
        """Right before sending: nothing goes out for an alert already answered, closed or cancelled."""
        async with self.db.session() as s:
            alert_ids = {d.alert_id for d in claimed}
            alert_status: dict[int | None, str] = dict(
                (await s.execute(select(col(Alert.id), col(Alert.status)).where(col(Alert.id).in_(alert_ids)))).all()
            )
            target_ids = {d.target_id for d in claimed}
            target_state: dict[str, str] = dict(
                (await s.execute(select(col(Target.id), col(Target.state)).where(col(Target.id).in_(target_ids)))).all()
            )
        live: list[Delivery] = []
        dead: list[tuple[Delivery, str]] = []
        for d in claimed:
            if d.purpose in (Purpose.LIFT.value, Purpose.HELP.value):
                live.append(d)  # a lift notice, or a call for help: they go out whatever became of the alert
            elif alert_status.get(d.alert_id) != AlertStatus.ACTIVE.value:
                dead.append((d, f"alert {alert_status.get(d.alert_id)}"))
            elif target_state.get(d.target_id) != TargetState.OPEN.value:
                dead.append((d, f"target {target_state.get(d.target_id)}"))
            else:
                live.append(d)
        return live, dead

    async def _send(self, kind: ChannelKind, message: OutboundMessage, d: Delivery) -> Outcome:
        channel = self.channels[kind]
        bound = log.bind(alert_id=d.alert_id, delivery_id=d.id, channel=kind.value)
        wait = self._recipient_wait(kind, channel, message)
        if wait:
            return Outcome(d, deferred_s=wait)
        async with self._semaphores[kind]:
            await self._buckets[kind].acquire()
            try:
                receipt = await channel.send(message)
            except DeliveryError as exc:
                bound.warning("delivery.error", error=str(exc), code=exc.code, retryable=exc.retryable)
                return Outcome(d, error=exc)
            except Exception as exc:  # an adapter bug is reported and retried, never swallowed
                bound.exception("delivery.adapter_crashed")
                return Outcome(d, error=DeliveryError(f"adapter error: {exc!r}", retryable=True, code="adapter"))
        return Outcome(d, receipt=receipt)

    def _recipient_wait(self, kind: ChannelKind, channel: Channel, message: OutboundMessage) -> float:
        per_minute = channel.limits.per_recipient_per_minute
        a = message.address
        key = a.wecom_userid or a.phone or a.email or a.device_id
        if per_minute is None or key is None:
            return 0.0
        bucket = self._recipient_buckets.get((kind, key))
        if bucket is None:
            bucket = self._recipient_buckets[(kind, key)] = TokenBucket(per_minute / 60, per_minute)
        return bucket.try_acquire()

    def _update_breaker(self, kind: ChannelKind, outcomes: Sequence[Outcome]) -> None:
        breaker = self.breakers[kind]
        for o in outcomes:
            if o.receipt is not None:
                breaker.succeeded()
            elif o.error is not None and o.error.retryable:
                breaker.failed(str(o.error))
        if breaker.state is BreakerState.OPEN:
            log.error("channel.circuit_open", channel=kind.value, error=breaker.last_error)

    async def _record(self, outcomes: list[Outcome], dead: list[tuple[Delivery, str]]) -> None:
        now = self.clock.now()
        sent: list[dict[str, Any]] = []
        retry: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        entries: list[audit.Entry] = []
        deferred: list[dict[str, Any]] = []
        for o in outcomes:
            d = o.delivery
            attempts = d.attempts + 1
            if o.deferred_s is not None:
                deferred.append(
                    {"b_id": d.id, "b_owner": self.owner, "next_attempt_at": now + timedelta(seconds=o.deferred_s)}
                )
            elif o.receipt is not None:
                r = o.receipt
                sent.append(
                    {
                        "b_id": d.id,
                        "b_owner": self.owner,
                        "attempts": attempts,
                        "sent_at": now,
                        "state": (DeliveryState.DELIVERED if r.delivered else DeliveryState.SENT).value,
                        "delivered_at": now if r.delivered else None,
                        "provider": r.provider,
                        "provider_id": r.provider_id,
                        "sandbox": r.sandbox,
                        "error": None,
                    }
                )
                entries.append(
                    audit.Entry(
                        "delivery.sent",
                        self.owner,
                        now,
                        d.alert_id,
                        subject=d.id,
                        data={
                            "channel": d.channel,
                            "target": d.target_id,
                            "person": d.person_id,
                            "device": d.device_id,
                            "step": d.step,
                            "purpose": d.purpose,
                            "provider": r.provider,
                            "provider_id": r.provider_id,
                            "sandbox": r.sandbox,
                            "attempt": attempts,
                        },
                    )
                )
            else:
                err = o.error
                assert err is not None
                data = {"channel": d.channel, "error": str(err), "code": err.code, "attempt": attempts}
                if err.retryable and attempts < self.retry.max_attempts:
                    due = now + timedelta(seconds=self.retry.delay(attempts, err.retry_after, self._rng))
                    retry.append(
                        {
                            "b_id": d.id,
                            "b_owner": self.owner,
                            "attempts": attempts,
                            "next_attempt_at": due,
                            "error": _error_text(err),
                        }
                    )
                    entries.append(
                        audit.Entry(
                            "delivery.retrying",
                            self.owner,
                            now,
                            d.alert_id,
                            subject=d.id,
                            data={**data, "next_attempt_at": due.isoformat()},
                        )
                    )
                else:
                    failed.append(
                        {"b_id": d.id, "b_owner": self.owner, "attempts": attempts, "error": _error_text(err)}
                    )
                    entries.append(audit.Entry("delivery.failed", self.owner, now, d.alert_id, subject=d.id, data=data))
        skipped = [{"b_id": d.id, "b_owner": self.owner, "error": f"not sent: {why}"} for d, why in dead]
        mine = and_(
            T.c.id == bindparam("b_id"),
            T.c.claimed_by == bindparam("b_owner"),
            T.c.state == DeliveryState.SENDING.value,
        )
        async with self.db.session() as s:
            conn = await s.connection()
            if sent:
                await conn.execute(
                    update(T)
                    .where(mine)
                    .values(
                        state=bindparam("state"),
                        attempts=bindparam("attempts"),
                        sent_at=bindparam("sent_at"),
                        delivered_at=bindparam("delivered_at"),
                        provider=bindparam("provider"),
                        provider_id=bindparam("provider_id"),
                        sandbox=bindparam("sandbox"),
                        error=bindparam("error"),
                    ),
                    sent,
                )
            if retry:
                await conn.execute(
                    update(T)
                    .where(mine)
                    .values(
                        state=DeliveryState.PENDING.value,
                        claimed_by=None,
                        attempts=bindparam("attempts"),
                        next_attempt_at=bindparam("next_attempt_at"),
                        error=bindparam("error"),
                    ),
                    retry,
                )
            if failed:
                await conn.execute(
                    update(T)
                    .where(mine)
                    .values(state=DeliveryState.FAILED.value, attempts=bindparam("attempts"), error=bindparam("error")),
                    failed,
                )
            if deferred:
                await conn.execute(
                    update(T)
                    .where(mine)
                    .values(
                        state=DeliveryState.PENDING.value, claimed_by=None, next_attempt_at=bindparam("next_attempt_at")
                    ),
                    deferred,
                )
            if skipped:
                await conn.execute(
                    update(T).where(mine).values(state=DeliveryState.CANCELLED.value, error=bindparam("error")), skipped
                )
            advanced = await _advance_exhausted(
                s, [o.delivery for o in outcomes if o.delivery.id in {f["b_id"] for f in failed}], now
            )
            entries += [
                audit.Entry(
                    "escalation.advanced",
                    self.owner,
                    now,
                    alert_id,
                    subject=target_id,
                    data={"reason": "every channel of this step failed permanently"},
                )
                for alert_id, target_id in advanced
            ]
            await audit.append(s, entries)
        if advanced:
            self.on_exhausted()


def _error_text(err: DeliveryError) -> str:
    return f"{err.code}: {err}" if err.code else str(err)


async def _advance_exhausted(s: AsyncSession, failed: Sequence[Delivery], now: datetime) -> list[tuple[int, str]]:
    """Targets whose every delivery of this step has failed for good: their next step is due now, not later."""
    advanced: list[tuple[int, str]] = []
    # Each channel records its round in its own transaction, all at once. Without a lock, two of them failing a
    # target's last two deliveries each count the other's as still trying, and neither advances the target. Locked
    # (in one order, so two rounds cannot deadlock), the later one's count sees the earlier one's commit.
    # SQLite has a single writer and leaves FOR UPDATE out.
    targets = sorted({d.target_id for d in failed})
    if targets:
        await s.execute(
            select(col(Target.id)).where(col(Target.id).in_(targets)).order_by(col(Target.id)).with_for_update()
        )
    for d in failed:
        still_trying = await s.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                col(Delivery.target_id) == d.target_id,
                col(Delivery.step) == d.step,
                col(Delivery.state).in_(LIVE_STATES),
            )
        )
        if still_trying:
            continue
        moved = await s.execute(
            update(Deadline)
            .where(
                col(Deadline.target_id) == d.target_id,
                col(Deadline.state) == DeadlineState.PENDING.value,
                col(Deadline.due_at) > now,
            )
            .values(due_at=now)
        )
        if rowcount(moved):
            advanced.append((d.alert_id, d.target_id))
    return advanced


LIVE_STATES = [
    DeliveryState.PENDING.value,
    DeliveryState.SENDING.value,
    DeliveryState.SENT.value,
    DeliveryState.DELIVERED.value,
]
