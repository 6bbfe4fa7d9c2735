"""Reports from the cache: two auditors re-open the report of an alert on 凤凰镇 and 宁厂镇 while people answer.

The report is built once per change of the alert's audit position and shared by every view; an answer shows on
the next view; a township officer's report is built and kept apart; the JSON pages its recipients; the CSV
streams all of them. Builds are counted by the build function handed to the cache, not by timing.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from alerting.audit import chain as audit
from alerting.model.domain import ChannelKind
from alerting.store.db import Database
from alerting.views.report.build import build_unchecked
from alerting.views.report.cache import ChainCheck, ReportCache, Reports
from alerting.views.report.export import CSV_HEADERS, render_csv
from alerting.views.report.model import AlertReport
from alerting.views.report.read import audit_position
from alerting.views.report.serve import csv_stream
from alerting.web.app import create_app
from config.wiring import AssembledEngine
from tests.alerting.board_setup import AUDITOR, FENGHUANG, NINGCHANG, TOWNSHIP, issue
from tests.alerting.views.test_board import first_delivery

pytestmark = pytest.mark.both_databases

FENGHUANG_PATH = "/500238/500238101/"


@dataclass
class CountingBuild:
    """build_unchecked, counting its calls; `hold` keeps a build whose reads are done (`read`) from returning."""

    calls: list[tuple[int, str | None]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    read: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, db: Database, alert_id: int, *, now: datetime, within: str | None = None) -> AlertReport:
        self.calls.append((alert_id, within))
        report = await build_unchecked(db, alert_id, now=now, within=within)
        self.read.set()
        if self.hold is not None:
            await self.hold.wait()
        return report


@dataclass
class Site:
    engine: AssembledEngine
    api: httpx.AsyncClient
    builds: CountingBuild
    alert_id: int

    async def report(self, headers: dict[str, str] = AUDITOR, **params: Any) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/alerts/{self.alert_id}/report", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def answer(self, person_id: str) -> None:
        sms = await first_delivery(self.engine.core.db, self.alert_id, person_id)
        await self.engine.core.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=self.engine.core.clock.now())


@pytest.fixture
async def site(engine: AssembledEngine) -> AsyncIterator[Site]:
    app = create_app(engine.core)
    builds = CountingBuild()
    app.state.reports = Reports(engine.core.db, cache=ReportCache(engine.core.db, build=builds))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://jy.test") as client:
        alert_id = await issue(client, [FENGHUANG, NINGCHANG], title="两镇山洪")
        await engine.dispatcher.drain()
        yield Site(engine, client, builds, alert_id)


def _state(body: dict[str, Any], name: str) -> str:
    states = [str(r["state"]) for r in body["report"]["recipients"] if r["name"] == name]
    assert len(states) == 1, states
    return states[0]


async def test_a_second_view_of_an_unchanged_alert_is_served_from_the_cache(site: Site) -> None:
    first = await site.report()
    again = await site.report()
    assert site.builds.calls == [(site.alert_id, None)]
    assert again["report"]["summary"] == first["report"]["summary"]
    assert again["report"]["audit"]["position"] == first["report"]["audit"]["position"] > 0
    # every download of the same report comes from the same build
    for fmt in ("csv", "xlsx", "html"):
        r = await site.api.get(f"/api/v1/alerts/{site.alert_id}/report", params={"format": fmt}, headers=AUDITOR)
        assert r.status_code == 200, r.text
    assert len(site.builds.calls) == 1
    # what is not the build's is the view's: the chain is checked again and the time is the view's own
    assert again["chain"].startswith("审计链校验通过") and again["report"]["audit"]["ok"] is True


async def test_an_answer_shows_on_the_next_view(site: Site) -> None:
    before = await site.report()
    assert _state(before, "网格员甲") == "open"
    await site.answer("g1")
    after = await site.report()
    assert _state(after, "网格员甲") == "answered"
    assert after["report"]["summary"]["answered"] == before["report"]["summary"]["answered"] + 1
    assert after["report"]["audit"]["position"] > before["report"]["audit"]["position"]
    assert after["report"]["audit"]["alert_events"] > before["report"]["audit"]["alert_events"]
    assert len(site.builds.calls) == 2
    await site.report()
    assert len(site.builds.calls) == 2


async def test_views_arriving_together_after_a_change_share_one_rebuild(site: Site) -> None:
    await site.report()
    await site.answer("g2")
    bodies = await asyncio.gather(*(site.report() for _ in range(6)))
    assert len(site.builds.calls) == 2  # the first view, and one rebuild for the six
    assert {_state(b, "网格员乙") for b in bodies} == {"answered"}
    assert len({b["report"]["audit"]["position"] for b in bodies}) == 1


async def test_a_township_report_is_cached_apart_and_holds_only_its_subtree(site: Site) -> None:
    county = await site.report(recipient_limit=500)
    town = await site.report(TOWNSHIP, recipient_limit=500)
    assert site.builds.calls == [(site.alert_id, None), (site.alert_id, FENGHUANG_PATH)]
    assert {r["township_code"] for r in county["report"]["recipients"]} == {FENGHUANG, NINGCHANG}
    assert {r["township_code"] for r in town["report"]["recipients"]} == {FENGHUANG}
    assert town["report"]["scope"] == FENGHUANG_PATH
    assert town["recipients_total"] < county["recipients_total"]
    assert "宁河村主任" not in {r["name"] for r in town["report"]["recipients"]}
    await site.report(TOWNSHIP)
    await site.report()
    assert len(site.builds.calls) == 2
    # an answer in 凤凰镇 moves the alert's position: both reports are rebuilt on their next view, once each
    await site.answer("g1")
    town = await site.report(TOWNSHIP)
    county = await site.report()
    assert _state(town, "网格员甲") == _state(county, "网格员甲") == "answered"
    assert len(site.builds.calls) == 4


async def test_pages_hold_every_recipient_once(site: Site) -> None:
    await site.answer("g1")
    whole = await site.report(recipient_limit=500)
    total = whole["recipients_total"]
    assert total == whole["report"]["summary"]["targets"] == len(whole["report"]["recipients"]) > 4
    seen: list[str] = []
    positions = set()
    for offset in range(0, total + 3, 3):
        page = await site.report(recipient_limit=3, recipient_offset=offset)
        assert (page["recipient_limit"], page["recipient_offset"], page["recipients_total"]) == (3, offset, total)
        assert len(page["report"]["recipients"]) == max(0, min(3, total - offset))
        # the summary and insights are over everyone, whatever the page
        assert page["report"]["summary"] == whole["report"]["summary"]
        assert page["insights"]["recipients"] == total
        seen += [r["target_id"] for r in page["report"]["recipients"]]
        positions.add(page["report"]["audit"]["position"])
    assert seen == [r["target_id"] for r in whole["report"]["recipients"]]  # in order, each once
    assert len(positions) == 1 and len(site.builds.calls) == 1
    default = await site.report()
    assert default["recipient_limit"] == 200 and default["recipient_offset"] == 0
    for bad in ({"recipient_limit": 0}, {"recipient_limit": 501}, {"recipient_offset": -1}):
        r = await site.api.get(f"/api/v1/alerts/{site.alert_id}/report", params=bad, headers=AUDITOR)
        assert r.status_code == 422, bad


async def test_the_csv_streams_every_recipient(site: Site) -> None:
    await site.answer("g1")
    whole = await site.report(recipient_limit=500)
    r = await site.api.get(f"/api/v1/alerts/{site.alert_id}/report", params={"format": "csv"}, headers=AUDITOR)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == CSV_HEADERS
    assert [row[0] for row in rows[1:]] == [str(i) for i in range(1, whole["recipients_total"] + 1)]
    assert sorted(row[7] for row in rows[1:]) == sorted(x["name"] for x in whole["report"]["recipients"])
    # in pieces of two, the stream is the exported file byte for byte
    built = await build_unchecked(site.engine.core.db, site.alert_id, now=site.engine.core.clock.now())
    pieces = list(csv_stream(built, chunk=2))
    assert len(pieces) == -(-len(built.recipients) // 2)
    assert b"".join(pieces) == render_csv(built).encode("utf-8") == r.content


async def test_a_build_begun_before_a_change_is_not_taken_for_it(site: Site) -> None:
    """A view that saw a newer position waits for the build in flight, then for one that has its change."""
    db = site.engine.core.db
    held = CountingBuild(hold=asyncio.Event())
    cache = ReportCache(db, build=held)
    async with db.session() as s:
        before = await audit_position(s, site.alert_id)
    now = site.engine.core.clock.now()
    early = [asyncio.create_task(cache.get(site.alert_id, None, before, now=now)) for _ in range(3)]
    await held.read.wait()  # the build in flight has read the store as it was before the answer
    await site.answer("g1")
    async with db.session() as s:
        after = await audit_position(s, site.alert_id)
    late = asyncio.create_task(cache.get(site.alert_id, None, after, now=now))
    await asyncio.sleep(0)
    assert held.calls == [(site.alert_id, None)]  # the late view joined the build in flight
    assert held.hold is not None
    held.hold.set()
    first = await asyncio.gather(*early)
    assert {b.position for b in first} == {before} and first[0] is first[1] is first[2]
    newer = await late
    assert newer.position == after > before
    assert held.calls == [(site.alert_id, None)] * 2
    assert next(r.state for r in newer.report.recipients if r.name == "网格员甲") == "answered"
    assert await cache.get(site.alert_id, None, after, now=now) is newer


async def test_the_cache_keeps_the_latest_few_reports(site: Site) -> None:
    db = site.engine.core.db
    builds = CountingBuild()
    cache = ReportCache(db, build=builds, max_entries=2)
    now = site.engine.core.clock.now()
    for within in (None, FENGHUANG_PATH, "/500238/500238102/", None):
        await cache.get(site.alert_id, within, 0, now=now)
    # the county's report was dropped for 宁厂镇's, the least recently viewed one
    assert builds.calls == [(site.alert_id, w) for w in (None, FENGHUANG_PATH, "/500238/500238102/", None)]
    await cache.get(site.alert_id, "/500238/500238102/", 0, now=now)
    assert len(builds.calls) == 4
    with pytest.raises(LookupError):
        await cache.get(9999, None, 0, now=now)
    with pytest.raises(LookupError):  # a failed build is not kept: the next view tries again
        await cache.get(9999, None, 0, now=now)
    assert builds.calls[-2:] == [(9999, None)] * 2


async def test_views_share_a_chain_walk_but_never_one_begun_before_they_asked(db: Database) -> None:
    begun: asyncio.Queue[asyncio.Event] = asyncio.Queue()
    walks = 0

    async def verify(_db: Database) -> audit.Verification:
        nonlocal walks
        walks += 1
        done = asyncio.Event()
        begun.put_nowait(done)
        await done.wait()
        return audit.Verification(ok=True, rows=walks)

    chain = ChainCheck(db, verify=verify)
    first = asyncio.create_task(chain.check())
    first_walk = await begun.get()
    # asked while the first walk runs: a row edited meanwhile may be behind it, so these wait for the next one
    later = [asyncio.create_task(chain.check()) for _ in range(4)]
    await asyncio.sleep(0)
    assert walks == 1
    first_walk.set()
    assert (await first).rows == 1
    (await begun.get()).set()
    assert {(await t).rows for t in later} == {2}
    assert walks == 2 and begun.empty()
