"""Which escalation run may fire which due deadline: claims, and letting go of the claims of dead runs.

An engine claims a batch of due deadlines with one UPDATE that bumps each one's fence and writes its own name on
it (on PostgreSQL the rows are picked FOR UPDATE SKIP LOCKED, so engines claim disjoint batches); firing then
matches on the fence (alerting.model.deadlines). A claim outlives its claimer only when that process died. Claims
of a run the registry (alerting.people.liveness) knows is dead are released at once, at start-up and at every
heartbeat; a claim of a run it does not know is released once it has stayed unchanged for a whole lease. A live
run's claims are never released.

The dispatcher's claims of deliveries are kept apart on purpose: a delivery is made safe by its hand-over re-check
and `handed_at` (deliver/handover.py), not by a fence, and what a dead dispatcher leaves is put back in the queue
rather than released; both ask the same registry who is dead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlmodel import col, select

from alerting.audit import chain as audit
from alerting.model import deadlines
from alerting.model.clock import Clock
from alerting.model.deadlines import Claim
from alerting.people.liveness import ProcessRegistry
from alerting.store.db import Database
from alerting.store.tables import Deadline

log = structlog.get_logger()


class DeadlineClaims:
    """The claims of one escalation run, `owner`: with a registry it is `<role>/<registry.owner>`, and the claims
    of other `<role>/...` runs the registry knows are dead are released without waiting."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        registry: ProcessRegistry | None,
        *,
        batch_size: int,
        lease: timedelta,
        on_released: Callable[[], None],
    ) -> None:
        if registry is not None and not owner.endswith(f"/{registry.owner}"):
            raise ValueError(f"the owner {owner!r} must be '<role>/{registry.owner}'")
        self.db, self.clock, self.owner, self.registry = db, clock, owner, registry
        self.batch_size, self.lease, self.on_released = batch_size, lease, on_released
        # what this engine's role puts before a run's name: "escalation/"
        self._role = owner[: len(owner) - len(registry.owner)] if registry else ""
        self.resumed = False
        # foreign claims seen at the last look: deadline id -> (claimer, fence), and when that look was
        self._seen_claims: dict[str, tuple[str, int]] = {}
        self._seen_at: datetime | None = None

    async def next_due(self) -> datetime | None:
        """The earliest pending deadline this engine may claim (other engines' live claims are theirs)."""
        async with self.db.session() as s:
            due: datetime | None = await s.scalar(deadlines.earliest_due(self.owner))
        return due

    # ---- claiming ---------------------------------------------------------------------------

    async def resume(self) -> int:
        """Release the claims of runs known to be dead (a restarted process's predecessor, at once)."""
        self.resumed = True
        return await self.release_dead_claims()

    async def release_dead_claims(self) -> int:
        """Release the due claims whose claimer the registry knows is dead; their fences move."""
        if self.registry is None:
            return 0
        now = self.clock.now()
        async with self.db.session() as s:
            claimers = list(
                (
                    await s.execute(
                        select(col(Deadline.claimed_by)).where(deadlines.claimed_by_others(self.owner, now)).distinct()
                    )
                ).scalars()
            )
        runs = {str(c)[len(self._role) :]: str(c) for c in claimers if str(c).startswith(self._role)}
        if not runs:
            return 0
        dead = sorted(runs[r] for r in (await self.registry.verdict(list(runs))).dead)
        if not dead:
            return 0
        async with self.db.session() as s:
            released = await deadlines.release_claims_of(s, dead, now)
            if released:
                await audit.record(
                    s, "escalation.resumed", actor=self.owner, at=now, data={"deadlines": released, "dead": dead}
                )
        if released:
            log.warning("escalation.resumed", deadlines=released, dead=dead)
            self.on_released()
        return released

    async def claim(self, limit: int | None = None) -> list[Claim]:
        """Claim up to `limit` due deadlines, oldest first, each with a new fence."""
        async with self.db.session() as s:
            # SQLite has one writer: the UPDATE itself is the lock
            return await deadlines.claim(
                s, self.owner, self.clock.now(), limit or self.batch_size, skip_locked=not self.db.is_sqlite
            )

    async def release_stale_claims(self) -> int:
        """Release other engines' claims that have not moved for a whole lease: their claimer is dead or stuck,
        and if it comes back, its fence no longer matches. Does nothing until a lease has passed since the last
        look, so calling it every round costs nothing."""
        now = self.clock.now()
        if self._seen_at is not None and now - self._seen_at < self.lease:
            return 0
        async with self.db.session() as s:
            rows = await s.execute(
                select(col(Deadline.id), col(Deadline.claimed_by), col(Deadline.fence)).where(
                    deadlines.claimed_by_others(self.owner, now)
                )
            )
            current = {r.id: (str(r.claimed_by), int(r.fence)) for r in rows}
        if self.registry is not None and current:
            # a run with a fresh heartbeat is working on its claims, however long one takes
            runs = {c[len(self._role) :] for c, _ in current.values() if c.startswith(self._role)}
            alive = {self._role + r for r in (await self.registry.verdict(sorted(runs))).alive}
            current = {i: seen for i, seen in current.items() if seen[0] not in alive}
        stale = [(i, seen) for i, seen in self._seen_claims.items() if current.get(i) == seen]
        released = 0
        if stale and self._seen_at is not None:
            async with self.db.session() as s:
                for deadline_id, (claimer, fence) in stale:
                    if await deadlines.release_claim(s, deadline_id, claimer, fence):
                        released += 1
                        current.pop(deadline_id, None)
                if released:
                    await audit.record(
                        s,
                        "escalation.claims_expired",
                        actor=self.owner,
                        at=now,
                        data={"deadlines": released, "claimers": sorted({c for _, (c, _) in stale})},
                    )
        if released:
            log.warning("escalation.claims_expired", deadlines=released, lease_s=self.lease.total_seconds())
        self._seen_claims, self._seen_at = current, now
        return released
