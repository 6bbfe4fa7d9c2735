"""Console benchmark: what the duty room and the auditor wait for while a county-wide red alert is in flight.

Run from the repository root:

    python benchmarks/console.py                  # the 巫溪 sample, 20 runs a page (5 for pages over 250 ms)
    python -m benchmarks.console --runs 50 --slow-runs 10

The run loads the 巫溪 sample (config/sample.py) into a fresh SQLite file, issues one red alert to the whole
county, sends every delivery over zero-latency sandbox channels, has part of the recipients answer through their
link (a few with feedback), answers a few on their behalf, lets the silent ones escalate once, and has some of
those answer late. Then it times the console pages, the board API and the phone answer page in-process: each
request goes through httpx.ASGITransport to create_app(core), as a signed-in duty officer or with an API key.
GET /healthz through the same transport (one `SELECT 1`) is the floor every figure is read against.

The live board stream never ends, and httpx.ASGITransport waits for a response to end, so /console/events is
driven with a minimal ASGI client instead: it times the first `board` event, then disconnects. /healthz is
timed through that client too, as its own floor.
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
import math
import os
import platform
import pstats
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import col

from alerting.answer.events import DeviceReport, StatusUpdate
from alerting.issue.alerts import AlertRequest
from alerting.model.access import AccountRole
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level, Purpose
from alerting.store.tables import AuditEvent, Delivery, Target
from alerting.web.app import create_app
from benchmarks import AUDIT_KEY
from benchmarks.fanout import console, mask, peak_rss_mib, quiet_logs
from channels.sandbox import SandboxChannel
from config.demo.sample import COUNTY_CODE, generate_sample
from config.directory.store import import_directory
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from escalation.policy.rules import load_policy

HOST = "jy.test"
API_KEY = "bench-duty-key"  # a key for this in-process app only
PASSWORD = "bench-pass-0001"  # noqa: S105
SLOW_S = 0.25  # a page over this in its first two timed runs is timed --slow-runs times instead of --runs
PROFILE_S = 0.3  # --profile looks at requests whose median is over this

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]


# ---- the county in flight ----------------------------------------------------------------------


@dataclass
class World:
    engine: AssembledEngine
    clock: ManualClock
    alert_id: int
    token: str  # the session cookie of the duty officer
    csrf: str
    ack_token: str  # a silent grid worker's answer link
    recipients: int
    deliveries: int
    targets: dict[str, int] = field(default_factory=dict)  # state -> count
    delivery_states: dict[str, int] = field(default_factory=dict)
    setup_phases: dict[str, float] = field(default_factory=dict)
    setup_s: float = 0.0


async def sandbox_engine(url: str, clock: ManualClock) -> AssembledEngine:
    secret = "benchmark-only"  # noqa: S105  (signs answer links nobody receives)
    settings = Settings(
        database_url=url,
        public_url="https://jy.example.test",
        secret_key=secret,
        api_keys=[f"{API_KEY}:duty"],
        audit_key=AUDIT_KEY,
    )
    policy = await asyncio.to_thread(load_policy, None)
    return build_engine(settings, clock=clock, policy=policy, channels={k: SandboxChannel(k) for k in ChannelKind})


@dataclass(frozen=True)
class Sent:
    delivery_id: str
    target_id: str
    channel: str
    device_id: str | None


async def first_wave(engine: AssembledEngine, alert_id: int) -> list[Sent]:
    async with engine.db.session() as s:
        rows = await s.execute(
            select(col(Delivery.id), col(Delivery.target_id), col(Delivery.channel), col(Delivery.device_id))
            .where(
                col(Delivery.alert_id) == alert_id,
                col(Delivery.purpose) == Purpose.WARN.value,
                col(Delivery.step) == 0,
            )
            .order_by(col(Delivery.id))
        )
        return [Sent(*row) for row in rows.all()]


async def target_states(engine: AssembledEngine, alert_id: int) -> dict[str, int]:
    async with engine.db.session() as s:
        rows = await s.execute(
            select(col(Target.state), func.count()).where(col(Target.alert_id) == alert_id).group_by(col(Target.state))
        )
        states = {str(state): int(n) for state, n in rows.all()}
        escalated = await s.scalar(select(func.count()).where(col(Target.alert_id) == alert_id, col(Target.step) > 0))
        return states | {"escalated (any state)": int(escalated or 0)}


async def delivery_states(engine: AssembledEngine) -> dict[str, int]:
    async with engine.db.session() as s:
        rows = await s.execute(select(col(Delivery.state), func.count()).group_by(col(Delivery.state)))
        return {str(state): int(n) for state, n in rows.all()}


async def receipts(engine: AssembledEngine, clock: ManualClock, wave: Sequence[Sent], rng: random.Random) -> None:
    """What providers report back: most SMS delivered, a few failed; most sirens sound, a few report a fault;
    the broadcast gateway confirms its zones."""
    for sent in wave:
        clock.advance(seconds=0.01)
        if sent.channel == ChannelKind.SMS.value and (roll := rng.random()) < 0.97:
            failed = roll >= 0.95
            await engine.inbound.handle(
                StatusUpdate(
                    ChannelKind.SMS,
                    clock.now(),
                    delivered=not failed,
                    delivery_id=sent.delivery_id,
                    error="号码已停机" if failed else None,
                )
            )
        elif sent.channel == ChannelKind.DEVICE.value and sent.device_id and rng.random() < 0.95:
            status = "failed" if rng.random() < 0.05 else "sounding"
            await engine.inbound.handle(DeviceReport(sent.device_id, sent.delivery_id, status, clock.now()))
        elif sent.channel == ChannelKind.BROADCAST.value and rng.random() < 0.9:
            await engine.inbound.handle(
                StatusUpdate(ChannelKind.BROADCAST, clock.now(), delivered=True, delivery_id=sent.delivery_id)
            )


async def answer_some(
    engine: AssembledEngine, clock: ManualClock, deliveries: Sequence[str], over_s: float, rng: random.Random
) -> None:
    """Answers through the link, spread over `over_s` seconds of the alert's clock; one in five says how many
    people were moved and households reached, as the report's feedback columns expect."""
    step = over_s / max(1, len(deliveries))
    for delivery_id in deliveries:
        clock.advance(seconds=step)
        feedback = {"moved": rng.randint(0, 40), "households": rng.randint(1, 30)} if rng.random() < 0.2 else None
        await engine.acks.answer_delivery(delivery_id, channel=ChannelKind.SMS, at=clock.now(), feedback=feedback)


async def build_world(url: str, answered: float, late: float, on_behalf: float, seed: int) -> World:
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = time.perf_counter() - started - sum(phases.values())

    rng = random.Random(seed)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30))
    engine = await sandbox_engine(url, clock)
    await engine.db.upgrade()
    await engine.start(loops=False)
    directory = await asyncio.to_thread(generate_sample)
    await import_directory(engine.db, directory, actor="benchmark", at=clock.now())
    lap("sample")
    core = engine.core
    await core.accounts.create("duty", PASSWORD, role=AccountRole.DUTY, display_name="王值班", actor="benchmark")
    signed = await core.accounts.sign_in("duty", PASSWORD)

    issued = await engine.alerts.trigger(
        AlertRequest(
            level=Level.RED,
            hazard="暴雨",
            title="巫溪县暴雨红色预警",
            text="预计未来6小时内全县大部地区将出现大暴雨，局地特大暴雨，山洪、地质灾害风险极高。",
            instructions="请网格员立即通知到户到人，组织危险区群众转移，并回复“收到”。",
            units=[COUNTY_CODE],
        ),
        actor=signed.principal.actor,
    )
    await engine.settle()  # the first wave, every channel, sent
    lap("issue + send")
    wave = await first_wave(engine, issued.alert_id)
    await receipts(engine, clock, wave, rng)
    lap("receipts")

    sms = {w.target_id: w.delivery_id for w in wave if w.channel == ChannelKind.SMS.value}
    people = sorted(sms)
    rng.shuffle(people)
    n_answer, n_behalf = round(answered * len(people)), round(on_behalf * len(people))
    # most answers come within the 5-minute window of a red alert
    await answer_some(engine, clock, [sms[t] for t in people[:n_answer]], 240.0, rng)
    for target_id in people[n_answer : n_answer + n_behalf]:
        clock.advance(seconds=1)
        await engine.acks.answer_on_behalf(
            issued.alert_id,
            target_id,
            by=Actor.officer(signed.principal.actor),
            reason="电话联系确认已收到",
            at=clock.now(),
        )
    clock.advance(minutes=2)  # past the window: the silent escalate (redial, backup, up the hierarchy)
    await engine.settle()
    silent = people[n_answer + n_behalf :]
    n_late = round(late * len(people))
    await answer_some(engine, clock, [sms[t] for t in silent[:n_late]], 120.0, rng)
    lap("answers + escalation")
    clock.advance(seconds=30)
    ack_token = core.signer.sign(sms[silent[-1]], clock.now())
    return World(
        engine=engine,
        clock=clock,
        alert_id=issued.alert_id,
        token=signed.token,
        csrf=signed.csrf_token,
        ack_token=ack_token,
        recipients=issued.targets,
        deliveries=await count_rows(engine, Delivery),
        targets=await target_states(engine, issued.alert_id),
        delivery_states=await delivery_states(engine),
        setup_s=time.perf_counter() - started,
        setup_phases=phases,
    )


async def count_rows(engine: AssembledEngine, model: Any) -> int:
    async with engine.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


# ---- timing ------------------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    seconds: list[float]
    status: int
    size: int  # body bytes as the browser gets them after decoding
    wire: int  # body bytes as sent (gzip when the app compressed it)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank: the max for fewer than 20 runs


@dataclass(frozen=True)
class Got:
    status: int
    size: int
    wire: int


Request = Callable[[], Awaitable[Got]]


async def timed(name: str, request: Request, runs: int, slow_runs: int, note: str = "") -> Timing:
    """One untimed warm-up (template compile, first query plans), then the timed runs: `slow_runs` of them when
    the first two timed runs both took over SLOW_S, else `runs`."""
    first = await request()
    if first.status >= 400:
        raise SystemExit(f"{name}: HTTP {first.status}; the benchmark's requests are meant to succeed")

    async def once() -> float:
        start = time.perf_counter()
        got = await request()
        if got.status != first.status:
            raise SystemExit(f"{name}: HTTP {got.status} after {first.status}")
        return time.perf_counter() - start

    seconds = [await once(), await once()]
    wanted = slow_runs if min(seconds) > SLOW_S else runs
    while len(seconds) < wanted:
        seconds.append(await once())
    return Timing(name, seconds, first.status, first.size, first.wire, note)


async def profiled(request: Request, top: int) -> str:
    """One more run under cProfile: the project's own functions by cumulative time, then everything by own time.
    Only the event loop's thread is seen: SQLite's work shows as waiting on aiosqlite's thread."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await request()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"(alerting|config)/", top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def via(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Request:
    async def go() -> Got:
        r = await client.request(method, url, **kwargs)
        return Got(r.status_code, len(r.content), r.num_bytes_downloaded)

    return go


def first_event(app: ASGIApp, path: str, cookie: str, timeout_s: float = 30.0) -> Request:
    """A minimal ASGI client: the response to its end, or a server-sent event stream to its first `board` event,
    after which it says the browser went away."""

    async def go() -> Got:
        gone = asyncio.Event()
        done = asyncio.Event()
        status = 0
        body = bytearray()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                at = body.find(b"event: board")
                if not message.get("more_body", False) or (at >= 0 and body.find(b"\n\n", at) >= 0):
                    done.set()

        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", HOST.encode()),
                (b"accept", b"text/event-stream"),
                (b"accept-encoding", b"gzip"),
                (b"cookie", cookie.encode()),
            ],
            "server": (HOST, 80),
            "client": ("127.0.0.1", 50000),
        }

        async def serve() -> None:
            await app(scope, receive, send)

        task = asyncio.create_task(serve())
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        finally:
            gone.set()
            try:
                await asyncio.wait_for(task, 5.0)
            except TimeoutError:
                task.cancel()
        return Got(status, len(body), len(body))

    return go


async def measure(w: World, runs: int, slow_runs: int, profiles: dict[str, str] | None) -> list[Timing]:
    app: Any = create_app(w.engine.core)
    cookie = f"jy_session={w.token}"
    transport = httpx.ASGITransport(app=app)
    alert = f"/console/alerts/{w.alert_id}"
    review = f"/console/review/{w.alert_id}"
    county_wide = {
        "csrf": w.csrf,
        "level": "red",
        "hazard": "暴雨",
        "title": "巫溪县暴雨红色预警",
        "text": "预计未来6小时内全县将出现大暴雨。",
        "instructions": "请立即组织危险区群众转移。",
        "units": COUNTY_CODE,
    }
    out: list[Timing] = []
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
        client.cookies.set("jy_session", w.token)
        key = {"X-API-Key": API_KEY}
        plan: list[tuple[str, Request, str]] = [
            ("baseline: GET /healthz", via(client, "GET", "/healthz"), "one SELECT 1"),
            ("GET /console/ (board)", via(client, "GET", "/console/"), ""),
            ("GET /console/events, first event", first_event(app, "/console/events", cookie), "raw ASGI client"),
            ("baseline: GET /healthz, raw ASGI", first_event(app, "/healthz", cookie), "floor for the row above"),
            (f"GET {alert}", via(client, "GET", alert), "page 1, all recipients"),
            (f"GET {alert}?show=silent&page=2", via(client, "GET", alert, params={"show": "silent", "page": 2}), ""),
            (f"GET {alert}?q=王", via(client, "GET", alert, params={"q": "王"}), "name search"),
            (
                "POST /console/alerts/preview",
                via(client, "POST", "/console/alerts/preview", data=county_wide),
                "red, the whole county",
            ),
            ("GET /console/review", via(client, "GET", "/console/review"), ""),
            (f"GET {review}", via(client, "GET", review), "charts, chain verification"),
            (f"GET {review}/report.xlsx", via(client, "GET", f"{review}/report.xlsx"), ""),
            (
                f"GET /api/v1/alerts/{w.alert_id}/report",
                via(client, "GET", f"/api/v1/alerts/{w.alert_id}/report", headers=key),
                "the report as JSON",
            ),
            (
                "GET /api/v1/audit/verify",
                via(client, "GET", "/api/v1/audit/verify", headers=key),
                "the chain walk alone",
            ),
            ("GET /api/v1/board", via(client, "GET", "/api/v1/board", headers=key), "API key"),
            ("GET /ack/{token}", via(client, "GET", f"/ack/{w.ack_token}"), "a silent worker's link"),
        ]
        for name, request, note in plan:
            out.append(await timed(name, request, runs, slow_runs, note))
            console.print(f"  {name}: {1000 * out[-1].median:.1f} ms", highlight=False)
            if profiles is not None and out[-1].median > PROFILE_S:
                profiles[name] = await profiled(request, 25)
    return out


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class Result:
    world: World
    timings: list[Timing]
    audit_rows: int
    backend: str
    profiles: dict[str, str]


async def run(args: argparse.Namespace, url: str) -> Result:
    world = await build_world(url, args.answered, args.late, args.on_behalf, args.seed)
    try:
        audit_rows = await count_rows(world.engine, AuditEvent)
        console.print(
            f"setup {world.setup_s:.1f} s ("
            + ", ".join(f"{k} {v:.1f}" for k, v in world.setup_phases.items())
            + f"): alert {world.alert_id}, {world.recipients:,} recipients, "
            f"{world.deliveries:,} deliveries, {audit_rows:,} audit rows",
            highlight=False,
        )
        profiles: dict[str, str] = {}
        timings = await measure(world, args.runs, args.slow_runs, profiles if args.profile else None)
    finally:
        await world.engine.stop()
    return Result(world, timings, audit_rows, f"SQLite {sqlite3.sqlite_version}", profiles)


def report(args: argparse.Namespace, url: str, r: Result) -> None:
    w = r.world
    states = ", ".join(f"{k} {v:,}" for k, v in sorted(w.targets.items()))
    sent = ", ".join(f"{k} {v:,}" for k, v in sorted(w.delivery_states.items()))
    console.print(
        f"[bold]jiaoying console[/] {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · 巫溪 sample · red alert to the county: "
        f"{w.recipients:,} recipients ({states}), {w.deliveries:,} deliveries ({sent}), "
        f"{r.audit_rows:,} audit rows · {mask(url)}\n"
        f"Python {platform.python_version()} · {r.backend} · {os.cpu_count()} CPU · "
        f"{platform.machine()} {platform.system()} · peak RSS {peak_rss_mib():,.0f} MiB"
    )
    table = Table(title="console pages vs GET /healthz through the same transport, same run")
    for name, justify in (
        ("request", "left"),
        ("runs", "right"),
        ("median ms", "right"),
        ("p95 ms", "right"),
        ("× healthz", "right"),
        ("bytes", "right"),
        ("gzip bytes", "right"),
        ("note", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    floor = r.timings[0].median
    raw_floor = next((t.median for t in r.timings if t.name.endswith("raw ASGI")), floor)
    for t in r.timings:
        against = raw_floor if "events" in t.name or t.name.endswith("raw ASGI") else floor
        table.add_row(
            t.name,
            str(len(t.seconds)),
            f"{1000 * t.median:.1f}",
            f"{1000 * t.p95:.1f}",
            "" if t.name.startswith("baseline") else f"{t.median / against:.0f}×",
            f"{t.size:,}",
            f"{t.wire:,}" if t.wire != t.size else "",
            t.note,
        )
        if t.name.startswith("baseline: GET /healthz, raw"):
            table.add_section()
    console.print(table)
    console.print(
        "p95 is the nearest rank, so with fewer than 20 runs it is the slowest run. A request whose first two "
        f"timed runs both took over {SLOW_S * 1000:.0f} ms ran {args.slow_runs} times, others {args.runs}. "
        "gzip bytes are shown when the app compressed the body (GZipMiddleware, bodies over 1,000 bytes); "
        "the event stream is never compressed."
    )
    for name, text in r.profiles.items():
        console.rule(f"cProfile, one more {name}")
        console.print(text, markup=False, highlight=False)
    for t in r.timings:
        if t.median > 1.0:
            console.print(f"[bold yellow]over 1 s:[/] {t.name} (median {t.median:.2f} s)", highlight=False)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each quick request (default 20)")
    parser.add_argument("--slow-runs", type=int, default=5, help=f"timed runs of a request over {SLOW_S} s")
    parser.add_argument("--answered", type=float, default=0.55, help="share answering in the window (0.55)")
    parser.add_argument("--on-behalf", type=float, default=0.03, help="share answered for by the duty room (0.03)")
    parser.add_argument("--late", type=float, default=0.12, help="share answering after escalation (0.12)")
    parser.add_argument("--seed", type=int, default=7, help="who answers, and with what feedback")
    parser.add_argument("--profile", action="store_true", help=f"cProfile one more run of each over {PROFILE_S} s")
    parser.add_argument("--database-url", default=None, help="an EMPTY SQLite database; default a fresh file")
    args = parser.parse_args(argv)
    if min(args.runs, args.slow_runs) < 2:
        parser.error("--runs and --slow-runs must be at least 2")
    if min(args.answered, args.on_behalf, args.late) < 0 or args.answered + args.on_behalf + args.late > 1:
        parser.error("--answered, --on-behalf and --late are shares that add up to at most 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="jiaoying-console-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'console.db'}"
        result = asyncio.run(run(args, url))
    report(args, url, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
