"""Alert reports from a cache keyed by the alert's audit position: one build per change, shared by every view.

The key is (alert id, unit path of the viewer's subtree, position), the position being the highest audit seq
carrying the alert's id (read.audit_position). Everything the report reads from the alert's own rows changes
only in a transaction that also appends such an event: the alert issued, planned, updated, lifted, cancelled or
closed; every delivery sent, retried or failed and every provider report on it; every escalation step; every
answer, answer on behalf and later feedback. So a report built at position P holds until the position moves, and
the first view after it moves waits for a rebuild: an answer shows on the next view, never a stale one.

Fresh on every view, never cached:
- `generated_at`, the time of the view;
- the audit chain check (ChainCheck): it walks the whole chain, and an edited row moves no position.
The report has no other part that depends on the clock: who is silent is the targets' state, and answer times
are counted from the alert's creation.

Not in the key, because nothing audits them: a delivery being claimed (待发送 → 发送中, and back to 待发送 when a
dispatcher puts it back) shows its new state with its outcome, which is audited; a name or phone edited in the
directory after the build shows from the alert's next event on.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import structlog

from alerting.audit import chain as audit
from alerting.model.access import Principal, check_alert
from alerting.store.db import Database
from alerting.views.report.build import build_unchecked, checked
from alerting.views.report.chain_notes import chain_notes
from alerting.views.report.export import chain_text
from alerting.views.report.model import AlertReport
from alerting.views.report.read import audit_position
from alerting.views.review.insights import Insights, charts_for, insights

log = structlog.get_logger()

Key = tuple[int, str | None]  # (alert id, unit path); the position is the entry's


class Build(Protocol):
    def __call__(
        self, db: Database, alert_id: int, *, now: datetime, within: str | None = None
    ) -> Awaitable[AlertReport]: ...


Verify = Callable[[Database], Coroutine[Any, Any, audit.Verification]]


@dataclass(frozen=True)
class Built:
    """A report as built at its position, with what is derived from it alone (pure functions of it)."""

    report: AlertReport  # unchecked: its chain status and generated_at are the view's to fill in
    insights: Insights
    charts: Mapping[str, str]  # inline SVGs for the page and the HTML report

    @property
    def position(self) -> int:
        return self.report.audit.position


@dataclass(frozen=True)
class Viewed:
    """A report as one view shows it: the cached build, this view's time and this view's chain check."""

    report: AlertReport
    insights: Insights
    charts: Mapping[str, str]
    chain: str  # the chain's state in words


def _derive(report: AlertReport) -> Built:
    found = insights(report)
    return Built(report, found, charts_for(report, found))


class ReportCache:
    """The latest build of each (alert, subtree), least recently viewed dropped first.

    Bounded by entries and by recipients held: as objects a report takes about 15 KB a recipient (28 MB for the
    巫溪 sample's 1,933), so the default holds about five county-wide reports. At most one build
    per key is in flight; views needing a newer one than the cache holds wait for it instead of starting their
    own. The build runs as a task of its own, so it finishes and is kept even if every view waiting for it is gone.
    """

    def __init__(
        self, db: Database, *, build: Build = build_unchecked, max_entries: int = 32, max_recipients: int = 10_000
    ) -> None:
        self._db, self._build = db, build
        self.max_entries, self.max_recipients = max_entries, max_recipients
        self._entries: OrderedDict[Key, Built] = OrderedDict()
        self._flights: dict[Key, asyncio.Task[Built]] = {}

    async def get(self, alert_id: int, within: str | None, position: int, *, now: datetime) -> Built:
        """The report of the alert (inside `within`) holding at least everything up to `position`.

        Raises LookupError for an unknown alert."""
        key = (alert_id, within)
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry.position >= position:
                self._entries.move_to_end(key)
                return entry
            flight = self._flights.get(key)
            if flight is None or flight.done():  # done but not yet put in the cache: its answer is behind us
                flight = asyncio.create_task(self._rebuild(key, now), name=f"report-{alert_id}")
                self._flights[key] = flight
                flight.add_done_callback(partial(self._landed, key))
            # shielded: a view that goes away does not cancel the build the others wait for
            built = await asyncio.shield(flight)
            if built.position >= position:
                return built
            # that build read its position before the event this view saw: the next one has it

    async def _rebuild(self, key: Key, now: datetime) -> Built:
        alert_id, within = key
        began = time.perf_counter()
        report = await self._build(self._db, alert_id, now=now, within=within)
        built = await asyncio.to_thread(_derive, report)  # seconds of CPU for a county: off the loop
        log.info(
            "report.built",
            alert_id=alert_id,
            scope=within,
            position=built.position,
            recipients=len(report.recipients),
            seconds=round(time.perf_counter() - began, 3),
        )
        return built

    def _landed(self, key: Key, flight: asyncio.Task[Built]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.cancelled() or flight.exception() is not None:  # retrieved: the waiters have it, if any are left
            return
        built = flight.result()
        held = self._entries.get(key)
        if held is None or held.position <= built.position:
            self._entries[key] = built
            self._entries.move_to_end(key)
        self._shrink()

    def _shrink(self) -> None:
        held = sum(len(e.report.recipients) for e in self._entries.values())
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or held > self.max_recipients):
            _, dropped = self._entries.popitem(last=False)
            held -= len(dropped.report.recipients)


def _task(walk: Coroutine[Any, Any, audit.Verification], name: str) -> asyncio.Task[audit.Verification]:
    task = asyncio.create_task(walk, name=name)
    # a failed walk whose views all went away is not worth a "never retrieved" warning; the next view walks again
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


class ChainCheck:
    """The whole-chain walk, fresh for every view but shared between views asking at the same time.

    A view never takes the answer of a walk that began before it asked: a row edited meanwhile may be behind that
    walk already. It waits for the next walk instead, which every view arriving during the current one shares. So
    at most one walk runs, and one more waits to.
    """

    def __init__(self, db: Database, *, verify: Verify = audit.verify) -> None:
        self._db, self._verify = db, verify
        self._running: asyncio.Task[audit.Verification] | None = None
        self._queued: asyncio.Task[audit.Verification] | None = None

    async def check(self) -> audit.Verification:
        if self._queued is None:
            if self._running is None or self._running.done():
                self._running = _task(self._verify(self._db), "chain-check")
                return await asyncio.shield(self._running)
            self._queued = _task(self._after(self._running), "chain-check-next")
        return await asyncio.shield(self._queued)

    async def _after(self, running: asyncio.Task[audit.Verification]) -> audit.Verification:
        await asyncio.wait([running])  # its outcome is for its own views
        self._running, self._queued = self._queued, None  # this task: views arriving from now on queue after it
        return await self._verify(self._db)


class Reports:
    """What the API and the console ask for: one alert's report as the viewer may see it, built once per change."""

    def __init__(self, db: Database, *, cache: ReportCache | None = None, chain: ChainCheck | None = None) -> None:
        self.db = db
        self.cache = cache or ReportCache(db)
        self.chain = chain or ChainCheck(db)

    async def _position(self, who: Principal, alert_id: int) -> int | None:
        async with self.db.session() as s:
            if not await check_alert(s, who, alert_id):
                return None
            return await audit_position(s, alert_id)

    async def built(self, who: Principal, alert_id: int, *, now: datetime) -> Built | None:
        """The build alone, for what shows no chain status and no time (the CSV). None if the alert does not exist
        or lies outside the viewer's subtree (the same answer for both)."""
        position = await self._position(who, alert_id)
        if position is None:
            return None
        try:
            return await self.cache.get(alert_id, who.unit_path, position, now=now)
        except LookupError:
            return None

    async def view(self, who: Principal, alert_id: int, *, now: datetime) -> Viewed | None:
        """The build with this view's chain check and time; None as for `built`."""
        position = await self._position(who, alert_id)
        if position is None:
            return None
        try:
            built, walked = await asyncio.gather(
                self.cache.get(alert_id, who.unit_path, position, now=now), self.chain.check()
            )
        except LookupError:
            return None
        words = chain_text(walked.ok, walked.rows, walked.first_bad_seq, walked.reason, chain_notes(walked))
        return Viewed(checked(built.report, walked, now=now), built.insights, built.charts, words)
