"""The real SMS path (issue 11): the Twilio adapter and the dispatcher against a paced fake Twilio, with baselines.

Run from the repository root:

    python -m benchmarks.sms_path                          # 5,000 recipients, concurrency 50, 30 ms latency
    python -m benchmarks.sms_path --recipients 20000 --concurrency 100 --latency-ms 50
    python -m benchmarks.sms_path --profile                # cProfile the engine runs, top 25 cumulative
    python -m benchmarks.sms_path --big                    # time to first send at 100,000 recipients as well
    python -m benchmarks.sms_path --database-url postgresql+asyncpg://user:pw@127.0.0.1/emptydb

What runs:

- the fake: tests/fakes/twilio.py's FakeTwilio with `Paced` (no rate limit, `--latency-ms` on every create, and in
  the "callbacks on" run the `sent` and `delivered` status callbacks it posts by itself to each message's
  StatusCallback, 0.2 s apart, signed like Twilio's) served by tests/fakes/server.py's serve_app on a free loopback
  port, in a process of its own so that its work is not counted on the engine's event loop. The fake posts its
  callbacks through aiohttp rather than its own httpx client (see CallbackPoster: httpx made the fake the limit);
- "engine": config.channels.provider_channels builds TwilioSms from Settings pointing at the fake
  (JIAOYING_TWILIO_SMS_PER_SECOND very high), config.wiring.build_engine the whole engine with every other channel a
  sandbox and a one-step SMS-only policy; the engine's own app (alerting.web.app.create_app) serves its webhooks on
  a free loopback port that is also JIAOYING_PUBLIC_URL, and the engine runs its loops as `jiaoying serve` does.
  The county is benchmarks.fanout's synthetic one (one grid worker per grid) on a fresh database per run. There is
  no setting for the SMS concurrency (config/channels.py wires 50), so `--concurrency` is set on the built adapter's
  `limits` before the dispatcher reads it. The adapter's aiohttp connector opens at most 100 connections, so
  concurrency above 100 only queues inside aiohttp;
- "naive twilio loop": twilio.rest.Client with AsyncTwilioHttpClient, its URLs routed to the fake the way
  channels/twilio/common.py does it, `messages.create_async` for N messages under a semaphore, no database;
- "raw aiohttp loop": one aiohttp.ClientSession (100 connections) POSTing the same form to Messages.json under the
  same semaphore, and reading the JSON answer;
- "time to first send": trigger() of an alert to 10,000 recipients (and 100,000 with --big) until the first create
  reaches the fake: the fake's time.monotonic() at that request minus the engine's at the start of the call (one
  clock, CLOCK_MONOTONIC, in both processes).

messages/s is counted at the fake for every path: messages ÷ (first create received → last create answered), so
the engine and the baselines are timed by the same clock in the same place. Wall time is the caller's: trigger() to
the last SMS row recorded as sent (engine), or the first request to the last answer (baselines). The baselines send
with callbacks off. Every run fails loudly (exit 1, NOT ACCOUNTED FOR) unless the fake created exactly one message
per recipient and every SMS row ended sent (callbacks off) or delivered (callbacks on), with every callback answered.

With --database-url the database must be empty; the benchmark creates its tables, and drops every table between
runs so each run starts fresh (SQLite by default: a new file per run in a temporary directory).
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
import io
import multiprocessing
import os
import platform
import pstats
import secrets
import sqlite3
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
from fastapi import Request
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData, event, func, inspect, select
from sqlalchemy.engine import make_url
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from alerting.deliver.port import Channel
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import SystemClock
from alerting.model.domain import ChannelKind, DeliveryState, Level
from alerting.store.db import Database
from alerting.store.tables import OrgUnit
from alerting.web.app import create_app
from benchmarks import AUDIT_KEY
from benchmarks.fanout import COUNTY, COUNTY_NAME, DELIVERY, Layout, build_county, count, quiet_logs, read_townships
from channels.sandbox import SandboxChannel
from channels.twilio.sms import TwilioSms
from config.channels import provider_channels
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from escalation.policy.rules import PolicySet, parse_policy
from tests.fakes.server import free_port, serve_app
from tests.fakes.twilio import FakeTwilio, Paced

FROM_NUMBER = "+15005550006"
SMS_PER_SECOND = 1_000_000.0  # JIAOYING_TWILIO_SMS_PER_SECOND: far above anything reached, so pacing never waits
SECRET = "benchmark-only-secret-key"  # noqa: S105  (signs ack links of messages that reach only the fake)
CALLBACK_DELAY_S = 0.2  # the fake's default: "sent" 0.2 s after the create's answer, "delivered" 0.2 s later
POLL_S = 0.1  # how often the benchmark looks at the queue while the engine sends
AIOHTTP_CONNECTIONS = 100  # aiohttp's default connector limit, which both twilio-package paths keep

# wide enough for the table when the output goes to a file or a pipe
console = Console() if sys.stdout.isatty() else Console(width=170)

# One step, SMS only, a day's wait: the alert goes out over SMS and nothing escalates while it is measured.
SMS_ONLY_POLICY = """
levels:
  red:    {person_steps: [{who: target, channels: [sms], wait_s: 86400}]}
  orange: {person_steps: [{who: target, channels: [sms], wait_s: 86400}]}
  yellow: {person_steps: [{who: target, channels: [sms], wait_s: 86400}]}
  blue:   {person_steps: [{who: target, channels: [sms], wait_s: 86400}]}
"""


# ---- the fake Twilio, in its own process -------------------------------------------------------


def fake_main(account_sid: str, auth_token: str, port: int, ready: Connection) -> None:
    """The child process: FakeTwilio on 127.0.0.1:port, with a few /_bench routes for the parent to steer it."""
    quiet_logs()
    asyncio.run(_serve_fake(account_sid, auth_token, port, ready))


async def _serve_fake(account_sid: str, auth_token: str, port: int, ready: Connection) -> None:
    fake = FakeTwilio(account_sid, auth_token)
    stop = asyncio.Event()

    async def configure(request: Request) -> dict[str, bool]:
        wanted = await request.json()
        await fake.aclose()  # callbacks of an earlier run that are still due are dropped
        fake.received.clear()
        fake.callbacks.clear()
        fake.paced = Paced(
            latency_s=float(wanted["latency_s"]),
            callbacks=("in_order",) if wanted["callbacks"] else (),
            callback_delay_s=CALLBACK_DELAY_S,
        )
        fake._http = CallbackPoster()  # type: ignore[assignment]  # what _post uses of httpx.AsyncClient
        return {"ok": True}

    async def stats() -> dict[str, Any]:
        created = [r for r in fake.received if r.sid]
        refused: dict[str, int] = {}
        for r in fake.received:
            if not r.sid:
                refused[str(r.status)] = refused.get(str(r.status), 0) + 1
        first = min(fake.received, key=lambda r: r.at, default=None)
        sample = created[0] if created else None
        return {
            "requests": len(fake.received),
            "created": len(created),
            "distinct_to": len({r.to for r in created}),
            "refused": refused,
            "first_at": first.at if first else None,
            "last_answered_at": max((r.answered_at for r in fake.received), default=None),
            "callbacks": len(fake.callbacks),
            "callbacks_ok": sum(1 for c in fake.callbacks if c.answered == 200),
            "callback_failures": [f"{c.answered} {c.error or ''}".strip() for c in fake.callbacks if c.answered != 200][
                :5
            ],
            "last_callback_answered_at": max((c.answered_at for c in fake.callbacks), default=None),
            "reporting": fake.reporting,
            "cpu_s": time.process_time(),
            "sample": {k: sample.field(k) for k in ("To", "From", "Body", "StatusCallback")} if sample else None,
        }

    async def settle() -> dict[str, bool]:
        await fake.settle()
        return {"ok": True}

    async def halt() -> dict[str, bool]:
        stop.set()
        return {"ok": True}

    fake.app.add_api_route("/_bench/configure", configure, methods=["POST"])
    fake.app.add_api_route("/_bench/stats", stats, methods=["GET"])
    fake.app.add_api_route("/_bench/settle", settle, methods=["POST"])
    fake.app.add_api_route("/_bench/stop", halt, methods=["POST"])
    async with serve_app(fake.app, port) as url:
        ready.send(url)
        await stop.wait()
    await fake.aclose()


@dataclass(frozen=True)
class _Answered:
    status_code: int


class CallbackPoster:
    """The fake's status callbacks over aiohttp instead of its own httpx.AsyncClient: the same bytes, headers and
    URL, and the same 100 connections at most. With thousands of callbacks waiting, httpcore's pool spends time
    quadratic in the queue assigning them to connections (about 12 ms of the fake's CPU per message at 1,000
    messages), which made the fake, not the engine, the limit of the callbacks-on run."""

    def __init__(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=10.0)
        )

    async def post(self, url: str, *, content: str, headers: dict[str, str]) -> _Answered:
        try:
            async with self._session.post(url, data=content.encode(), headers=headers) as answer:
                await answer.read()
                return _Answered(answer.status)
        except (aiohttp.ClientError, TimeoutError) as exc:  # recorded by the fake as no answer, as httpx's would be
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._session.close()


class FakeProcess:
    """The parent's handle on the fake: start, steer over loopback HTTP, stop."""

    def __init__(self) -> None:
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the parent's loop or threads
        self._parent, child = ctx.Pipe()
        self.port = free_port()
        self.process = ctx.Process(
            target=fake_main,
            args=(self.account_sid, self.auth_token, self.port, child),
            name="fake-twilio",
            daemon=True,
        )
        self.url = ""

    def start(self) -> None:
        self.process.start()
        if not self._parent.poll(60):
            self.process.terminate()
            raise SystemExit("the fake Twilio did not start within 60 s")
        self.url = str(self._parent.recv())

    @property
    def messages_url(self) -> str:
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    async def _call(self, method: str, path: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=600.0, trust_env=False) as http:
            answer = await http.request(method, path, json=json)
            answer.raise_for_status()
            result: dict[str, Any] = answer.json()
            return result

    async def configure(self, *, latency_s: float, callbacks: bool) -> None:
        await self._call("POST", "/_bench/configure", {"latency_s": latency_s, "callbacks": callbacks})

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/_bench/stats")

    async def settle(self) -> None:
        await self._call("POST", "/_bench/settle")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            httpx.post(f"{self.url}/_bench/stop", timeout=5.0, trust_env=False)
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its handle
            self.process.join(5)


# ---- results -----------------------------------------------------------------------------------


@dataclass
class PathResult:
    name: str
    messages: int
    concurrency: int
    wall_s: float  # the caller's view (see the module docstring)
    window_s: float  # at the fake: first create received -> last create answered
    cpu_s: float  # this process, both threads
    fake_cpu_s: float
    plan_s: float | None = None  # engine: the trigger() call
    first_send_s: float | None = None  # engine: trigger() start -> first create at the fake
    closed_s: float | None = None  # engine with callbacks: trigger() start -> last delivery report answered
    cpu_over_s: float = 0.0  # the wall time both CPU figures were taken over
    statements: int = 0  # engine: SQL statements, all of them (benchmark's own polls included)
    commits: int = 0  # engine: transactions of the group-committing writer
    jobs: int = 0  # engine: writer jobs (hand-overs and outcomes are coalesced into one job per batch)
    states: dict[str, int] = field(default_factory=dict)
    callbacks: int = 0
    callbacks_ok: int = 0
    profile: str | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.window_s if self.window_s else 0.0


@dataclass
class FirstSend:
    recipients: int
    plan_s: float
    first_send_s: float


@dataclass
class Run:
    paths: list[PathResult]
    first_sends: list[FirstSend]
    problems: list[str]
    backend: str
    load: tuple[float, float]


# ---- the database and the engine ---------------------------------------------------------------


class Databases:
    """A fresh database per run: a new SQLite file, or the given (empty) database emptied again."""

    def __init__(self, given: str | None, tmp: Path) -> None:
        self.given, self.tmp, self.n = given, tmp, 0
        self.backend = ""

    async def fresh(self) -> str:
        self.n += 1
        if self.given is None:
            return f"sqlite+aiosqlite:///{self.tmp / f'sms-{self.n}.db'}"
        db = Database(self.given)
        try:
            if self.n == 1:
                async with db.engine.connect() as conn:
                    tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
                if tables:
                    raise SystemExit(f"{mask(self.given)} is not empty: the benchmark needs an empty database")
            else:  # only tables this benchmark created in it
                async with db.engine.begin() as conn:
                    await conn.run_sync(_drop_all)
        finally:
            await db.close()
        return self.given


def _drop_all(conn: Any) -> None:
    meta = MetaData()
    meta.reflect(conn)
    meta.drop_all(conn)


def mask(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def county(url: str, recipients: int) -> str:
    """Migrate, write the synthetic county; returns the backend's name and version."""
    db = Database(url)
    try:
        await db.upgrade()
        if await count(db, OrgUnit):
            raise SystemExit(f"{mask(url)} already holds org units: the benchmark needs an empty database")
        layout = Layout.for_recipients(await asyncio.to_thread(read_townships), recipients)
        await build_county(db, layout, recipients)
        if db.is_sqlite:
            return f"SQLite {sqlite3.sqlite_version}"
        async with db.engine.connect() as conn:
            version = ".".join(str(v) for v in conn.dialect.server_version_info or ())
        return f"{conn.dialect.name} {version}"
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def running_engine(
    url: str, fake: FakeProcess, concurrency: int, policy: PolicySet
) -> AsyncIterator[AssembledEngine]:
    """The engine as `jiaoying serve` runs it: its loops, and its app serving /webhooks on JIAOYING_PUBLIC_URL."""
    port = free_port()
    settings = Settings(
        database_url=url,
        public_url=f"http://127.0.0.1:{port}",
        secret_key=SecretStr(SECRET),
        audit_key=SecretStr(AUDIT_KEY),
        twilio_account_sid=fake.account_sid,
        twilio_auth_token=SecretStr(fake.auth_token),
        twilio_from_number=FROM_NUMBER,
        twilio_base_url=fake.url,
        twilio_sms_per_second=SMS_PER_SECOND,
    )
    clock = SystemClock()
    real = provider_channels(settings, clock)  # TwilioSms and TwilioVoice on one TwilioWebhook
    sms = real[ChannelKind.SMS]
    assert isinstance(sms, TwilioSms)
    sms.limits = replace(sms.limits, concurrency=concurrency)  # config/channels.py wires 50; no setting for it
    channels: dict[ChannelKind, Channel] = {k: SandboxChannel(k) for k in ChannelKind}
    channels.update(real)
    engine = build_engine(settings, clock=clock, policy=policy, channels=channels)
    async with serve_app(create_app(engine.core), port):
        await engine.start()
        try:
            yield engine
        finally:
            await engine.stop()


def alert_request() -> AlertRequest:
    return AlertRequest(
        level=Level.YELLOW,
        hazard="暴雨",
        title=f"{COUNTY_NAME}暴雨黄色预警（基准测试）",
        text="预计未来6小时内全县大部地区将出现暴雨，局地大暴雨，请做好防范。",
        instructions="请网格员立即通知到户到人，并回复“收到”。",
        units=[COUNTY],
        exercise=True,
    )


async def sms_states(engine: AssembledEngine, alert_id: int) -> dict[str, int]:
    async with engine.db.session() as s:
        rows = await s.execute(
            select(DELIVERY.c.state, func.count())
            .where(DELIVERY.c.alert_id == alert_id, DELIVERY.c.channel == ChannelKind.SMS.value)
            .group_by(DELIVERY.c.state)
        )
        return {str(state): int(n) for state, n in rows.all()}


async def in_queue(engine: AssembledEngine) -> bool:
    """Any SMS row still pending or being sent: one probe of the queue index, whatever the queue's length."""
    queued = (DeliveryState.PENDING.value, DeliveryState.SENDING.value)
    probe = (
        select(DELIVERY.c.id).where(DELIVERY.c.channel == ChannelKind.SMS.value, DELIVERY.c.state.in_(queued)).limit(1)
    )
    async with engine.db.session() as s:
        return (await s.scalar(probe)) is not None


class Statements:
    """Counts the SQL statements the engine sends to its database (executemany counts once)."""

    def __init__(self, engine: AssembledEngine) -> None:
        self.n = 0
        self._target = engine.db.engine.sync_engine
        event.listen(self._target, "before_cursor_execute", self._count)

    def _count(self, *_: object) -> None:
        self.n += 1

    def close(self) -> None:
        event.remove(self._target, "before_cursor_execute", self._count)


class Profiler:
    def __init__(self, enabled: bool) -> None:
        self.profile = cProfile.Profile() if enabled else None

    def __enter__(self) -> Profiler:
        if self.profile is not None:
            self.profile.enable()
        return self

    def __exit__(self, *_: object) -> None:
        if self.profile is not None:
            self.profile.disable()

    def report(self) -> str | None:
        if self.profile is None:
            return None
        out = io.StringIO()
        stats = pstats.Stats(self.profile, stream=out)
        stats.sort_stats("cumulative").print_stats(25)
        # the same, the project's own functions only: which of its stages the time is under
        stats.sort_stats("cumulative").print_stats(r"/(alerting|channels|config|escalation)/", 25)
        stats.sort_stats("tottime").print_stats(20)
        return out.getvalue()


async def engine_path(
    args: argparse.Namespace, dbs: Databases, fake: FakeProcess, policy: PolicySet, *, callbacks: bool
) -> tuple[PathResult, list[str]]:
    n = args.recipients
    name = f"engine, callbacks {'on' if callbacks else 'off'}"
    problems: list[str] = []
    url = await dbs.fresh()
    dbs.backend = await county(url, n)
    await fake.configure(latency_s=args.latency_ms / 1000, callbacks=callbacks)
    timeout = 60 + n / 20
    async with running_engine(url, fake, args.concurrency, policy) as engine:
        fake_cpu = (await fake.stats())["cpu_s"]
        profiler = Profiler(args.profile)
        statements = Statements(engine)
        commits0, jobs0 = engine.db.writer.commits, engine.db.writer.jobs
        cpu0 = time.process_time()
        with profiler:
            t0 = time.monotonic()
            issued = await engine.alerts.trigger(alert_request(), actor="benchmark")
            planned = time.monotonic()
            async with asyncio.timeout(timeout):
                while await in_queue(engine):  # noqa: ASYNC110 (the store is the only place that knows)
                    await asyncio.sleep(POLL_S)
            sent = time.monotonic()
            if callbacks:
                await fake.settle()
            measured = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        statements.close()
        commits, jobs = engine.db.writer.commits - commits0, engine.db.writer.jobs - jobs0
        stats = await fake.stats()
        states = await sms_states(engine, issued.alert_id)
    result = PathResult(
        name,
        n,
        args.concurrency,
        wall_s=sent - t0,
        window_s=_window(stats),
        cpu_s=cpu,
        fake_cpu_s=stats["cpu_s"] - fake_cpu,
        plan_s=planned - t0,
        first_send_s=stats["first_at"] - t0 if stats["first_at"] is not None else None,
        closed_s=(stats["last_callback_answered_at"] - t0) if callbacks and stats["callbacks"] else None,
        states=states,
        callbacks=stats["callbacks"],
        callbacks_ok=stats["callbacks_ok"],
        cpu_over_s=measured,
        statements=statements.n,
        commits=commits,
        jobs=jobs,
        profile=profiler.report(),
    )
    if issued.targets != n or issued.deliveries != n:
        problems.append(f"{name}: planned {issued.targets} targets, {issued.deliveries} deliveries for {n} recipients")
    expected = DeliveryState.DELIVERED.value if callbacks else DeliveryState.SENT.value
    if states.get(expected, 0) != n or sum(states.values()) != n:
        problems.append(f"{name}: SMS rows {states}, expected {n:,} {expected}")
    problems += _fake_problems(name, stats, n)
    if callbacks and (stats["callbacks"] != 2 * n or stats["callbacks_ok"] != 2 * n):
        problems.append(
            f"{name}: {stats['callbacks_ok']:,} of {stats['callbacks']:,} status callbacks answered 200, "
            f"{2 * n:,} expected; first failures: {stats['callback_failures']}"
        )
    return result, problems


def _window(stats: dict[str, Any]) -> float:
    if stats["first_at"] is None or stats["last_answered_at"] is None:
        return 0.0
    return float(stats["last_answered_at"] - stats["first_at"])


def _fake_problems(name: str, stats: dict[str, Any], n: int) -> list[str]:
    problems = []
    if stats["created"] != n or stats["distinct_to"] != n:
        problems.append(f"{name}: the fake created {stats['created']:,} messages to {stats['distinct_to']:,} numbers")
    if stats["refused"]:
        problems.append(f"{name}: the fake refused requests: {stats['refused']}")
    return problems


# ---- the baselines -----------------------------------------------------------------------------


class RoutedTwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """The package's own aiohttp client (one pooled session), its absolute api.twilio.com URLs sent to the fake:
    the same rewrite channels/twilio/common.py makes, and nothing else."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._base = base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        url = self._base + urlunsplit(("", "", parts.path, parts.query, ""))
        return await super().request(method, url, *args, **kwargs)


def forms(n: int, sample: dict[str, str]) -> list[dict[str, str]]:
    """What the engine sent, one per recipient: its Body, and a StatusCallback shaped like its own."""
    callback = urlsplit(sample["StatusCallback"])
    return [
        {
            "To": f"+86139{i:08d}",
            "From": FROM_NUMBER,
            "Body": sample["Body"],
            "StatusCallback": urlunsplit((*callback[:3], f"d={uuid.uuid4().hex}", "")),
        }
        for i in range(n)
    ]


async def baseline(
    name: str,
    args: argparse.Namespace,
    fake: FakeProcess,
    sample: dict[str, str],
    send: Callable[[list[dict[str, str]], asyncio.Semaphore], Awaitable[None]],
) -> tuple[PathResult, list[str]]:
    await fake.configure(latency_s=args.latency_ms / 1000, callbacks=False)
    data = forms(args.recipients, sample)
    fake_cpu = (await fake.stats())["cpu_s"]
    cpu0 = time.process_time()
    t0 = time.monotonic()
    await send(data, asyncio.Semaphore(args.concurrency))
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    stats = await fake.stats()
    result = PathResult(
        name, args.recipients, args.concurrency, wall, _window(stats), cpu, stats["cpu_s"] - fake_cpu, cpu_over_s=wall
    )
    return result, _fake_problems(name, stats, args.recipients)


def naive_twilio(fake: FakeProcess) -> Callable[[list[dict[str, str]], asyncio.Semaphore], Awaitable[None]]:
    async def send(data: list[dict[str, str]], gate: asyncio.Semaphore) -> None:
        http = RoutedTwilioHttpClient(fake.url)
        client = Client(fake.account_sid, fake.auth_token, http_client=http)
        client.edge = client.region = None

        async def one(form: dict[str, str]) -> None:
            async with gate:
                await client.messages.create_async(
                    to=form["To"], from_=form["From"], body=form["Body"], status_callback=form["StatusCallback"]
                )

        try:
            with warnings.catch_warnings():  # the package passes aiohttp its deprecated `auth`; said once is enough
                warnings.simplefilter("ignore", DeprecationWarning)
                await asyncio.gather(*(one(f) for f in data))
        finally:
            await http.close()

    return send


def raw_aiohttp(fake: FakeProcess) -> Callable[[list[dict[str, str]], asyncio.Semaphore], Awaitable[None]]:
    async def send(data: list[dict[str, str]], gate: asyncio.Semaphore) -> None:
        headers = {"Authorization": aiohttp.encode_basic_auth(fake.account_sid, fake.auth_token)}
        connector = aiohttp.TCPConnector(limit=AIOHTTP_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(form: dict[str, str]) -> None:
                async with gate, session.post(fake.messages_url, data=form, headers=headers) as answer:
                    created = await answer.json()
                    if answer.status != 201 or not created.get("sid"):
                        raise RuntimeError(f"the fake answered {answer.status}: {created}")

            await asyncio.gather(*(one(f) for f in data))

    return send


# ---- time to first send ------------------------------------------------------------------------


async def first_send(
    args: argparse.Namespace, dbs: Databases, fake: FakeProcess, policy: PolicySet, recipients: int
) -> FirstSend:
    url = await dbs.fresh()
    await county(url, recipients)
    await fake.configure(latency_s=args.latency_ms / 1000, callbacks=False)
    async with running_engine(url, fake, args.concurrency, policy) as engine:
        t0 = time.monotonic()
        await engine.alerts.trigger(alert_request(), actor="benchmark")
        planned = time.monotonic()
        async with asyncio.timeout(120):
            while (stats := await fake.stats())["first_at"] is None:  # noqa: ASYNC110 (another process)
                await asyncio.sleep(POLL_S)
    # the engine is stopped mid-alert: the rest of its sends are not needed here
    return FirstSend(recipients, planned - t0, stats["first_at"] - t0)


# ---- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, fake: FakeProcess, tmp: Path) -> Run:
    policy = parse_policy(SMS_ONLY_POLICY, "benchmarks/sms_path.py")
    dbs = Databases(args.database_url, tmp)
    load0 = os.getloadavg()[0]
    paths: list[PathResult] = []
    problems: list[str] = []
    for callbacks in (True, False):
        result, found = await engine_path(args, dbs, fake, policy, callbacks=callbacks)
        paths.append(result)
        problems += found
    sample = (await fake.stats())["sample"]
    for name, send in (("naive twilio loop", naive_twilio(fake)), ("raw aiohttp loop", raw_aiohttp(fake))):
        result, found = await baseline(name, args, fake, sample, send)
        paths.append(result)
        problems += found
    firsts = [await first_send(args, dbs, fake, policy, n) for n in ([10_000, 100_000] if args.big else [10_000])]
    return Run(paths, firsts, problems, dbs.backend, (load0, os.getloadavg()[0]))


# ---- output ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, result: Run) -> None:
    url = mask(args.database_url) if args.database_url else "a fresh SQLite file per run"
    console.print(
        f"[bold]jiaoying real SMS path[/] · {args.recipients:,} recipients · concurrency {args.concurrency} · "
        f"fake latency {args.latency_ms:g} ms, no rate limit · SMS per second {SMS_PER_SECOND:,.0f} · {url}\n"
        f"Python {platform.python_version()} · {result.backend} · {os.cpu_count()} CPU · "
        f"{platform.machine()} {platform.system()} · load {result.load[0]:.1f} → {result.load[1]:.1f}"
        + (" · [yellow]cProfile on: engine timings include its overhead[/]" if args.profile else "")
    )
    naive = next(p for p in result.paths if p.name == "naive twilio loop")
    raw = next(p for p in result.paths if p.name == "raw aiohttp loop")
    table = Table(title="SMS sends: engine vs. plain client loops, same fake, same run")
    for col, justify in (
        ("path", "left"),
        ("messages", "right"),
        ("msgs/s", "right"),
        ("vs naive", "right"),
        ("vs raw", "right"),
        ("wall s", "right"),
        ("trigger s", "right"),
        ("1st send s", "right"),
        ("reports s", "right"),
        ("CPU us", "right"),
        ("CPU fake", "right"),
        ("SMS rows", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def opt(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else ""

    for p in result.paths:
        engine = p.name.startswith("engine")
        table.add_row(
            p.name,
            f"{p.messages:,}",
            f"{p.rate:,.0f}",
            f"{p.rate / naive.rate:.0%}" if engine and naive.rate else "",
            f"{p.rate / raw.rate:.0%}" if engine and raw.rate else "",
            f"{p.wall_s:.2f}",
            opt(p.plan_s),
            opt(p.first_send_s),
            opt(p.closed_s),
            f"{p.cpu_s / p.cpu_over_s:.0%}" if p.cpu_over_s else "",
            f"{p.fake_cpu_s / p.cpu_over_s:.0%}" if p.cpu_over_s else "",
            ", ".join(f"{k} {v:,}" for k, v in sorted(p.states.items())) or "(no database)",
        )
    console.print(table)
    console.print(
        "msgs/s: messages ÷ (first create received → last create answered) at the fake. wall s: engine, trigger() "
        "to the last SMS row out of the queue; baselines, the gather. trigger s: the trigger() call (planning, "
        "one transaction). 1st send s: trigger() start → first create at the fake. reports s: trigger() start → "
        "the engine answered the last status callback (2 per message). vs naive / vs raw: msgs/s ÷ the baseline's. "
        "CPU us / CPU fake: process CPU time (all threads) ÷ the wall time it was taken over (to the last report "
        "when callbacks are on), in % of one core; us = the engine's process, or the baseline client's."
    )
    if args.concurrency > AIOHTTP_CONNECTIONS:
        console.print(
            f"[yellow]concurrency {args.concurrency} > {AIOHTTP_CONNECTIONS}: the engine's and the naive loop's "
            f"aiohttp sessions open at most {AIOHTTP_CONNECTIONS} connections, the raw loop too[/]"
        )
    inside = Table(title="the engine's database work over the same runs")
    for col in ("path", "SQL statements", "per message", "writer commits", "writer jobs", "messages per commit"):
        inside.add_column(col, justify="left" if col == "path" else "right")
    for p in result.paths:
        if p.statements:
            inside.add_row(
                p.name,
                f"{p.statements:,}",
                f"{p.statements / p.messages:.1f}",
                f"{p.commits:,}",
                f"{p.jobs:,}",
                f"{p.messages / p.commits:.1f}" if p.commits else "",
            )
    console.print(inside)
    console.print(
        "statements: every statement the engine's SQLAlchemy engine ran from trigger() to the last report, the "
        "planning's and the benchmark's queue probes (one per 0.1 s) included. Writer: alerting/store/writer.py."
    )
    firsts = Table(title="time to first send: trigger() start → first create at the fake")
    for col in ("recipients", "trigger() s", "first send s"):
        firsts.add_column(col, justify="right")
    for f in result.first_sends:
        firsts.add_row(f"{f.recipients:,}", f"{f.plan_s:.2f}", f"{f.first_send_s:.2f}")
    console.print(firsts)
    for p in result.paths:
        if p.profile:
            console.rule(f"cProfile, {p.name} (event-loop thread; the aiosqlite thread is not profiled)")
            console.print(p.profile, markup=False, highlight=False)
    if result.problems:
        for problem in result.problems:
            console.print(f"[bold red]NOT ACCOUNTED FOR:[/] {problem}")
    else:
        console.print("[green]every SMS was created once at the fake and recorded in its expected state[/]")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=5000, help="grid workers, one SMS each (default 5000)")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="sends in flight, engine and baselines (default 50, as wired)"
    )
    parser.add_argument("--latency-ms", type=float, default=30.0, help="the fake's latency per create (default 30)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="an EMPTY database (e.g. postgresql+asyncpg://...); its tables are dropped between runs. "
        "Default: a fresh SQLite file per run in a temporary directory",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the engine runs; print the top 25 cumulative")
    parser.add_argument("--big", action="store_true", help="also time the first send of a 100,000-recipient alert")
    args = parser.parse_args(argv)
    if args.recipients < 1 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("--recipients and --concurrency must be positive, --latency-ms not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    fake = FakeProcess()
    fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix="jiaoying-sms-") as tmp:
            result = asyncio.run(run(args, fake, Path(tmp)))
    finally:
        fake.stop()
    report(args, result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
