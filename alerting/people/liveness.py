"""Which engine processes are alive: each run registers, beats, and says goodbye in the store.

Claims (deliveries being sent, deadlines being fired) carry the name of the run that made them. Another
process may take them over only once that run is known dead:
  - it ended (stopped cleanly, or another process found it dead and said so);
  - its heartbeat is older than `stale_after` (the process died or hangs, on any machine);
  - it ran on this machine (same boot, same pid namespace) and its pid is gone, or belongs to a newer process:
    a restarted process recovers at once what its predecessor left, without waiting for the heartbeat to age.
A run that is alive is never taken from, whatever its node is called, so two processes on one host are safe.

Each live run of a node also holds a slot number, the lowest one free. A restarted process gets its dead
predecessor's slot back, a sibling gets another; `slot_name` is stable across restarts and distinct between
live processes, which is what an MQTT persistent session needs from its client id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from alerting.model.clock import Clock
from alerting.model.ids import new_id
from alerting.store.db import Database
from alerting.store.tables import EngineOwner

log = structlog.get_logger()

_NODE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def node_name(configured: str | None = None) -> str:
    """The configured node name, else the host's; reduced to letters, digits, '_', '.', '-' (it goes into names
    of claims and MQTT client ids)."""
    raw = configured or os.environ.get("HOSTNAME") or socket.gethostname() or "node"
    return _NODE_CHARS.sub("-", raw).strip("-")[:64] or "node"


# ---- this machine's processes ---------------------------------------------------------------


@dataclass(frozen=True)
class ProcessIdentity:
    """Where a pid means something (`host`: boot id and pid namespace; None off Linux), the pid, and when that
    process started (clock ticks since boot), so that a pid reused by a later process does not pass for it."""

    host: str | None
    pid: int
    started: int | None

    @staticmethod
    def current() -> ProcessIdentity:
        pid = os.getpid()
        return ProcessIdentity(_host_key(), pid, start_ticks(pid))


def _host_key() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{pid_ns}"


def start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields from the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None


def gone_here(host: str | None, pid: int, started: int | None, here: str | None) -> bool:
    """True only when it is certain: the process ran where this one runs and no longer does."""
    if host is None or here is None or host != here:
        return False  # another machine or container: only its heartbeat can tell
    return start_ticks(pid) != started


# ---- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Runs known dead (their claims may be taken now) and runs known alive (never taken from)."""

    dead: frozenset[str]
    alive: frozenset[str]


class ProcessRegistry:
    """This process's row in `engine_owner`: registered at start, beaten every `beat_s` wall seconds, ended at stop.

    `owner` ("<node>/<run>") is what the dispatcher writes on its claims; the escalation engine writes
    "escalation/<owner>"."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        node: str | None = None,
        *,
        beat_s: float = 5.0,
        stale_after: timedelta = timedelta(seconds=30),
        identity: ProcessIdentity | None = None,
        keep_ended: timedelta = timedelta(days=7),
    ) -> None:
        self.db, self.clock = db, clock
        self.node = node_name(node)
        self.owner = f"{self.node}/{new_id()[:8]}"
        self.beat_s, self.stale_after, self.keep_ended = beat_s, stale_after, keep_ended
        self.identity = identity or ProcessIdentity.current()
        self.slot: int | None = None
        # run after a (re-)registration gave this process a different slot than before
        self.on_slot_changed: Callable[[int], Awaitable[None]] | None = None
        self.on_beat: list[Callable[[], Awaitable[object]]] = []  # e.g. taking over dead runs' deliveries
        self._task: asyncio.Task[None] | None = None

    @property
    def slot_name(self) -> str:
        """ "<node>-<slot>": the same for a process and its restarts, different for processes alive at once."""
        if self.slot is None:
            raise RuntimeError("the process is not registered yet")
        return f"{self.node}-{self.slot}"

    # ---- registering ------------------------------------------------------------------------

    async def register(self) -> int:
        """Write this run's row, in the lowest slot of its node no live run holds; ends the dead runs found there."""
        for _ in range(20):
            try:
                return await self._try_register()
            except IntegrityError:  # another process took the same slot at the same moment: look again
                await asyncio.sleep(0.05)
        raise RuntimeError(f"could not register {self.owner}: every try lost a race for a slot")

    async def _try_register(self) -> int:
        now = self.clock.now()
        here = self.identity.host
        async with self.db.session() as s:
            await s.execute(
                delete(EngineOwner).where(
                    col(EngineOwner.ended_at).is_not(None), col(EngineOwner.ended_at) < now - self.keep_ended
                )
            )
            await s.execute(delete(EngineOwner).where(col(EngineOwner.owner) == self.owner))
            rows = list(
                (
                    await s.execute(
                        select(EngineOwner).where(
                            col(EngineOwner.node) == self.node, col(EngineOwner.live_slot).is_not(None)
                        )
                    )
                ).scalars()
            )
            gone = await asyncio.to_thread(
                lambda: {r.owner for r in rows if gone_here(r.host, r.pid, r.pid_started, here)}
            )
            taken: set[int] = set()
            ended: list[str] = []
            for r in rows:
                if r.owner in gone or r.beat_at < now - self.stale_after:
                    ended.append(r.owner)
                elif r.live_slot is not None:
                    taken.add(r.live_slot)
            if ended:
                await s.execute(
                    update(EngineOwner)
                    .where(col(EngineOwner.owner).in_(ended), col(EngineOwner.ended_at).is_(None))
                    .values(ended_at=now, live_slot=None)
                )
            slot = next(n for n in range(len(taken) + 1) if n not in taken)
            s.add(
                EngineOwner(
                    owner=self.owner,
                    node=self.node,
                    slot=slot,
                    live_slot=slot,
                    host=self.identity.host,
                    pid=self.identity.pid,
                    pid_started=self.identity.started,
                    started_at=now,
                    beat_at=now,
                )
            )
            await s.flush()
        previous, self.slot = self.slot, slot
        log.info("engine.registered", owner=self.owner, slot=self.slot_name, predecessors_ended=ended)
        if previous is not None and previous != slot and self.on_slot_changed is not None:
            await self.on_slot_changed(slot)
        return slot

    async def beat(self) -> bool:
        """Refresh this run's heartbeat. If another process meanwhile found it dead (it hung past `stale_after`),
        register again: its claims are gone, and its slot may be another's now."""
        async with self.db.session() as s:
            result = await s.execute(
                update(EngineOwner)
                .where(col(EngineOwner.owner) == self.owner, col(EngineOwner.ended_at).is_(None))
                .values(beat_at=self.clock.now())
            )
            alive = bool(getattr(result, "rowcount", 0))
        if not alive:
            log.error("engine.declared_dead", owner=self.owner, note="its heartbeat stalled; registering again")
            await self.register()
        return alive

    async def end(self) -> None:
        """Say goodbye: whatever this run still claims may be taken over at once."""
        async with self.db.session() as s:
            await s.execute(
                update(EngineOwner)
                .where(col(EngineOwner.owner) == self.owner, col(EngineOwner.ended_at).is_(None))
                .values(ended_at=self.clock.now(), live_slot=None)
            )

    # ---- who is alive ----------------------------------------------------------------------

    async def verdict(self, owners: Sequence[str] | None = None) -> Verdict:
        """Known-dead and known-alive runs (of `owners`, or all). This run always counts as alive."""
        now = self.clock.now()
        query = select(EngineOwner)
        if owners is not None:
            query = query.where(col(EngineOwner.owner).in_(owners))
        async with self.db.session() as s:
            rows = list((await s.execute(query)).scalars())
        here = self.identity.host
        gone = await asyncio.to_thread(
            lambda: {
                r.owner
                for r in rows
                if r.ended_at is None and r.owner != self.owner and gone_here(r.host, r.pid, r.pid_started, here)
            }
        )
        dead = {
            r.owner
            for r in rows
            if r.owner != self.owner
            and (r.ended_at is not None or r.beat_at < now - self.stale_after or r.owner in gone)
        }
        alive = {r.owner for r in rows if r.owner not in dead} | {self.owner}
        return Verdict(frozenset(dead), frozenset(alive))

    # ---- running ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="engine-heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.slot is not None:  # a process that never started (a CLI command) has no row to end
            await self.end()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)  # wall time: a scaled clock must not make the heartbeat race
            try:
                await self.beat()
                for job in self.on_beat:
                    await job()
            except Exception:  # a failed beat is retried at the next; the row ages meanwhile, nothing else
                log.exception("engine.heartbeat_failed", owner=self.owner)
