"""One board read per change and scope, handed to every screen and poller of that scope.

During a county-wide alert the audit moves many times a second. If each open board read for itself, twenty
duty screens would make twenty full reads per change, in turn, and each would wait behind the others: the
boards stalled for tens of seconds exactly when answers flowed. Here one reader per scope (the county, or
one township's path: the board depends on nothing else) follows the audit chain's end, reads the board when
it moved, at most once per `min_gap_s`, and publishes the snapshot. A stream takes whatever is newest when it
is ready for more, so a slow client skips snapshots and never holds the others back.

A reader runs while someone follows its scope, and `linger_s` after the last poll, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from alerting.model.access import Principal
from alerting.model.clock import Clock, utc
from alerting.store.db import Database
from alerting.views.board import Board, change_stamp, read_board

log = structlog.get_logger()


@dataclass
class _Scope:
    principal: Principal  # the first viewer of this scope; any other reads the same board
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    board: Board | None = None
    stamp: int = -1  # the audit position read just before `board`: the board includes at least this
    read_on: datetime | None = None  # the injected clock's time of that read: ended alerts age off by it
    read_at: float = float("-inf")  # the loop's time of that read: the gap between reads is kept by it
    reads: int = 0  # attempts, successful or not: a waiter knows its request was served
    error: Exception | None = None  # the last attempt's failure, cleared by a good read
    version: int = 0  # moves only when what the board shows changed
    followers: int = 0
    wanted_until: float = float("-inf")
    reader: asyncio.Task[None] | None = None


class BoardHub:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        poll_s: float = 0.5,
        min_gap_s: float = 0.25,
        max_age_s: float = 60.0,
        linger_s: float = 30.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.poll_s = poll_s  # how often the reader looks at the audit's end when nobody asks
        self.min_gap_s = min_gap_s  # however many ask, no more than one full read per this
        self.max_age = timedelta(seconds=max_age_s)  # read again anyway: alerts age off the ended list by time
        self.linger_s = linger_s
        self._scopes: dict[str | None, _Scope] = {}

    async def latest(self, principal: Principal) -> Board:
        """The board as of now: it includes every change committed before this call."""
        scope = self._scope(principal)
        scope.wanted_until = max(scope.wanted_until, asyncio.get_running_loop().time() + self.linger_s)
        stamp = await change_stamp(self.db)
        while not self._current(scope, stamp):
            await self._one_more_read(scope)
        assert scope.board is not None
        # the same counts, stamped now: the page works out "how long ago" from this time
        return scope.board.model_copy(update={"generated_at": utc(self.clock.now())})

    async def follow(self, principal: Principal, *, quiet_s: float | None = None) -> AsyncGenerator[Board | None, None]:
        """The board now, then again each time what it shows changes; the newest when the caller is ready.
        With `quiet_s`, None after each quiet_s without a change, so the caller can look at its session."""
        scope = self._scope(principal)
        scope.followers += 1
        try:
            board = await self.latest(principal)
            seen = scope.version
            yield board
            while True:
                try:
                    await asyncio.wait_for(self._changed_since(scope, seen), quiet_s)
                except TimeoutError:
                    yield None
                    continue
                seen = scope.version
                yield scope.board
        finally:
            scope.followers -= 1

    @staticmethod
    async def _changed_since(scope: _Scope, seen: int) -> None:
        async with scope.changed:
            await scope.changed.wait_for(lambda: scope.version != seen)

    def changed(self) -> None:
        """This process just recorded something the boards count (an answer): look now, not at the next poll."""
        for scope in self._scopes.values():
            scope.poke.set()

    async def close(self) -> None:
        readers = [s.reader for s in self._scopes.values() if s.reader is not None]
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    def _scope(self, principal: Principal) -> _Scope:
        scope = self._scopes.setdefault(principal.unit_path, _Scope(principal))
        if scope.reader is None:
            scope.reader = asyncio.create_task(self._read_while_wanted(scope), name=f"board:{principal.unit_path}")
        return scope

    def _current(self, scope: _Scope, stamp: int) -> bool:
        if scope.board is None or scope.read_on is None or scope.stamp < stamp:
            return False
        return self.clock.now() - scope.read_on < self.max_age

    async def _one_more_read(self, scope: _Scope) -> None:
        """Wait for the reader's next attempt (one in progress may have looked too early: the caller checks);
        raise its failure rather than wait forever on a broken store."""
        asked = scope.reads
        scope.poke.set()
        async with scope.changed:
            await scope.changed.wait_for(lambda: scope.reads > asked)
        if scope.error is not None:
            raise scope.error

    async def _read_while_wanted(self, scope: _Scope) -> None:
        loop = asyncio.get_running_loop()
        try:
            while scope.followers or loop.time() < scope.wanted_until:
                await self._read_if_moved(scope)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(scope.poke.wait(), self.poll_s)
                scope.poke.clear()
                await asyncio.sleep(max(0.0, scope.read_at + self.min_gap_s - loop.time()))
        finally:
            scope.reader = None
            log.debug("board.reader_stopped", scope=scope.principal.unit_path)

    async def _read_if_moved(self, scope: _Scope) -> None:
        try:
            stamp = await change_stamp(self.db)
            if not self._current(scope, stamp):
                now = self.clock.now()
                board = await read_board(self.db, scope.principal, now=now)
                changed = scope.board is None or board.fingerprint() != scope.board.fingerprint()
                scope.board, scope.stamp, scope.read_on = board, stamp, now
                scope.read_at = asyncio.get_running_loop().time()
                scope.version += changed
            scope.error = None
        except Exception as exc:  # the store is busy or gone: say so, and try again at the next look
            log.warning("board.read_failed", scope=scope.principal.unit_path, error=repr(exc))
            scope.error = exc
        finally:
            scope.reads += 1
            async with scope.changed:
                scope.changed.notify_all()
