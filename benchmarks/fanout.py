"""Fan-out benchmark: one alert to a whole synthetic county, planned, sent over sandbox channels, and counted.

Run from the repository root:

    python -m benchmarks.fanout                       # 100,000 grid workers, yellow (SMS + WeCom)
    python benchmarks/fanout.py --recipients 10000 --level red --batch-size 500
    python -m benchmarks.fanout --database-url postgresql+asyncpg://user:pw@host/emptydb

Every channel, the device channel included, is a zero-latency SandboxChannel, so what is measured is
the engine and its store: planning and durably writing the deliveries, then claiming, composing,
sending and recording them. The same run also times plain batched INSERT and UPDATE of as many rows
on the same database, so the figures can be read against what the storage itself allows.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: this checkout's packages, not whatever else is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import cProfile
import csv
import io
import logging
import math
import os
import platform
import pstats
import resource
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import Table as SqlTable
from sqlalchemy.engine import make_url

from alerting.issue.alerts import AlertRequest
from alerting.model.domain import ChannelKind, DeliveryState, DeviceKind, Level, Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Deadline, Delivery, Device, OrgUnit, Person, Responsibility
from alerting.store.types import UTCDateTime
from benchmarks import AUDIT_KEY
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from escalation.policy.rules import load_policy

COUNTY = "500238"
COUNTY_NAME = "巫溪县"
INSERT_BATCH = 5000  # the same chunk AlertService uses for its inserts
MAX_VILLAGES_PER_TOWNSHIP = 999  # 3 digits of the 12-digit village code
MAX_GRIDS_PER_VILLAGE = 99  # 2 digits of the 14-digit grid code

DELIVERY: Any = Delivery.__table__  # type: ignore[attr-defined]
DEADLINE: Any = Deadline.__table__  # type: ignore[attr-defined]

# wide enough for the table when the output goes to a file or a pipe
console = Console() if sys.stdout.isatty() else Console(width=140)


# ---- the synthetic county ----------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    townships: list[tuple[str, str]]  # (code, name), the 32 real ones
    grids_per_village: int
    villages: int

    @classmethod
    def for_recipients(cls, townships: list[tuple[str, str]], recipients: int) -> Layout:
        # about ten grids a village, more only when the codes would run out
        capacity = len(townships) * MAX_VILLAGES_PER_TOWNSHIP
        per_village = max(10, math.ceil(recipients / capacity))
        if per_village > MAX_GRIDS_PER_VILLAGE:
            raise SystemExit(f"--recipients {recipients} is more grids than the 14-digit codes of one county hold")
        return cls(townships, per_village, math.ceil(recipients / per_village))

    def village(self, i: int) -> tuple[str, str]:
        """Village i as (code, township code): villages are dealt round-robin over the townships."""
        township = self.townships[i % len(self.townships)][0]
        return f"{township}{i // len(self.townships) + 1:03d}", township

    def grid(self, j: int) -> tuple[str, str, str]:
        """Grid j as (code, village code, township code)."""
        village, township = self.village(j // self.grids_per_village)
        return f"{village}{j % self.grids_per_village + 1:02d}", village, township


def read_townships() -> list[tuple[str, str]]:
    text = resources.files("config.demo").joinpath("data/wuxi_townships.csv").read_text(encoding="utf-8")
    return [(row["code"], row["name"]) for row in csv.DictReader(io.StringIO(text)) if row["county_code"] == COUNTY]


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


async def build_county(db: Database, layout: Layout, recipients: int) -> int:
    """County, townships, villages, one grid worker per grid (phone + WeCom), a siren and a broadcast zone per
    township. Returns the number of rows written."""
    units: list[dict[str, Any]] = [
        {"code": COUNTY, "name": COUNTY_NAME, "kind": UnitKind.COUNTY.value, "parent_code": None, "path": f"/{COUNTY}/"}
    ]
    units += [
        {"code": t, "name": name, "kind": UnitKind.TOWNSHIP.value, "parent_code": COUNTY, "path": f"/{COUNTY}/{t}/"}
        for t, name in layout.townships
    ]
    for i in range(layout.villages):
        v, t = layout.village(i)
        units.append(
            {
                "code": v,
                "name": f"第{i + 1}村",
                "kind": UnitKind.VILLAGE.value,
                "parent_code": t,
                "path": f"/{COUNTY}/{t}/{v}/",
            }
        )
    devices = [
        {"id": f"{kind.value}-{t}", "unit_code": t, "kind": kind.value, "name": f"{name}{label}"}
        for t, name in layout.townships
        for kind, label in ((DeviceKind.SIREN, "预警喇叭"), (DeviceKind.BROADCAST_ZONE, "应急广播"))
    ]
    written = len(units) + len(devices)
    async with db.session() as s:
        for part in _chunks(len(units), INSERT_BATCH):
            await s.execute(insert(OrgUnit), units[part.start : part.stop])
        await s.execute(insert(Device), devices)
    for part in _chunks(recipients, INSERT_BATCH):
        grids: list[dict[str, Any]] = []
        people: list[dict[str, Any]] = []
        duties: list[dict[str, Any]] = []
        for j in part:
            g, v, t = layout.grid(j)
            pid = f"g{j:07d}"
            grids.append(
                {
                    "code": g,
                    "name": f"第{g[-2:]}网格",
                    "kind": UnitKind.GRID.value,
                    "parent_code": v,
                    "path": f"/{COUNTY}/{t}/{v}/{g}/",
                }
            )
            people.append(
                {"id": pid, "name": f"网格员{j}", "phone": f"+86139{j:08d}", "wecom_userid": f"wx{j}", "active": True}
            )
            duties.append({"unit_code": g, "person_id": pid, "role": Role.GRID_WORKER.value, "rank": 0})
        async with db.session() as s:
            await s.execute(insert(OrgUnit), grids)
            await s.execute(insert(Person), people)
            await s.execute(insert(Responsibility), duties)
        written += 3 * len(part)
    return written


# ---- measuring ---------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class Phase:
    name: str
    items: int
    unit: str
    row_writes: int
    seconds: float = 0.0
    peak_rss: float = 0.0

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    @property
    def write_rate(self) -> float:
        return self.row_writes / self.seconds if self.seconds else 0.0


@dataclass
class Profiles:
    enabled: bool
    reports: dict[str, str] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def measure(self, name: str, phase: Phase, top: int = 15) -> AsyncIterator[None]:
        profiler = cProfile.Profile() if self.enabled else None
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        try:
            yield
        finally:
            phase.seconds = time.perf_counter() - start
            phase.peak_rss = peak_rss_mib()
            if profiler is not None:
                profiler.disable()
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out)
                stats.sort_stats("tottime").print_stats(top)
                # where the project's own code spends it, callees included
                stats.sort_stats("cumulative").print_stats(r"(alerting|channels|escalation)/", top)
                self.reports[name] = out.getvalue()


async def count(db: Database, table: Any, *where: Any) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table).where(*where)) or 0)


# ---- the baseline: plain batched writes of as many delivery-shaped rows --------------------------


def scratch_table() -> SqlTable:
    """The delivery table's columns and indexes, without its foreign keys: what the storage costs by itself."""
    return SqlTable(
        "bench_scratch_delivery",
        MetaData(),
        Column("id", String(32), primary_key=True),
        Column("alert_id", Integer, nullable=False),
        Column("target_id", String(32), nullable=False),
        Column("person_id", String(64)),
        Column("device_id", String(64)),
        Column("channel", String(16), nullable=False),
        Column("purpose", String(8), nullable=False),
        Column("step", Integer, nullable=False),
        Column("priority", Integer, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("claimed_by", String),
        Column("claimed_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False),
        Column("sent_at", UTCDateTime),
        Column("delivered_at", UTCDateTime),
        Column("provider", String),
        Column("provider_id", String),
        Column("sandbox", Boolean, nullable=False),
        Column("error", String),
        Column("detail", JSON),
        Index("ix_bench_scratch_queue", "channel", "state", "priority", "next_attempt_at"),
        Index("ix_bench_scratch_alert_target", "alert_id", "target_id"),
        Index("ix_bench_scratch_provider_id", "provider_id"),
    )


def scratch_rows(n: int, now: datetime) -> list[dict[str, Any]]:
    channels = (ChannelKind.SMS.value, ChannelKind.WECOM.value)
    return [
        {
            "id": uuid.uuid4().hex,
            "alert_id": 1,
            "target_id": uuid.uuid4().hex,
            "person_id": f"g{i // 2:07d}",
            "device_id": None,
            "channel": channels[i % 2],
            "purpose": "warn",
            "step": 0,
            "priority": 1,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "sandbox": False,
            "detail": None,
        }
        for i in range(n)
    ]


async def baseline(db: Database, rows: int, batch_size: int, insert_phase: Phase, update_phase: Phase) -> None:
    """Raw INSERT in one transaction (as trigger does), then UPDATE by id in one transaction per batch (as the
    dispatcher records). The rows are built before the clock starts: only the database work is timed."""
    table = scratch_table()
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: table.drop(c, checkfirst=True))
        await conn.run_sync(lambda c: table.create(c))
    now = datetime.now(UTC)
    data = scratch_rows(rows, now)
    start = time.perf_counter()
    async with db.engine.begin() as conn:
        for part in _chunks(rows, INSERT_BATCH):
            await conn.execute(insert(table), data[part.start : part.stop])
    insert_phase.seconds, insert_phase.peak_rss = time.perf_counter() - start, peak_rss_mib()
    changes = [
        {
            "b_id": r["id"],
            "state": DeliveryState.SENT.value,
            "attempts": 1,
            "sent_at": now,
            "provider": "sandbox",
            "provider_id": f"sandbox-{r['id']}",
            "sandbox": True,
        }
        for r in data
    ]
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            state=bindparam("state"),
            attempts=bindparam("attempts"),
            sent_at=bindparam("sent_at"),
            provider=bindparam("provider"),
            provider_id=bindparam("provider_id"),
            sandbox=bindparam("sandbox"),
        )
    )
    start = time.perf_counter()
    for part in _chunks(rows, batch_size):
        async with db.engine.begin() as conn:
            await conn.execute(stmt, changes[part.start : part.stop])
    update_phase.seconds, update_phase.peak_rss = time.perf_counter() - start, peak_rss_mib()
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: table.drop(c))


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class Result:
    phases: list[Phase]
    baselines: list[Phase]
    states: dict[str, int]
    planned: int
    handed_to_channels: int
    by_channel: dict[str, int]
    problems: list[str]
    profiles: Profiles
    backend: str


def quiet_logs() -> None:
    """Warnings and up only, on stderr: per-delivery logging would be measured otherwise, and drown the table."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


async def sandbox_engine(url: str) -> AssembledEngine:
    secret = "benchmark-only"  # noqa: S105  (signs ack links of sandbox messages nobody receives)
    settings = Settings(database_url=url, public_url="https://jy.example.test", secret_key=secret, audit_key=AUDIT_KEY)
    policy = await asyncio.to_thread(load_policy, None)
    return build_engine(settings, policy=policy, channels={k: SandboxChannel(k) for k in ChannelKind})


async def run(args: argparse.Namespace, url: str) -> Result:
    problems: list[str] = []
    profiles = Profiles(args.profile)
    db_probe = Database(url)
    await db_probe.upgrade()
    if await count(db_probe, OrgUnit):
        await db_probe.close()
        raise SystemExit(f"{mask(url)} already holds org units: the benchmark needs an empty database")
    townships = await asyncio.to_thread(read_townships)
    layout = Layout.for_recipients(townships, args.recipients)

    setup = Phase("setup: insert county", args.recipients, "recipients", 0)
    start = time.perf_counter()
    setup.row_writes = await build_county(db_probe, layout, args.recipients)
    setup.seconds, setup.peak_rss = time.perf_counter() - start, peak_rss_mib()
    await db_probe.close()

    engine = await sandbox_engine(url)
    engine.dispatcher.batch_size = args.batch_size
    try:
        await engine.start(loops=False)
        db = engine.db
        request = AlertRequest(
            level=Level(args.level),
            hazard="暴雨",
            title=f"{COUNTY_NAME}暴雨{Level(args.level).label}预警（基准测试）",
            text="预计未来6小时内全县大部地区将出现暴雨，局地大暴雨，请做好防范。",
            instructions="请网格员立即通知到户到人，并回复“收到”。",
            units=[COUNTY],
            exercise=True,
        )
        audit_before = await count(db, AuditEvent)
        plan = Phase("1 plan: trigger", 0, "deliveries", 0)
        async with profiles.measure("plan", plan):
            issued = await engine.alerts.trigger(request, actor="benchmark")
        deadlines = await count(db, DEADLINE, DEADLINE.c.alert_id == issued.alert_id)
        audit_after_plan = await count(db, AuditEvent)
        plan.items = issued.deliveries
        plan.row_writes = 1 + issued.targets + issued.deliveries + deadlines + (audit_after_plan - audit_before)
        if issued.targets != args.recipients + (2 * len(townships) if issued.by_channel.get("device") else 0):
            problems.append(f"{issued.targets} targets planned for {args.recipients} recipients")

        send = Phase("2 send: drain", 0, "deliveries", 0)
        sent_total = 0
        async with profiles.measure("send", send):
            while (done := await engine.dispatcher.drain()) > 0:
                sent_total += done
        audit_after_send = await count(db, AuditEvent)
        send.items = sent_total
        # each delivery is written twice (claimed as sending, then recorded as sent) plus its audit row
        send.row_writes = 2 * sent_total + (audit_after_send - audit_after_plan)

        async with db.session() as s:
            states = {
                str(state): int(n)
                for state, n in (
                    await s.execute(
                        select(DELIVERY.c.state, func.count())
                        .where(DELIVERY.c.alert_id == issued.alert_id)
                        .group_by(DELIVERY.c.state)
                    )
                ).all()
            }
        handed = sum(c.sent for c in engine.channels.values() if isinstance(c, SandboxChannel))
        sent_rows = states.get(DeliveryState.SENT.value, 0)
        if sent_rows != issued.deliveries:
            problems.append(f"{sent_rows} of {issued.deliveries} planned deliveries are in state sent")
        if sum(states.values()) != issued.deliveries:
            problems.append(f"{sum(states.values())} delivery rows found, {issued.deliveries} planned")
        if handed != issued.deliveries:
            problems.append(f"the channels were handed {handed} messages for {issued.deliveries} deliveries")
        if sent_total != issued.deliveries:
            problems.append(f"the dispatcher claimed {sent_total} deliveries for {issued.deliveries} planned")

        dialect = db.engine.dialect
        version = ".".join(str(v) for v in dialect.server_version_info or ())
        backend = f"SQLite {sqlite3.sqlite_version}" if db.is_sqlite else f"{dialect.name} {version}"
        base_insert = Phase("baseline: raw INSERT", issued.deliveries, "rows", issued.deliveries)
        base_update = Phase("baseline: raw UPDATE", issued.deliveries, "rows", issued.deliveries)
        await baseline(db, issued.deliveries, args.batch_size, base_insert, base_update)
    finally:
        await engine.stop()
    return Result(
        [setup, plan, send],
        [base_insert, base_update],
        states,
        issued.deliveries,
        handed,
        issued.by_channel,
        problems,
        profiles,
        backend,
    )


# ---- output ------------------------------------------------------------------------------------


def mask(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def report(args: argparse.Namespace, url: str, result: Result) -> None:
    setup, plan, send = result.phases
    base_insert, base_update = result.baselines
    console.print(
        f"[bold]jiaoying fan-out[/] {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {args.recipients:,} recipients · "
        f"level {args.level} · dispatcher batch {args.batch_size} · {mask(url)}\n"
        f"Python {platform.python_version()} · {result.backend} · {os.cpu_count()} CPU · "
        f"{platform.machine()} {platform.system()}"
        + (" · [yellow]cProfile on: timings include its overhead[/]" if args.profile else "")
    )
    table = Table(title="engine vs. the same database written plainly, same run")
    for col, justify in (
        ("phase", "left"),
        ("items", "right"),
        ("wall s", "right"),
        ("items/s", "right"),
        ("row writes", "right"),
        ("row writes/s", "right"),
        ("vs baseline", "right"),
        ("peak RSS MiB", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def row(p: Phase, against: Phase | None) -> None:
        ratio = f"{p.rate / against.rate:.0%}" if against and against.rate else ""
        table.add_row(
            p.name,
            f"{p.items:,} {p.unit}",
            f"{p.seconds:.2f}",
            f"{p.rate:,.0f}",
            f"{p.row_writes:,}",
            f"{p.write_rate:,.0f}",
            ratio,
            f"{p.peak_rss:,.0f}",
        )

    row(setup, None)
    row(plan, base_insert)
    row(send, base_update)
    table.add_section()
    row(base_insert, None)
    row(base_update, None)
    console.print(table)
    console.print(
        "vs baseline = deliveries/s of the phase ÷ rows/s of the plain write of as many delivery-shaped rows "
        f"(INSERT: one transaction, chunks of {INSERT_BATCH}; UPDATE by id: one transaction per {args.batch_size})."
    )
    states = ", ".join(f"{k} {v:,}" for k, v in sorted(result.states.items()))
    channels = ", ".join(f"{k} {v:,}" for k, v in sorted(result.by_channel.items()))
    console.print(
        f"planned {result.planned:,} ({channels}); in the store: {states}; "
        f"handed to sandbox channels: {result.handed_to_channels:,}"
    )
    for name, text in result.profiles.reports.items():
        console.rule(f"cProfile, {name} phase, top by own time")
        console.print(text, markup=False, highlight=False)
    if result.problems:
        for p in result.problems:
            console.print(f"[bold red]LOST OR PENDING:[/] {p}")
    else:
        console.print("[green]every planned delivery was sent and recorded once[/]")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000, help="grid workers in the county (default 100000)")
    parser.add_argument(
        "--level",
        choices=[lv.value for lv in Level],
        default=Level.YELLOW.value,
        help="yellow: SMS + WeCom per recipient; red adds voice, sirens and broadcast zones",
    )
    parser.add_argument("--batch-size", type=int, default=200, help="deliveries the dispatcher claims per round")
    parser.add_argument(
        "--database-url",
        default=None,
        help="an EMPTY database to run on (e.g. PostgreSQL); default a fresh SQLite file in a tmp dir",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the plan and send phases, print the top")
    args = parser.parse_args(argv)
    if args.recipients < 1 or args.batch_size < 1:
        parser.error("--recipients and --batch-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="jiaoying-bench-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'fanout.db'}"
        result = asyncio.run(run(args, url))
    report(args, url, result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
