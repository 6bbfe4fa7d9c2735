"""Engines benchmark: the delivery pipeline with 1, 2 and 4 `jiaoying engine run` processes on one PostgreSQL.

Run from the repository root:

    python -m benchmarks.engines                          # 20,000 grid workers, engines 1, 2 and 4
    python -m benchmarks.engines --recipients 5000 --engines 1,2,3,4
    python benchmarks/engines.py --poll 0.2 --claim-batch 100

A throwaway PostgreSQL is started with initdb in a temporary directory (tests/postgres.py: as the `postgres` user
when we are root, durability off: fsync, synchronous commit and full-page writes). The schema is migrated once,
into a template. Then, for each number of engines K (the same-run baseline K=1 first):

1. a fresh database copied from the template; the fan-out benchmark's synthetic 巫溪县 inserted into it (one grid
   worker per grid, phone and WeCom);
2. a yellow exercise alert on the whole county issued in this process (AlertService through
   config.wiring.build_engine with sandbox channels; issuing plans and writes, it does not send): 2 deliveries
   per grid worker, SMS and WeCom;
3. K real `jiaoying engine run --sandbox-devices` processes (the command next to sys.executable), all under one
   JIAOYING_NODE, as several processes on one machine run in a deployment (people/liveness: a live process's
   claims are never taken, whatever its node); every provider unconfigured, so every channel is a zero-latency
   sandbox and what is measured is the engines and the store;
4. wall time from starting them until no delivery of the alert is `pending` or `sending` (the database polled
   every 100 ms), then SIGTERM, SIGKILL after 10 s.

Correctness is counted from the store: the audit's `delivery.sent` events per delivery id (sent more than once,
never sent), the rows' final states, `dispatch.resumed` events (a process that took over another's claims), the
audit chain verified end to end. How the work was shared: `delivery.claimed_by` (the owner, "<node>/<run>") and the
audit events' actors, per engine process. The run exits 1 if any delivery was lost or sent twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: this checkout's packages, not whatever else is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from alerting.audit.chain import verify
from alerting.issue.alerts import AlertRequest
from alerting.model.domain import DeliveryState, Level
from alerting.people.liveness import node_name
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery, EngineOwner
from benchmarks import AUDIT_KEY
from benchmarks.fanout import (
    COUNTY,
    COUNTY_NAME,
    Layout,
    build_county,
    console,
    mask,
    quiet_logs,
    read_townships,
    sandbox_engine,
)
from tests.postgres import PostgresServer, find_bin_dir

DELIVERY: Any = Delivery.__table__  # type: ignore[attr-defined]
IN_FLIGHT = (DeliveryState.PENDING.value, DeliveryState.SENDING.value)
POLL_S = 0.1  # how often the store is asked whether the engines are done
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long
SECRET = "benchmark-only-secret"  # noqa: S105  (signs answer links of sandbox messages nobody receives)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the machine ------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def proc_cpu_s(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of a process (and of its reaped children), from /proc; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()  # fields from 3 on; utime is field 14
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def server_cpu_s(postmaster: int) -> float:
    """CPU of the whole PostgreSQL server: the postmaster, the backends it reaped, and the ones still running."""
    total = proc_cpu_s(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == postmaster:  # field 4, the parent pid
            total += proc_cpu_s(int(entry.name))
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the engine processes ---------------------------------------------------------------------


def engine_command() -> Path:
    command = Path(sys.executable).parent / "jiaoying"
    if not command.is_file():
        raise SystemExit(f"{command} not found: install the checkout first (`.venv/bin/pip install -e .`)")
    return command


@dataclass
class EngineProcess:
    index: int
    log_file: Path
    process: subprocess.Popen[bytes]
    cpu_s: float = 0.0
    exit: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2500) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_errors(self) -> int:
        """Lines the engine logged at error level or above (structlog JSON on stderr)."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return 0
        return sum(1 for line in lines if re.search(r'"level":\s*"(error|critical|exception)"', line))


def start_engines(k: int, url: str, workdir: Path, node: str, args: argparse.Namespace) -> list[EngineProcess]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JIAOYING_")}
    env.update(
        JIAOYING_DATABASE_URL=url,
        JIAOYING_SECRET_KEY=SECRET,
        JIAOYING_AUDIT_KEY=AUDIT_KEY,  # the audit this process verifies afterwards, signed alike
        JIAOYING_NODE=node,  # one machine, one node: what a deployment of several processes per host does
        JIAOYING_PUBLIC_URL="https://jy.example.test",
        JIAOYING_CONFIG=str(workdir / "no-such-config.toml"),  # no jiaoying.toml from anywhere
        JIAOYING_LOG_LEVEL="info",
    )
    command = [str(engine_command()), "engine", "run", "--sandbox-devices", "--poll", str(args.poll)]
    if args.claim_batch is not None:
        command += ["--claim-batch", str(args.claim_batch)]
    procs: list[EngineProcess] = []
    for i in range(k):
        log_file = workdir / f"engine-k{k}-{i + 1}.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this process only; it stops them itself
            )
        procs.append(EngineProcess(i + 1, log_file, process))
    return procs


async def stop_engines(procs: Sequence[EngineProcess]) -> None:
    """SIGTERM to each, SIGKILL to whichever has not exited STOP_GRACE_S later."""
    for p in procs:
        if p.process.poll() is None:
            p.cpu_s = proc_cpu_s(p.pid)
            p.process.send_signal(signal.SIGTERM)

    async def exited(p: EngineProcess) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(p.process.wait, STOP_GRACE_S)

    await asyncio.gather(*(exited(p) for p in procs))  # side by side: 10 s at most for all of them
    for p in procs:
        if p.process.poll() is None:
            p.process.kill()
            p.process.wait()
            p.exit = "SIGKILL"
        elif not p.exit:
            p.exit = f"exit {p.process.returncode}"


# ---- watching the store while they run -------------------------------------------------------

ACTIVITY = text(
    "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


@dataclass
class Activity:
    """pg_stat_activity sampled at every poll: how many backends were busy, and on what they waited."""

    samples: int = 0
    active: int = 0
    idle_in_transaction: int = 0
    lock_waits: Counter[str] = field(default_factory=Counter)

    async def sample(self, conn: AsyncConnection) -> None:
        self.samples += 1
        for state, wait_type, wait_event, query in (await conn.execute(ACTIVITY)).all():
            if state == "active":
                self.active += 1
            elif state == "idle in transaction":
                self.idle_in_transaction += 1
            if wait_type == "Lock":
                self.lock_waits[f"{wait_event}: {statement_of(str(query or ''))}"] += 1

    def mean(self, n: int) -> float:
        return n / self.samples if self.samples else 0.0


def statement_of(query: str) -> str:
    """ "UPDATE audit_head" for "UPDATE audit_head SET seq=… WHERE …": the verb and the table it works on."""
    words = query.split()
    if not words:
        return "?"
    verb = words[0].upper()
    after = {"UPDATE": "UPDATE", "INSERT": "INTO", "DELETE": "FROM", "SELECT": "FROM"}.get(verb)
    upper = [w.upper() for w in words]
    if after is not None and after in upper[:-1]:
        return f"{verb} {words[upper.index(after) + 1].strip('(),')}"
    return " ".join(words[:3])[:40]


async def in_flight(conn: AsyncConnection, alert_id: int) -> int:
    remaining = await conn.scalar(
        select(func.count())
        .select_from(DELIVERY)
        .where(DELIVERY.c.alert_id == alert_id, DELIVERY.c.state.in_(IN_FLIGHT))
    )
    return int(remaining or 0)


async def pg_deadlocks(conn: AsyncConnection) -> int:
    found = await conn.scalar(text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
    return int(found or 0)


# ---- one run ----------------------------------------------------------------------------------


@dataclass
class Share:
    """One engine process's part of the sending."""

    engine: str  # "#2 s1 pid 1234": the process, its slot on the node, its pid
    owner: str
    claimed_rows: int  # delivery rows whose claimed_by is this owner
    audit_sends: int  # delivery.sent events this owner wrote
    claim_rounds: int  # distinct claimed_at: each claim stamps its batch with one time
    first_sent_s: float | None
    last_sent_s: float | None
    cpu_s: float
    exit: str
    log_errors: int


@dataclass
class Run:
    engines: int
    deliveries: int = 0
    wall_s: float = 0.0
    drained: bool = False
    ready_s: float | None = None  # the last engine registered, after the start
    first_sent_s: float | None = None
    last_sent_s: float | None = None
    sent_twice: int = 0
    never_sent: int = 0
    extra_sends: int = 0  # delivery.sent events beyond the first of each delivery
    states: dict[str, int] = field(default_factory=dict)
    resumed: int = 0  # dispatch.resumed events: claims taken over from a process found dead
    chain_ok: bool = False
    chain_rows: int = 0
    shares: list[Share] = field(default_factory=list)
    activity: Activity = field(default_factory=Activity)
    deadlocks: int = 0
    engine_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    machine_busy: float = 0.0  # cores busy on average over the wall time
    load_before: float = 0.0
    setup_s: float = 0.0
    issue_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s else 0.0

    @property
    def span_s(self) -> float | None:
        if self.first_sent_s is None or self.last_sent_s is None:
            return None
        return self.last_sent_s - self.first_sent_s

    @property
    def span_rate(self) -> float | None:
        span = self.span_s
        return self.deliveries / span if span else None


def seconds_after(at: datetime | None, start: datetime) -> float | None:
    return None if at is None else (at - start).total_seconds()


async def run_one(
    server: PostgresServer, template: str, k: int, args: argparse.Namespace, workdir: Path, node: str
) -> Run:
    run = Run(k, load_before=os.getloadavg()[0])
    url = await server.create_database(template=template)
    try:
        await setup_and_measure(run, server, url, args, workdir, node)
    finally:
        await server.drop_database(url)
    return run


async def setup_and_measure(
    run: Run, server: PostgresServer, url: str, args: argparse.Namespace, workdir: Path, node: str
) -> None:
    # the county and the alert, written by this process; nothing is sent here
    started = time.perf_counter()
    engine = await sandbox_engine(url)
    try:
        layout = Layout.for_recipients(await asyncio.to_thread(read_townships), args.recipients)
        await build_county(engine.db, layout, args.recipients)
        run.setup_s = time.perf_counter() - started
        started = time.perf_counter()
        issued = await engine.alerts.trigger(
            AlertRequest(
                level=Level.YELLOW,
                hazard="暴雨",
                title=f"{COUNTY_NAME}暴雨黄色预警（多引擎基准测试）",
                text="预计未来6小时内全县大部地区将出现暴雨，请做好防范。",
                instructions="请网格员立即通知到户到人，并回复“收到”。",
                units=[COUNTY],
                exercise=True,
            ),
            actor="benchmark",
        )
        run.issue_s = time.perf_counter() - started
    finally:
        await engine.stop()
    alert_id = issued.alert_id
    run.deliveries = issued.deliveries

    db = Database(url)
    assert server.process is not None
    postmaster = server.process.pid
    procs: list[EngineProcess] = []
    try:
        async with db.engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            if await in_flight(conn, alert_id) != run.deliveries:
                run.problems.append("the deliveries were not all pending before the engines started")
            deadlocks_before = await pg_deadlocks(conn)
            server_before, machine_before, own_before = server_cpu_s(postmaster), machine_ticks(), own_cpu_s()
            start_at = datetime.now(UTC)
            start = time.perf_counter()
            procs = start_engines(run.engines, url, workdir, node, args)
            try:
                while True:
                    remaining = await in_flight(conn, alert_id)
                    if remaining == 0:
                        run.drained = True
                        break
                    exited = [p for p in procs if p.process.poll() is not None]
                    if exited:
                        for p in exited:
                            p.exit = f"exited {p.process.returncode} while sending"
                        run.problems.append(
                            f"engine {', '.join(f'#{p.index}' for p in exited)} exited before the queue was empty"
                        )
                        break
                    if time.perf_counter() - start > args.timeout:
                        run.problems.append(f"{remaining:,} deliveries still pending or sending after {args.timeout} s")
                        break
                    await run.activity.sample(conn)
                    await asyncio.sleep(POLL_S)
                run.wall_s = time.perf_counter() - start
                machine_after = machine_ticks()
                run.server_cpu_s = server_cpu_s(postmaster) - server_before
                run.bench_cpu_s = own_cpu_s() - own_before
                busy, total = (a - b for a, b in zip(machine_after, machine_before, strict=True))
                run.machine_busy = (os.cpu_count() or 1) * busy / total if total else 0.0
            finally:
                await stop_engines(procs)
            run.deadlocks = await pg_deadlocks(conn) - deadlocks_before
            run.engine_cpu_s = sum(p.cpu_s for p in procs)
        await count_outcomes(run, db, alert_id, start_at, procs)
    finally:
        await db.close()
    for p in procs:
        if run.problems:
            console.rule(f"K={run.engines}, engine #{p.index} (pid {p.pid}), {p.exit}: end of its log")
            console.print(p.log_tail(), markup=False, highlight=False)


async def count_outcomes(run: Run, db: Database, alert_id: int, start_at: datetime, procs: list[EngineProcess]) -> None:
    """What the store says happened: sends per delivery, final states, who sent what, the audit chain."""
    async with db.session() as s:
        ids = set((await s.execute(select(DELIVERY.c.id).where(DELIVERY.c.alert_id == alert_id))).scalars())
        sends = Counter(
            {
                str(subject): int(n)
                for subject, n in (
                    await s.execute(
                        select(col(AuditEvent.subject), func.count())
                        .where(col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "delivery.sent")
                        .group_by(col(AuditEvent.subject))
                    )
                ).all()
            }
        )
        run.states = {
            str(state): int(n)
            for state, n in (
                await s.execute(
                    select(DELIVERY.c.state, func.count())
                    .where(DELIVERY.c.alert_id == alert_id)
                    .group_by(DELIVERY.c.state)
                )
            ).all()
        }
        by_owner = (
            await s.execute(
                select(
                    DELIVERY.c.claimed_by,
                    func.count(),
                    func.count(func.distinct(DELIVERY.c.claimed_at)),
                    func.min(DELIVERY.c.sent_at),
                    func.max(DELIVERY.c.sent_at),
                )
                .where(DELIVERY.c.alert_id == alert_id)
                .group_by(DELIVERY.c.claimed_by)
            )
        ).all()
        audit_by_actor = {
            str(actor): int(n)
            for actor, n in (
                await s.execute(
                    select(col(AuditEvent.actor), func.count())
                    .where(col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "delivery.sent")
                    .group_by(col(AuditEvent.actor))
                )
            ).all()
        }
        run.resumed = int(
            await s.scalar(
                select(func.count()).select_from(AuditEvent).where(col(AuditEvent.kind) == "dispatch.resumed")
            )
            or 0
        )
        owners = {o.owner: o for o in (await s.execute(select(EngineOwner))).scalars()}

    if len(ids) != run.deliveries:
        run.problems.append(f"{len(ids):,} delivery rows for {run.deliveries:,} planned")
    run.sent_twice = sum(1 for d in ids if sends[d] > 1)
    run.extra_sends = sum(n - 1 for d, n in sends.items() if d in ids and n > 1)
    run.never_sent = sum(1 for d in ids if sends[d] == 0)
    strangers = sum(n for d, n in sends.items() if d not in ids)
    if run.sent_twice:
        run.problems.append(f"{run.sent_twice:,} deliveries sent more than once ({run.extra_sends:,} extra sends)")
    if run.never_sent:
        run.problems.append(f"{run.never_sent:,} deliveries never sent")
    if strangers:
        run.problems.append(f"{strangers:,} delivery.sent events name no delivery of the alert")
    not_sent = {state: n for state, n in run.states.items() if state != DeliveryState.SENT.value}
    if not_sent:
        run.problems.append(f"deliveries not in state sent: {not_sent}")

    by_pid = {p.pid: p for p in procs}
    firsts, lasts = [], []
    for claimed_by, rows, rounds, first, last in by_owner:
        owner = owners.get(str(claimed_by)) if claimed_by is not None else None
        proc = by_pid.get(owner.pid) if owner is not None else None
        label = (
            f"#{proc.index} s{owner.slot} pid {proc.pid}"
            if proc is not None and owner is not None
            else ("(unclaimed)" if claimed_by is None else "(unknown process)")
        )
        run.shares.append(
            Share(
                engine=label,
                owner="" if claimed_by is None else str(claimed_by),
                claimed_rows=int(rows),
                audit_sends=audit_by_actor.get(str(claimed_by), 0),
                claim_rounds=int(rounds),
                first_sent_s=seconds_after(first, start_at),
                last_sent_s=seconds_after(last, start_at),
                cpu_s=proc.cpu_s if proc else 0.0,
                exit=proc.exit if proc else "",
                log_errors=proc.log_errors() if proc else 0,
            )
        )
        if first is not None and last is not None:
            firsts.append(first)
            lasts.append(last)
    run.shares.sort(key=lambda sh: sh.engine)
    sharing = {p.pid for p in procs} & {o.pid for o in owners.values() if o.owner in audit_by_actor}
    idle = [p for p in procs if p.pid not in sharing]
    if idle and run.drained:
        # not a loss, but worth saying: an engine that sent nothing
        run.shares += [
            Share(f"#{p.index} pid {p.pid}", "", 0, 0, 0, None, None, p.cpu_s, p.exit, p.log_errors()) for p in idle
        ]
    if firsts:
        run.first_sent_s = seconds_after(min(firsts), start_at)
        run.last_sent_s = seconds_after(max(lasts), start_at)
    registered = [o.started_at for o in owners.values() if o.pid in by_pid]
    if len(registered) == len(procs):
        run.ready_s = seconds_after(max(registered), start_at)

    verification = await verify(db)
    run.chain_ok, run.chain_rows = verification.ok, verification.rows
    if not verification.ok:
        run.problems.append(f"audit chain broken at seq {verification.first_bad_seq}: {verification.reason}")


# ---- output -----------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def report(args: argparse.Namespace, runs: list[Run], backend: str, server_url: str) -> None:
    load = os.getloadavg()
    console.print(
        f"[bold]jiaoying engines[/] {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {args.recipients:,} grid workers · "
        f"yellow (SMS + WeCom, sandbox) · `jiaoying engine run --sandbox-devices --poll {args.poll}"
        + (f" --claim-batch {args.claim_batch}" if args.claim_batch else "")
        + "` under one JIAOYING_NODE\n"
        f"{os.cpu_count()} cores ({cpu_model()}) · Python {platform.python_version()} · {backend} "
        f"(throwaway, {mask(server_url)}; fsync, synchronous_commit and full_page_writes off) · "
        f"{platform.machine()} {platform.system()} · load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    base = next((r for r in runs if r.engines == 1), None)
    table = Table(title="delivery throughput by number of engine processes, same run, same PostgreSQL")
    for name in (
        "K",
        "deliveries",
        "wall s",
        "per s",
        "speed-up",
        "ready s",
        "span s",
        "span per s",
        "sent twice",
        "never sent",
        "engine CPU s",
        "PG CPU s",
        f"cores busy (of {os.cpu_count()})",
    ):
        table.add_column(name, justify="left" if name == "K" else "right", no_wrap=not name.startswith("cores"))
    for r in runs:
        speed = f"{r.rate / base.rate:.2f}×" if base and base.rate and r.drained else ""
        span_rate = r.span_rate
        table.add_row(
            str(r.engines),
            f"{r.deliveries:,}",
            fmt_s(r.wall_s) + ("" if r.drained else " (not drained)"),
            f"{r.rate:,.0f}",
            speed,
            fmt_s(r.ready_s),
            fmt_s(r.span_s),
            "" if span_rate is None else f"{span_rate:,.0f}",
            f"[bold red]{r.sent_twice:,}[/]" if r.sent_twice else "0",
            f"[bold red]{r.never_sent:,}[/]" if r.never_sent else "0",
            f"{r.engine_cpu_s:.1f}",
            f"{r.server_cpu_s:.1f}",
            f"{r.machine_busy:.2f}",
        )
    console.print(table)
    console.print(
        "K engine processes. wall s: from starting them until no delivery is pending or sending (polled every "
        "100 ms), interpreter start-up included; per s and speed-up (vs K=1, same run) on it. ready s: the last "
        "process registered; span: first to last sent_at in the store. CPU over the wall time; PG: every server "
        "process; cores busy: the whole machine, other users' processes included. Setup per run (not timed): "
        + ", ".join(f"K={r.engines} county {r.setup_s:.1f} s + issue {r.issue_s:.1f} s" for r in runs)
        + "."
    )

    shares = Table(title="who sent what: delivery.claimed_by and the audit's delivery.sent actors, per process")
    for name in (
        "K",
        "process",
        "owner",
        "claimed_by",
        "share",
        "audit sent",
        "claims",
        "/claim",
        "first s",
        "last s",
        "CPU s",
        "errors",
        "stopped",
    ):
        shares.add_column(
            name, justify="left" if name in ("K", "process", "owner", "stopped") else "right", no_wrap=True
        )
    for r in runs:
        for sh in r.shares:
            shares.add_row(
                str(r.engines),
                sh.engine,
                sh.owner,
                f"{sh.claimed_rows:,}",
                f"{sh.claimed_rows / r.deliveries:.0%}" if r.deliveries else "",
                f"{sh.audit_sends:,}",
                f"{sh.claim_rounds:,}",
                f"{sh.claimed_rows / sh.claim_rounds:.0f}" if sh.claim_rounds else "",
                fmt_s(sh.first_sent_s),
                fmt_s(sh.last_sent_s),
                f"{sh.cpu_s:.1f}",
                str(sh.log_errors),
                sh.exit,
            )
        shares.add_section()
    console.print(shares)
    console.print(
        'process: #n s<slot on the node> pid; owner: what the process writes in claimed_by ("<node>/<run>"). '
        "claimed_by: delivery rows it claimed (and kept: sent rows keep it); audit sent: its delivery.sent events; "
        "claims: its claim transactions (distinct claimed_at), /claim rows each; first s, last s: its first and "
        "last sent_at after the start; errors: lines logged at error level; stopped: after SIGTERM."
    )

    contention = Table(title="contention: the engines' backends, sampled from pg_stat_activity at every poll")
    for name in (
        "K",
        "samples",
        "active",
        "idle in tx",
        "lock waits",
        "most waited on (share of lock waits)",
        "deadlocks",
        "resumed",
        "audit chain",
        "load 1m before",
    ):
        contention.add_column(name, justify="left" if name.startswith("most") or name == "K" else "right")
    for r in runs:
        a = r.activity
        waits = sum(a.lock_waits.values())
        top = "\n".join(f"{n / waits:.0%} {what}" for what, n in a.lock_waits.most_common(3)) if waits else "none"
        contention.add_row(
            str(r.engines),
            str(a.samples),
            f"{a.mean(a.active):.2f}",
            f"{a.mean(a.idle_in_transaction):.2f}",
            f"{a.mean(waits):.2f}",
            top,
            str(r.deadlocks),
            str(r.resumed),
            f"ok ({r.chain_rows:,})" if r.chain_ok else "[bold red]BROKEN[/]",
            f"{r.load_before:.2f}",
        )
    console.print(contention)
    console.print(
        "Mean per sample of the client backends of the run's database (this poller left out): running a statement, "
        "idle inside an open transaction (the engine is doing Python work with it open), waiting for a lock; the "
        "lock waits by lock kind and statement. deadlocks: pg_stat_database; resumed: dispatch.resumed events "
        "(claims taken over from a process found dead: 0 while every engine lives); audit chain: verified end to "
        "end (events)."
    )

    problems = [(r.engines, p) for r in runs for p in r.problems]
    for k, p in problems:
        console.print(f"[bold red]K={k}: {p}[/]")
    if not problems:
        console.print("[green]every delivery was sent exactly once, with every number of engines[/]")


# ---- the run ----------------------------------------------------------------------------------


def parse_engines(value: str) -> list[int]:
    try:
        counts = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--engines wants numbers separated by commas, not {value!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("--engines wants positive numbers, e.g. 1,2,4")
    return counts if counts[0] == 1 else [1, *counts]  # K=1 is the baseline of every speed-up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000, help="grid workers in the county (default 20000)")
    parser.add_argument(
        "--engines",
        type=parse_engines,
        default=[1, 2, 4],
        help="numbers of engine processes to run, one fresh database each (default 1,2,4; 1 is always run)",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="the engines' --poll: idle seconds (default 1.0)")
    parser.add_argument("--claim-batch", type=int, default=None, help="the engines' --claim-batch (default theirs)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one run may take to empty the queue (default 120)"
    )
    args = parser.parse_args(argv)
    if args.recipients < 1 or args.poll < 0.05 or args.timeout <= 0:
        parser.error("--recipients must be positive, --poll at least 0.05, --timeout positive")
    if args.claim_batch is not None and args.claim_batch < 1:
        parser.error("--claim-batch must be positive")
    return args


async def run_all(args: argparse.Namespace, server: PostgresServer, workdir: Path) -> tuple[list[Run], str]:
    template_url = await server.create_database()
    migrated = Database(template_url)
    try:
        await migrated.upgrade()
        async with migrated.engine.connect() as conn:
            backend = f"PostgreSQL {await conn.scalar(text('SHOW server_version'))}"
    finally:
        await migrated.close()  # a template may have no connections while it is copied
    template = template_url.rsplit("/", 1)[1]
    node = node_name(socket.gethostname())
    runs: list[Run] = []
    for k in args.engines:
        console.print(f"[dim]K={k}: county, alert, {k} engine process{'es' if k > 1 else ''}…[/]")
        run = await run_one(server, template, k, args, workdir, node)
        console.print(
            f"[dim]K={k}: {run.deliveries:,} deliveries in {run.wall_s:.2f} s"
            + (f", [red]{len(run.problems)} problem(s)[/]" if run.problems else "")
            + "[/]"
        )
        runs.append(run)
    return runs, backend


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    engine_command()  # before anything is started: say at once if the command is missing
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries (initdb, postgres) not found; set JIAOYING_PG_BIN")
    server = PostgresServer(bin_dir)
    with tempfile.TemporaryDirectory(prefix="jiaoying-engines-") as tmp:
        try:
            server.start()
            runs, backend = asyncio.run(run_all(args, server, Path(tmp)))
        finally:
            server.stop()
        report(args, runs, backend, server.url("jy_N"))
    return 1 if any(r.problems for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
