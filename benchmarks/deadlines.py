"""Deadline benchmark: 100,000 escalation deadlines fired on time, a backlog fired after an outage, and an idle engine.

Run from the repository root:

    python -m benchmarks.deadlines                     # 100,000 grid workers, due over 60 s
    python benchmarks/deadlines.py --targets 10000 --window 30
    python -m benchmarks.deadlines --profile           # cProfile the backlog phase, print the top

One yellow alert goes to a synthetic 巫溪县 (the fan-out benchmark's county: one grid worker per grid), so every
grid worker is a silent target with a deadline. The benchmark then moves the deadlines and runs the real
escalation loop (`EscalationEngine.start`, system clock) in this process:

1. on time: the step-1 deadlines are spread evenly over `--window` seconds starting shortly after the engine
   starts. Lag = fired_at - due_at of each deadline (the engine's clock when its firing transaction began).
2. backlog: the step-2 deadlines are all overdue (due over the minute before), as after an outage; a new engine
   (another owner, as after a restart) fires them. Throughput = deadlines / time until the last one fired.
3. idle: every remaining deadline is due in 30 minutes; process CPU time over `--idle` seconds, first with the
   escalation loop alone, then with the whole engine (dispatcher loops for seven channels, the APScheduler
   heartbeat), all first-wave deliveries cancelled so that nothing is due anywhere.

Each firing is one transaction: claim fence check, alert and target re-read, the step's delivery, the next
deadline and the hash-chained audit entry. The baseline, timed in the same run on the same database, is a bare
`UPDATE ... SET state='fired' WHERE id=? AND state='pending'` on a scratch table with the deadline table's
columns and index: one transaction per row (the floor for firing deadlines one transaction each), then 100 per
transaction.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: this checkout's packages, not whatever else is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import cProfile
import io
import logging
import os
import platform
import pstats
import random
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from rich.table import Table
from sqlalchemy import Column, Index, Integer, MetaData, String, bindparam, select, update
from sqlalchemy import Table as SqlTable
from sqlmodel import col

from alerting.issue.alerts import AlertRequest
from alerting.model.clock import SystemClock
from alerting.model.domain import ChannelKind, DeadlineState, DeliveryState, Level
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Deadline, Delivery, OrgUnit
from alerting.store.types import UTCDateTime
from benchmarks import AUDIT_KEY
from benchmarks.fanout import COUNTY, Layout, build_county, console, count, mask, peak_rss_mib, read_townships
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from escalation.engine import EscalationEngine
from escalation.policy.rules import PolicySet, load_policy

DEADLINE: Any = Deadline.__table__  # type: ignore[attr-defined]
DELIVERY: Any = Delivery.__table__  # type: ignore[attr-defined]
CHUNK = 5000

# Every person step reaches the silent grid worker again, so each firing writes one delivery and, until the last
# step, the next deadline. Waits are long: nothing fired during the run comes due again during it.
POLICY = """\
levels:
  yellow:
    person_steps:
      - {who: target, channels: [sms], wait_s: 1800}
      - {who: target, channels: [voice], wait_s: 1800}
      - {who: target, channels: [sms], wait_s: 1800}
      - {who: target, channels: [voice], wait_s: 1800}
  red:
    person_steps: [{who: target, channels: [sms], wait_s: 1800}]
  orange:
    person_steps: [{who: target, channels: [sms], wait_s: 1800}]
  blue:
    person_steps: [{who: target, channels: [sms], wait_s: 1800}]
"""


@dataclass
class Firing:
    name: str
    deadlines: int
    seconds: float  # from the engine's start (or the first due time) to the last deadline fired
    lags: list[float]  # seconds from when each could have fired (due, or the engine's start) to when it did
    cpu_s: float
    peak_rss: float = 0.0

    @property
    def rate(self) -> float:
        return self.deadlines / self.seconds if self.seconds else 0.0

    def lag(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class Baseline:
    name: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class Result:
    backend: str
    setup_s: float
    firings: list[Firing]
    baselines: list[Baseline]
    idle: dict[str, float]  # what ran -> CPU seconds per wall second
    problems: list[str] = field(default_factory=list)
    profile: str = ""


def quiet_logs() -> None:
    """Errors only: the engine's per-round warnings (late deadlines) would be measured otherwise."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


async def sandbox_engine(url: str, policy: PolicySet) -> AssembledEngine:
    secret = "benchmark-only"  # noqa: S105  (signs ack links of sandbox messages nobody receives)
    settings = Settings(database_url=url, public_url="https://jy.example.test", secret_key=secret, audit_key=AUDIT_KEY)
    return build_engine(settings, policy=policy, channels={k: SandboxChannel(k) for k in ChannelKind})


# ---- moving deadlines --------------------------------------------------------------------------


async def deadline_ids(db: Database, alert_id: int, step: int) -> list[str]:
    async with db.session() as s:
        rows = await s.execute(
            select(DEADLINE.c.id).where(DEADLINE.c.alert_id == alert_id, DEADLINE.c.step == step).order_by("id")
        )
        return [str(r) for r in rows.scalars()]


async def set_due(db: Database, ids: Sequence[str], first: datetime, span_s: float, seed: int) -> None:
    """Spread the deadlines evenly over [first, first + span_s), in a shuffled order (not the order they were
    written in)."""
    order = list(ids)
    random.Random(seed).shuffle(order)
    n = max(1, len(order))
    changes = [{"b_id": d, "due_at": first + timedelta(seconds=span_s * i / n)} for i, d in enumerate(order)]
    stmt = update(DEADLINE).where(DEADLINE.c.id == bindparam("b_id")).values(due_at=bindparam("due_at"))
    async with db.session() as s:
        conn = await s.connection()
        for i in range(0, len(changes), CHUNK):
            await conn.execute(stmt, changes[i : i + CHUNK])


async def fired_times(db: Database, alert_id: int, step: int) -> list[tuple[datetime, datetime]]:
    async with db.session() as s:
        rows = await s.execute(
            select(DEADLINE.c.due_at, DEADLINE.c.fired_at).where(
                DEADLINE.c.alert_id == alert_id, DEADLINE.c.step == step, DEADLINE.c.state == "fired"
            )
        )
        return [(r.due_at, r.fired_at) for r in rows]


async def wait_fired(db: Database, alert_id: int, step: int, limit_s: float) -> bool:
    """Until no deadline of this step is pending. The pending ones of a step come first in the (state, due_at)
    index, so each look reads a row or two; counting the fired ones would cost the engine more at 100k."""
    query = (
        select(DEADLINE.c.id)
        .where(DEADLINE.c.state == "pending", DEADLINE.c.step == step, DEADLINE.c.alert_id == alert_id)
        .order_by(DEADLINE.c.due_at)
        .limit(1)
    )
    until = time.monotonic() + limit_s
    while time.monotonic() < until:
        async with db.session() as s:
            if (await s.execute(query)).first() is None:
                return True
        await asyncio.sleep(0.5)
    return False


async def fire_phase(
    name: str,
    db: Database,
    escalation: EscalationEngine,
    alert_id: int,
    step: int,
    limit_s: float,
    profile: cProfile.Profile | None = None,
) -> Firing:
    cpu0, wall0 = time.process_time(), datetime.now(UTC)
    if profile is not None:
        profile.enable()
    escalation.start(poll_s=1.0)
    try:
        done = await wait_fired(db, alert_id, step, limit_s)
    finally:
        await escalation.stop()
        if profile is not None:
            profile.disable()
    cpu = time.process_time() - cpu0
    times = await fired_times(db, alert_id, step)
    if not done or not times:
        return Firing(name, len(times), 0.0, [], cpu, peak_rss_mib())
    start = max(wall0, min(due for due, _ in times))  # on time: from the first due; backlog: from the start
    last = max(fired for _, fired in times)
    # how long each waited once the engine could have fired it: for the backlog, the wait behind the others
    lags = [(fired - max(due, wall0)).total_seconds() for due, fired in times]
    return Firing(name, len(times), (last - start).total_seconds(), lags, cpu, peak_rss_mib())


# ---- idle --------------------------------------------------------------------------------------


async def idle_cpu(seconds: float) -> float:
    """CPU seconds this process used per wall second while whatever runs in it runs."""
    await asyncio.sleep(1.0)  # let start-up work settle
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


# ---- baseline ----------------------------------------------------------------------------------


def scratch_table() -> SqlTable:
    return SqlTable(
        "bench_scratch_deadline",
        MetaData(),
        Column("id", String(32), primary_key=True),
        Column("alert_id", Integer, nullable=False),
        Column("target_id", String(32), nullable=False),
        Column("step", Integer, nullable=False),
        Column("due_at", UTCDateTime, nullable=False),
        Column("state", String(16), nullable=False),
        Column("fence", Integer, nullable=False),
        Column("claimed_by", String),
        Column("fired_at", UTCDateTime),
        Index("ix_bench_scratch_deadline_due", "state", "due_at"),
        Index("ix_bench_scratch_deadline_target", "target_id"),
    )


async def baseline(db: Database, rows: int, per_txn: int) -> Baseline:
    table = scratch_table()
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: table.drop(c, checkfirst=True))
        await conn.run_sync(lambda c: table.create(c))
    now = datetime.now(UTC)
    data = [
        {
            "id": uuid.uuid4().hex,
            "alert_id": 1,
            "target_id": uuid.uuid4().hex,
            "step": 1,
            "due_at": now,
            "state": "pending",
            "fence": 0,
        }
        for _ in range(rows)
    ]
    async with db.engine.begin() as conn:
        for i in range(0, rows, CHUNK):
            await conn.execute(table.insert(), data[i : i + CHUNK])
    ids = [d["id"] for d in data]
    start = time.perf_counter()
    for i in range(0, rows, per_txn):
        async with db.session() as s:  # the same sessions the engine uses, SQLite turn-taking included
            for deadline_id in ids[i : i + per_txn]:
                await s.execute(
                    update(table)
                    .where(table.c.id == deadline_id, table.c.state == "pending")
                    .values(state="fired", fired_at=datetime.now(UTC))
                )
    seconds = time.perf_counter() - start
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: table.drop(c))
    return Baseline(f"bare UPDATE, {per_txn} per transaction", rows, seconds)


# ---- the run -----------------------------------------------------------------------------------


async def check_once(db: Database, alert_id: int, steps: Sequence[int], targets: int) -> list[str]:
    """Every target escalated exactly once at each of `steps`, per the audit."""
    async with db.session() as s:
        rows = await s.execute(
            select(col(AuditEvent.subject), col(AuditEvent.data)).where(
                col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "target.escalated"
            )
        )
        per = Counter((subject, int(data["step"])) for subject, data in rows.all())
    problems = []
    for step in steps:
        at_step = [k for k in per if k[1] == step]
        if len(at_step) != targets:
            problems.append(f"step {step}: {len(at_step)} of {targets} targets escalated")
    twice = sum(1 for v in per.values() if v > 1)
    if twice:
        problems.append(f"{twice} (target, step) escalated more than once")
    return problems


async def run(args: argparse.Namespace, url: str) -> Result:
    problems: list[str] = []
    tmp_policy = Path(args.workdir) / "policy.yaml"
    tmp_policy.write_text(POLICY, encoding="utf-8")
    policy = await asyncio.to_thread(load_policy, tmp_policy)

    probe = Database(url)
    await probe.upgrade()
    if await count(probe, OrgUnit):
        await probe.close()
        raise SystemExit(f"{mask(url)} already holds org units: the benchmark needs an empty database")
    townships = await asyncio.to_thread(read_townships)
    started = time.perf_counter()
    await build_county(probe, Layout.for_recipients(townships, args.targets), args.targets)
    await probe.close()

    engine = await sandbox_engine(url, policy)
    db = engine.db
    profile = cProfile.Profile() if args.profile else None
    try:
        issued = await engine.alerts.trigger(
            AlertRequest(
                level=Level.YELLOW,
                hazard="暴雨",
                title="巫溪县暴雨黄色预警（基准测试）",
                text="预计未来6小时内全县大部地区将出现暴雨。",
                units=[COUNTY],
                exercise=True,
            ),
            actor="benchmark",
        )
        n = issued.targets
        setup_s = time.perf_counter() - started
        console.print(f"setup: {n:,} silent targets with a deadline each, in {setup_s:.1f} s")

        # 1. on time
        first = datetime.now(UTC) + timedelta(seconds=args.lead)
        await set_due(db, await deadline_ids(db, issued.alert_id, 1), first, args.window, seed=1)
        on_time = EscalationEngine(db, SystemClock(), owner="escalation/bench/on-time", batch_size=args.claim_batch)
        firings = [
            await fire_phase(
                f"on time: due over {args.window:.0f} s",
                db,
                on_time,
                issued.alert_id,
                1,
                args.lead + args.window + args.limit,
            )
        ]
        console.print(f"phase 1 done: {firings[-1].deadlines:,} fired")

        # 2. backlog after an outage, fired by a restarted engine
        await set_due(db, await deadline_ids(db, issued.alert_id, 2), datetime.now(UTC) - timedelta(minutes=1), 60, 2)
        restarted = EscalationEngine(db, SystemClock(), owner="escalation/bench/restarted", batch_size=args.claim_batch)
        firings.append(
            await fire_phase("backlog: all overdue at start", db, restarted, issued.alert_id, 2, args.limit, profile)
        )
        console.print(f"phase 2 done: {firings[-1].deadlines:,} fired")
        problems += await check_once(db, issued.alert_id, (1, 2), n)
        for f in firings:
            if f.deadlines != n:
                problems.append(f"{f.name}: {f.deadlines:,} of {n:,} fired within the time limit")

        # 3. idle: everything pending is due in half an hour
        pending = await count(db, DEADLINE, DEADLINE.c.state == DeadlineState.PENDING.value)
        async with db.session() as s:
            await s.execute(
                update(DELIVERY).where(DELIVERY.c.state == "pending").values(state=DeliveryState.CANCELLED.value)
            )
        idle: dict[str, float] = {}
        loop_only = EscalationEngine(db, SystemClock(), owner="escalation/bench/idle")
        loop_only.start(poll_s=1.0)
        try:
            idle[f"escalation loop alone ({pending:,} deadlines pending, none due)"] = await idle_cpu(args.idle)
        finally:
            await loop_only.stop()
        await engine.start(loops=True, poll_s=1.0)
        idle["whole engine: escalation + 7 dispatcher loops + heartbeat"] = await idle_cpu(args.idle)
        backend = f"SQLite {sqlite3.sqlite_version}" if db.is_sqlite else db.engine.dialect.name
    finally:
        await engine.stop()

    # baseline, same run, same database
    scratch = Database(url)
    try:
        baselines = [await baseline(scratch, args.baseline_rows, 1), await baseline(scratch, args.baseline_rows, 100)]
    finally:
        await scratch.close()
    text = ""
    if profile is not None:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(r"(alerting|escalation)/", 20)
        text = out.getvalue()
    return Result(backend, setup_s, firings, baselines, idle, problems, text)


# ---- output ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, url: str, r: Result) -> None:
    console.print(
        f"[bold]jiaoying deadlines[/] {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {args.targets:,} targets · "
        f"window {args.window:.0f} s · claim batch {args.claim_batch} · {mask(url)}\n"
        f"Python {platform.python_version()} · {r.backend} · {os.cpu_count()} CPU · "
        f"{platform.machine()} {platform.system()}"
        + (" · [yellow]cProfile on in the backlog phase[/]" if args.profile else "")
    )
    table = Table(title="firing deadlines vs a bare UPDATE per deadline, same run")
    for name, justify in (
        ("phase", "left"),
        ("deadlines", "right"),
        ("wall s", "right"),
        ("fired/s", "right"),
        ("lag p50 s", "right"),
        ("lag p99 s", "right"),
        ("lag max s", "right"),
        ("CPU ms/deadline", "right"),
        ("vs baseline", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    floor = r.baselines[0].rate if r.baselines else 0.0
    for f in r.firings:
        table.add_row(
            f.name,
            f"{f.deadlines:,}",
            f"{f.seconds:.1f}",
            f"{f.rate:,.0f}",
            f"{f.lag(0.5):.3f}",
            f"{f.lag(0.99):.3f}",
            f"{max(f.lags, default=0):.3f}",
            f"{1000 * f.cpu_s / f.deadlines:.2f}" if f.deadlines else "",
            f"{f.rate / floor:.0%}" if floor else "",
        )
    table.add_section()
    for b in r.baselines:
        table.add_row(b.name, f"{b.rows:,}", f"{b.seconds:.1f}", f"{b.rate:,.0f}", "", "", "", "", "")
    console.print(table)
    console.print(
        "lag = fired_at - max(due_at, engine start): for the backlog, the wait behind the others (the audit's "
        "late_by_s also counts the outage); fired/s = deadlines ÷ (last fired_at - first due_at, or - engine start "
        "for the backlog), so on time it is the rate they came due; vs baseline = fired/s ÷ bare UPDATEs/s at one "
        "transaction each."
    )
    idle = Table(title=f"idle: process CPU over {args.idle:.0f} s")
    idle.add_column("running")
    idle.add_column("CPU % of one core", justify="right")
    for what, share in r.idle.items():
        idle.add_row(what, f"{100 * share:.2f}")
    console.print(idle)
    if r.profile:
        console.rule("cProfile, backlog phase")
        console.print(r.profile, markup=False, highlight=False)
    for p in r.problems:
        console.print(f"[bold red]LOST OR TWICE:[/] {p}")
    if not r.problems:
        console.print("[green]every deadline fired once, and every target escalated once per step[/]")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=100_000, help="silent grid workers (default 100000)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds the on-time deadlines are spread over")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds from the engine's start to the first due")
    parser.add_argument("--limit", type=float, default=900.0, help="give up on a phase after this many more seconds")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement, each")
    parser.add_argument("--claim-batch", type=int, default=100, help="deadlines claimed at a time (default 100)")
    parser.add_argument("--baseline-rows", type=int, default=20_000, help="rows for the bare-UPDATE baseline")
    parser.add_argument("--database-url", default=None, help="an EMPTY database; default a fresh SQLite file")
    parser.add_argument("--profile", action="store_true", help="cProfile the backlog phase and print the top")
    args = parser.parse_args(argv)
    if min(args.targets, args.claim_batch, args.baseline_rows) < 1 or args.window <= 0:
        parser.error("--targets, --claim-batch, --baseline-rows and --window must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="jiaoying-deadlines-") as tmp:
        args.workdir = tmp
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'deadlines.db'}"
        result = asyncio.run(run(args, url))
    report(args, url, result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
