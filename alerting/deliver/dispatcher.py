"""The dispatcher: claim → compose → pace → hand over (re-check) → send → record, one delivery at a time.

A delivery is committed as `pending` before any provider is called. Per channel, a loop claims only what the
channel can send in a second or two (bounded by its concurrency), in queue order: most critical first, across
alerts. Each claimed delivery then runs its own short pipeline:
1. pace: the recipient's own limit (WeCom: per member per minute), a concurrency slot, the account's token bucket;
2. hand over: checked against the alert and the target as they are now and marked handed, durably (handover.py);
3. send through the adapter;
4. record the outcome at once, group-committed with others (outcomes.py), and only then free the slot.
So an answer or a cancel stops every delivery not yet handed over, and a crash can repeat at most what was at
the provider, never a claimed batch: `resume` puts a dead process's claims back in the queue. Which processes
are dead the registry (people.liveness) says; a live one's claims are never taken, even on the same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import cast

import structlog
from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.deliver.breaker import BreakerState, CircuitBreaker
from alerting.deliver.compose import Composer
from alerting.deliver.handover import UNCONDITIONAL, Ask, Decision, Verdict, hand_over_job
from alerting.deliver.outcomes import Outcome, record_job
from alerting.deliver.pacing import TokenBucket
from alerting.deliver.port import Channel, DeliveryError, OutboundMessage
from alerting.deliver.retry import RetryPolicy
from alerting.model.clock import Clock
from alerting.model.domain import STOPPED_BY, ChannelKind, DeliveryState
from alerting.model.ids import new_id
from alerting.people.liveness import ProcessRegistry, node_name
from alerting.people.liveness import Verdict as Liveness
from alerting.store.db import Database, rowcount
from alerting.store.tables import Alert, Delivery, core_table
from alerting.store.writer import Coalesced

log = structlog.get_logger()

ALL_CHANNELS = [k.value for k in ChannelKind]
DELIVERY = core_table(Delivery)
CLAIM_SECONDS = 2.0  # a claim holds no more than this many seconds of the channel's sending


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
        self._hand_over = Coalesced(db.writer, hand_over_job(clock, lock=not db.is_sqlite))
        self._record = Coalesced(db.writer, record_job(clock, lambda: self.retry, self._rng))
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[ChannelKind, set[asyncio.Task[None]]] = {k: set() for k in channels}

    def claim_size(self, kind: ChannelKind) -> int:
        """About a second or two of the channel's sending, never more than it has slots for."""
        limits = self.channels[kind].limits
        return max(1, min(self.batch_size, limits.concurrency, math.ceil(limits.per_second * CLAIM_SECONDS)))

    # ---- lifecycle --------------------------------------------------------------------------

    def wake(self) -> None:
        for event in self._wakers.values():
            event.set()

    async def resume(self) -> int:
        """Put back in the queue what dead processes left in flight: at once for a run the registry knows is dead,
        after the lease for a claimer it does not know (one that never registered). A live run keeps its claims.
        Of those, only the ones already handed over can have reached their provider, and may go twice."""
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
        known = await self.registry.verdict(claimers) if self.registry else Liveness(frozenset(), frozenset())
        orphaned = and_(
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
        async with self.db.session() as s:
            handed = rowcount(
                await s.execute(
                    update(Delivery)
                    .where(orphaned, col(Delivery.handed_at).is_not(None))
                    .values(state=DeliveryState.PENDING.value, claimed_by=None, handed_at=None, next_attempt_at=now)
                )
            )
            unhanded = rowcount(
                await s.execute(
                    update(Delivery)
                    .where(orphaned)
                    .values(state=DeliveryState.PENDING.value, claimed_by=None, handed_at=None, next_attempt_at=now)
                )
            )
            count = handed + unhanded
            if count:
                dead = sorted(set(claimers) & known.dead)
                await audit.record(
                    s,
                    "dispatch.resumed",
                    actor=self.owner,
                    at=now,
                    data={"deliveries": count, "may_repeat": handed, "never_handed": unhanded, "dead": dead},
                )
        if count:
            log.warning(
                "dispatch.resumed", deliveries=count, may_repeat=handed, dead=sorted(set(claimers) & known.dead)
            )
            self.wake()
        return count

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(kind), name=f"dispatch-{kind}") for kind in self.channels]

    async def stop(self) -> None:
        running = [*self._tasks, *(t for tasks in self._in_flight.values() for t in tasks)]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._tasks = []
        await self._release_unhanded()

    async def _release_unhanded(self) -> None:
        """Stopping: what this process claimed but never handed over goes back to the queue at once, for the
        next process to send, instead of waiting for a successor to find this one dead."""
        with contextlib.suppress(Exception):  # a database that is gone already: resume() takes them later
            released = await self._put_back(col(Delivery.channel).in_(ALL_CHANNELS))
            if released:
                log.info("dispatch.released_on_stop", deliveries=released)

    async def _put_back(self, *where: ColumnElement[bool]) -> int:
        """Claims of this process that were never handed over go back to the queue, as if never claimed."""
        async with self.db.session() as s:
            return rowcount(
                await s.execute(
                    update(Delivery)
                    .where(
                        *where,
                        col(Delivery.state) == DeliveryState.SENDING.value,
                        col(Delivery.claimed_by) == self.owner,
                        col(Delivery.handed_at).is_(None),
                    )
                    .values(state=DeliveryState.PENDING.value, claimed_by=None)
                )
            )

    async def _loop(self, kind: ChannelKind) -> None:
        """Keep the channel's pipeline full: claim again as soon as half of what was claimed is done."""
        waker, in_flight, size = self._wakers[kind], self._in_flight[kind], self.claim_size(kind)
        while True:
            waker.clear()  # before looking, so a wake that comes while we look is not lost
            claimed = 0
            room = size - len(in_flight)
            if room >= max(1, size // 2):
                try:
                    claimed = await self._claim_and_start(kind, room)
                except Exception:  # a failing database round must not end the loop; the rows stay queued
                    log.exception("dispatch.round_failed", channel=kind.value)
            if claimed and claimed == room:
                if in_flight:
                    await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)
                continue
            # nothing due (or no room): wait for new work, a free slot, or the poll; the poll is wall time on
            # purpose, since a scaled or manual clock has its own idea of a second
            woken = asyncio.ensure_future(waker.wait())
            try:
                await asyncio.wait({woken, *in_flight}, timeout=self.idle_poll_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()  # also when this loop is cancelled: no waiter is left behind

    async def _claim_and_start(self, kind: ChannelKind, room: int) -> int:
        claimed = await self._claim_composed(kind, room)
        for d, message in claimed:
            task = asyncio.create_task(self._deliver(kind, d, message), name=f"deliver-{d.id}")
            self._in_flight[kind].add(task)
            task.add_done_callback(self._in_flight[kind].discard)
        return len(claimed)

    async def drain(self, max_rounds: int = 10_000) -> int:
        """Send everything due now, over every channel; for tests, benchmarks and the CLI."""
        total = 0
        for _ in range(max_rounds):
            due = await self._channels_due()
            done = sum(await asyncio.gather(*(self.run_once(k) for k in self.channels if k in due)))
            total += done
            if done == 0:
                break
        return total

    async def _channels_due(self) -> set[ChannelKind]:
        """The channels with something due now: one look, instead of a claim on each idle channel."""
        now = self.clock.now()
        due: set[ChannelKind] = set()
        async with self.db.session() as s:
            for kind in self.channels:  # one index probe each: (channel, state, …) → the first due row
                first = await s.scalar(select(col(Delivery.id)).where(_due(kind, now)).limit(1))
                if first is not None:
                    due.add(kind)
        return due

    async def run_once(self, kind: ChannelKind) -> int:
        """One claim of this channel, taken through the whole pipeline before returning."""
        claimed = await self._claim_composed(kind)
        await asyncio.gather(*(self._deliver(kind, d, message) for d, message in claimed))
        return len(claimed)

    # ---- the stages ---------------------------------------------------------------------------

    async def _claim_composed(
        self, kind: ChannelKind, limit: int | None = None
    ) -> list[tuple[Delivery, OutboundMessage]]:
        """A claim and its messages. A claim that cannot be composed goes back to the queue rather than staying
        held by a live process (whose claims nobody else takes) until it stops."""
        if not self.breakers[kind].allow():
            return []  # the provider is down: leave its deliveries queued until the cooldown passes
        rows = await self._claim(kind, limit)
        if not rows:
            return []
        try:
            messages = await self._compose(rows)
        except Exception:
            await self._put_back(col(Delivery.id).in_([d.id for d in rows]))
            raise
        return [(d, messages[d.id]) for d in rows]

    async def _claim(self, kind: ChannelKind, limit: int | None = None) -> list[Delivery]:
        now = self.clock.now()
        async with self.db.session() as s:
            due = (
                select(col(Delivery.id))
                .where(_due(kind, now))
                .order_by(col(Delivery.priority), col(Delivery.next_attempt_at))
                .limit(limit or self.claim_size(kind))
            )
            if not self.db.is_sqlite:
                due = due.with_for_update(skip_locked=True)
            ids = list((await s.execute(due)).scalars())
            if not ids:
                return []
            await s.execute(
                update(Delivery)
                .where(col(Delivery.id).in_(ids), col(Delivery.state) == DeliveryState.PENDING.value)
                .values(state=DeliveryState.SENDING.value, claimed_by=self.owner, claimed_at=now, handed_at=None)
            )
            # plain rows with the model's attribute names: ORM objects cost more than the claim itself
            rows = await (await s.connection()).execute(
                select(DELIVERY)
                .where(DELIVERY.c.id.in_(ids), DELIVERY.c.claimed_by == self.owner)
                .order_by(DELIVERY.c.priority, DELIVERY.c.next_attempt_at)
            )
            return [cast(Delivery, r) for r in rows]

    async def _compose(self, rows: list[Delivery]) -> dict[str, OutboundMessage]:
        async with self.db.session() as s:
            return await self.composer.compose(s, rows)

    async def _deliver(self, kind: ChannelKind, d: Delivery, message: OutboundMessage) -> None:
        channel = self.channels[kind]
        wait = self._recipient_wait(kind, channel, message)
        if wait:
            await self._record(Outcome(d, self.owner, later_s=wait))
            return
        advanced = False
        async with self._semaphores[kind]:
            await self._buckets[kind].acquire()
            breaker = self.breakers[kind]
            if breaker.state is BreakerState.OPEN and not breaker.allow():
                await self._record(Outcome(d, self.owner, later_s=breaker.cooldown.total_seconds()))
                return
            decision: Decision = await self._hand_over(Ask(d.id, self.owner))
            if decision.verdict is not Verdict.HANDED:
                return  # recorded as not sent (or no longer ours): nothing went to the provider
            outcome = await self._send(kind, channel, message, d)
            self._update_breaker(kind, outcome)
            if outcome.error is not None and outcome.error.throttled:
                self._buckets[kind].pause(outcome.error.retry_after or 1.0)
            # the slot stays taken until the outcome is durable: a crash repeats at most `concurrency` sends
            advanced = await self._record(outcome)
        if advanced:
            self.on_exhausted()

    async def _send(self, kind: ChannelKind, channel: Channel, message: OutboundMessage, d: Delivery) -> Outcome:
        bound = log.bind(alert_id=d.alert_id, delivery_id=d.id, channel=kind.value)
        try:
            receipt = await channel.send(message)
        except DeliveryError as exc:
            bound.warning("delivery.error", error=str(exc), code=exc.code, retryable=exc.retryable)
            return Outcome(d, self.owner, error=exc)
        except Exception as exc:  # an adapter bug is reported and retried, never swallowed
            bound.exception("delivery.adapter_crashed")
            return Outcome(
                d, self.owner, error=DeliveryError(f"adapter error: {exc!r}", retryable=True, code="adapter")
            )
        return Outcome(d, self.owner, receipt=receipt)

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

    def _update_breaker(self, kind: ChannelKind, o: Outcome) -> None:
        breaker = self.breakers[kind]
        if o.receipt is not None:
            breaker.succeeded()
        elif o.error is not None and o.error.retryable and not o.error.throttled:
            breaker.failed(str(o.error))
            if breaker.state is BreakerState.OPEN:
                log.error("channel.circuit_open", channel=kind.value, error=breaker.last_error)


def _due(kind: ChannelKind, now: datetime) -> ColumnElement[bool]:
    """Queued on this channel and due: the queue index (channel, state, priority, next_attempt_at) serves it.

    A warning of an alert replaced or lifted is left where it is: the hand-over would refuse it, and the stop
    after the update or lift (issue.stopping) cancels it a page at a time. Claimed meanwhile, the old alert's
    queue, older than the new alert's first wave, would be claimed and refused batch after batch before it."""
    return and_(
        col(Delivery.channel) == kind.value,
        col(Delivery.state) == DeliveryState.PENDING.value,
        col(Delivery.next_attempt_at) <= now,
        or_(
            col(Delivery.purpose).in_(UNCONDITIONAL),
            ~exists().where(col(Alert.id) == col(Delivery.alert_id), col(Alert.status).in_(STOPPED_BY)),
        ),
    )
