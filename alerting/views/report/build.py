"""The per-alert audit report: who was called, over what, when it arrived, who answered, who is still silent.

Read (views.report.read), assembled (views.report.assemble) into the model (views.report.model), and checked
against the audit chain per view.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from alerting.audit import chain as audit
from alerting.model.clock import utc
from alerting.store.db import Database
from alerting.views.report.assemble import assemble
from alerting.views.report.chain_notes import chain_notes
from alerting.views.report.model import AlertReport
from alerting.views.report.read import read_snapshot


async def build_unchecked(db: Database, alert_id: int, *, now: datetime, within: str | None = None) -> AlertReport:
    """The report without the audit chain check (`audit.ok` false, "not checked"): what views.report.cache keeps,
    since everything in it holds until the alert's audit position moves, while the chain is checked per view."""
    async with db.session() as session:
        snap = await read_snapshot(session, alert_id, within)
    # Shaping 100,000 rows is seconds of CPU: keep the loop free for acks arriving meanwhile.
    report = await asyncio.to_thread(assemble, snap, now)
    report.scope = within
    return report


def checked(report: AlertReport, chain: audit.Verification, *, now: datetime) -> AlertReport:
    """The report as one view shows it: the chain's state and the time of that view, the rest as built.

    A shallow copy: the recipients are shared with the cached report, which nobody changes.
    """
    status = report.audit.model_copy(
        update={
            "ok": chain.ok,
            "rows": chain.rows,
            "first_bad_seq": chain.first_bad_seq,
            "reason": chain.reason,
            "notes": chain_notes(chain),
        }
    )
    return report.model_copy(update={"audit": status, "generated_at": utc(now)})


async def build_report(db: Database, alert_id: int, *, now: datetime, within: str | None = None) -> AlertReport:
    """The audit report of one alert as the store has it at `now`. Raises LookupError for an unknown alert.

    `within` is a unit path ("/500238/500238101/"): the report then covers only the targets in that subtree.
    """
    report = await build_unchecked(db, alert_id, now=now, within=within)
    # the whole chain, walked in its own short transactions: the report says whether its records can be trusted
    return checked(report, await audit.verify(db), now=now)
