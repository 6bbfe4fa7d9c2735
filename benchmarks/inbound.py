"""Inbound at burst rates (issue 12): siren acks through a real broker and answers through the answer page.

Run from the repository root:

    python -m benchmarks.inbound                           # 6,000 sirens and 6,000 grid workers, mosquitto
    python -m benchmarks.inbound --sirens 3000 --answers 3000 --rate 1000 --concurrency 50
    python -m benchmarks.inbound --broker amqtt            # the embedded broker (the default deployment)
    python -m benchmarks.inbound --mosquitto-limits default  # mosquitto's own limits instead of deploy/mosquitto.conf's

What runs:

- the engine: config.wiring.build_engine on a fresh SQLite file, with the real MQTT device channel on the broker,
  every other channel a sandbox and a one-step policy (SMS to people, one command to each siren, a day's wait, so
  nothing escalates while it is measured). Its own app (alerting.web.app.create_app) serves the answer page on a
  free loopback port that is also JIAOYING_PUBLIC_URL, so the links in the SMS texts point at it. The engine runs
  its loops as `jiaoying serve` does.
- the county: benchmarks.fanout's synthetic 巫溪县 (one grid worker per grid) and one siren per grid. Three red
  alerts go out, each to a third of the townships, so that each measured phase answers commands and links nobody
  has answered yet.
- the outside world, in a process of its own so that its work is not counted on the engine's event loop: a fleet
  client on the broker that receives every siren command and publishes the acks (QoS 1, status "sounding", which is
  a siren's answer), and an aiohttp client that opens the answer links and POSTs 收到.
- broker: Debian's mosquitto with the limits of deploy/mosquitto.conf (tests/brokers.py starts it), or amqtt.

Phases (each on its own alert's third of the sirens or people):

1. siren acks, burst: every ack published at once. acks/s = acks ÷ (first publish → last ack durable).
2. siren acks at --rate/s: the same, published at a steady rate; latency = ack published (fleet) → its answer and
   report committed (engine), one clock (CLOCK_MONOTONIC) in both processes.
3. baseline, siren acks one at a time: the listener's read-ahead set to 1, so each ack is handled and committed
   alone before the next is read, as the listener did before the batched writer.
4. answers, burst: every link POSTed, --concurrency at a time. Latency = the client's request → page received.
5. answers at --rate/s.
6. baseline, answers one transaction each: the same burst with the answer service's batching replaced by one
   database transaction per answer (the code before the batched writer).

The run fails (exit 1, NOT RECORDED) unless every siren that acked and every person who answered is recorded
answered, and every page came back 200.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import aiomqtt
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, insert, select
from sqlmodel import col

import channels.mqtt.devices as mqtt_devices
from alerting.answer.acks import AckService
from alerting.answer.apply import Incoming
from alerting.answer.events import DeviceReport
from alerting.answer.inbound import Inbound
from alerting.answer.outcomes import AnswerResult
from alerting.deliver.port import Channel
from alerting.issue.alerts import AlertRequest
from alerting.model.domain import ChannelKind, DeviceKind, Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import Device, Target
from alerting.web.app import create_app
from benchmarks import AUDIT_KEY
from benchmarks.fanout import COUNTY_NAME, Layout, build_county, quiet_logs, read_townships
from channels.mqtt.broker import EmbeddedBroker
from channels.mqtt.devices import parse_mqtt_url
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from escalation.policy.rules import parse_policy
from tests.brokers import MosquittoBroker, mosquitto_binary
from tests.fakes.server import free_port, serve_app

SECRET = "benchmark-only-secret-key"  # noqa: S105  (signs links that only the benchmark's client opens)
PREFIX = "jiaoying"
SAMPLE_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"
POLICY = "levels:\n" + "".join(
    f"  {level}:\n"
    "    person_steps: [{who: target, channels: [sms], wait_s: 86400}]\n"
    "    device_steps: [{who: target, channels: [device], wait_s: 86400}]\n"
    for level in ("red", "orange", "yellow", "blue")
)
HTTP_CONNECTIONS = 200  # the client's connection limit in the paced phases
WAIT_S = 120.0  # for commands to reach the fleet, and for acks to be recorded

console = Console() if sys.stdout.isatty() else Console(width=150)


# ---- the outside world, in its own process -------------------------------------------------------


def world_main(conn: Connection) -> None:
    quiet_logs()
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # "N pending publish calls": the fleet fires them at once
    asyncio.run(World(conn).serve())


class World:
    """Sirens on the broker and phones opening links; steered by (command, args) tuples over the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.commands: dict[int, list[tuple[str, str]]] = {}  # alert id -> (device id, command id)
        self.fleet: aiomqtt.Client | None = None

    async def serve(self) -> None:
        while True:
            command, *args = await asyncio.to_thread(self.conn.recv)
            if command == "stop":
                break
            handler: Callable[..., Awaitable[Any]] = getattr(self, command)
            self.conn.send(await handler(*args))
        if self.fleet is not None:
            await self.fleet.__aexit__(None, None, None)

    async def connect(self, url: str) -> bool:
        endpoint = parse_mqtt_url(url)
        self.fleet = aiomqtt.Client(
            endpoint.host, endpoint.port, identifier="bench-fleet", clean_session=True, max_inflight_messages=1000
        )
        await self.fleet.__aenter__()
        await self.fleet.subscribe(f"{PREFIX}/devices/+/command", qos=1)
        asyncio.get_running_loop().create_task(self._collect(self.fleet))
        return True

    async def _collect(self, fleet: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker stops before the fleet at the end of a run
            await self._read_commands(fleet)

    async def _read_commands(self, fleet: aiomqtt.Client) -> None:
        async for msg in fleet.messages:
            device_id = str(msg.topic).split("/")[-2]
            assert isinstance(msg.payload, bytes)
            body = json.loads(msg.payload)
            self.commands.setdefault(int(body["alert_id"]), []).append((device_id, body["command_id"]))

    async def commands_for(self, alert_id: int, expected: int) -> int:
        await wait_for(lambda: len(self.commands.get(alert_id, [])) >= expected)
        return len(self.commands.get(alert_id, []))

    async def ack(self, alert_id: int, rate: float | None) -> dict[str, float]:
        """Publish each command's "sounding" ack; returns the time each was handed to the client."""
        assert self.fleet is not None
        fleet, published = self.fleet, {}
        start = time.monotonic()
        sends = []
        for i, (device_id, command_id) in enumerate(self.commands[alert_id]):
            if rate is not None:
                await _until(start + i / rate)
            payload = json.dumps({"command_id": command_id, "status": "sounding"})
            published[command_id] = time.monotonic()
            sends.append(asyncio.create_task(fleet.publish(f"{PREFIX}/devices/{device_id}/ack", payload, qos=1)))
        await asyncio.gather(*sends)
        return published

    async def answer(self, urls: list[str], concurrency: int, rate: float | None) -> list[tuple[int, float, float]]:
        """POST 收到 to each link: (status, sent, received) per link."""
        limit = concurrency if rate is None else HTTP_CONNECTIONS
        gate = asyncio.Semaphore(limit)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as http:

            async def one(i: int, url: str) -> tuple[int, float, float]:
                if rate is not None:
                    await _until(start + i / rate)
                async with gate:
                    sent = time.monotonic()
                    async with http.post(url, data={}) as response:
                        await response.read()
                        return response.status, sent, time.monotonic()

            start = time.monotonic()
            return list(await asyncio.gather(*(one(i, url) for i, url in enumerate(urls))))


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until condition() holds or WAIT_S have passed; the checks after it say what is missing."""
    deadline = time.monotonic() + WAIT_S
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 (counters with no event to wait on)
        await asyncio.sleep(0.02)


async def _until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class WorldProcess:
    def __init__(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(target=world_main, args=(child,), daemon=True)

    def start(self) -> None:
        self.process.start()

    async def call(self, *command: Any) -> Any:
        self.conn.send(command)
        return await asyncio.to_thread(self.conn.recv)

    def stop(self) -> None:
        if self.process.is_alive():
            self.conn.send(("stop",))
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


# ---- the engine ------------------------------------------------------------------------------------


class TimedInbound(Inbound):
    """The engine's inbound sink, noting when each siren ack is durable (its answer and report committed)."""

    def __init__(self, db: Database, acks: AckService) -> None:
        super().__init__(db, acks)
        self.durable: dict[str, float] = {}

    async def device_report(self, event: DeviceReport) -> None:
        await super().device_report(event)
        self.durable[event.command_id] = time.monotonic()


class OneTransactionEach(AckService):
    """The baseline's answer service: each answer in a database transaction of its own, none batched."""

    async def _take(self, incoming: Incoming) -> AnswerResult:
        async with self.db.session() as s:
            outcome = (await self._apply(s, [incoming]))[incoming]
        if isinstance(outcome, Exception):
            raise outcome
        await self._changed(outcome)
        return outcome


async def add_sirens(db: Database, layout: Layout, n: int) -> None:
    rows = [
        {
            "id": f"bench-siren-{j:06d}",
            "unit_code": layout.grid(j)[0],
            "kind": DeviceKind.SIREN.value,
            "name": f"警报器{j}",
        }
        for j in range(n)
    ]
    async with db.session() as s:
        for start in range(0, n, 5000):
            await s.execute(insert(Device), rows[start : start + 5000])


def thirds(townships: list[tuple[str, str]]) -> list[list[str]]:
    codes = [code for code, _ in townships]
    return [codes[i::3] for i in range(3)]


async def issue(engine: AssembledEngine, units: list[str], n: int) -> int:
    request = AlertRequest(
        level=Level.RED,
        hazard="暴雨",
        title=f"{COUNTY_NAME}暴雨红色预警（基准测试 {n}）",
        text="预计未来3小时内将出现大暴雨，请立即组织转移。",
        instructions="请回复“收到”。",
        units=units,
        exercise=True,
    )
    return (await engine.alerts.trigger(request, actor="benchmark")).alert_id


async def answered(db: Database, alert_id: int, *, devices: bool) -> int:
    kind = col(Target.device_id).is_not(None) if devices else col(Target.person_id).is_not(None)
    async with db.session() as s:
        found = await s.scalar(
            select(func.count())
            .select_from(Target)
            .where(col(Target.alert_id) == alert_id, kind, col(Target.state) == TargetState.ANSWERED.value)
        )
    return int(found or 0)


# ---- measuring -------------------------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    items: int
    seconds: float
    latencies_ms: list[float]
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def siren_phase(
    name: str, engine: AssembledEngine, sink: TimedInbound, world: WorldProcess, alert_id: int, rate: float | None
) -> tuple[Figures, list[str]]:
    published: dict[str, float] = await world.call("ack", alert_id, rate)
    await wait_for(lambda: all(c in sink.durable for c in published))
    done = [sink.durable[c] for c in published if c in sink.durable]
    latencies = [(sink.durable[c] - t) * 1000 for c, t in published.items() if c in sink.durable]
    seconds = (max(done) - min(published.values())) if done else 0.0
    problems = []
    recorded = await answered(engine.db, alert_id, devices=True)
    if recorded != len(published):
        problems.append(f"{name}: {len(published)} sirens acked, {recorded} recorded answered")
    return Figures(name, len(published), seconds, latencies), problems


async def answer_phase(
    name: str, engine: AssembledEngine, world: WorldProcess, alert_id: int, concurrency: int, rate: float | None
) -> tuple[Figures, list[str]]:
    links = links_of(engine, alert_id)
    pages: list[tuple[int, float, float]] = await world.call("answer", links, concurrency, rate)
    seconds = max(end for _, _, end in pages) - min(sent for _, sent, _ in pages)
    problems = []
    failed = sum(1 for status, _, _ in pages if status != 200)
    if failed:
        problems.append(f"{name}: {failed} of {len(pages)} answer pages did not come back 200")
    recorded = await answered(engine.db, alert_id, devices=False)
    if recorded != len(links):
        problems.append(f"{name}: {len(links)} people answered, {recorded} recorded answered")
    latencies = [(end - sent) * 1000 for _, sent, end in pages]
    return Figures(name, len(pages), seconds, latencies), problems


def links_of(engine: AssembledEngine, alert_id: int) -> list[str]:
    sms = engine.channels[ChannelKind.SMS]
    assert isinstance(sms, SandboxChannel)
    return [r.message.ack_url for r in sms.outbox if r.message.alert_id == alert_id and r.message.ack_url]


async def settle(engine: AssembledEngine, alert_ids: list[int], expected: int) -> None:
    """Until every first-wave delivery is handed over (the sandbox SMS and the commands on the broker)."""
    sms = engine.channels[ChannelKind.SMS]
    assert isinstance(sms, SandboxChannel)
    await wait_for(lambda: sum(1 for r in sms.outbox if r.message.alert_id in alert_ids) >= expected)


async def start_broker(kind: str, limits: str, workdir: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    port = free_port()
    if kind == "amqtt":
        embedded = EmbeddedBroker(port=port)
        await embedded.start()
        return f"mqtt://127.0.0.1:{port}", embedded.stop
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto), or run with --broker amqtt")
    settings = "" if limits == "default" else sample_limits()
    broker = MosquittoBroker(binary, workdir / "mosquitto", port, settings=settings)
    await broker.start()
    return broker.url, broker.stop


def sample_limits() -> str:
    """The per-client limits of deploy/mosquitto.conf, which a benchmark broker can take as they are."""
    lines = SAMPLE_CONF.read_text(encoding="utf-8").splitlines()
    return "".join(f"{line}\n" for line in lines if line.startswith(("max_", "persistent_client_expiration")))


@dataclass
class Run:
    figures: list[Figures]
    problems: list[str]
    load: tuple[float, float]


async def run(args: argparse.Namespace, world: WorldProcess, tmp: Path) -> Run:
    url = f"sqlite+aiosqlite:///{tmp / 'inbound.db'}"
    layout = Layout.for_recipients(await asyncio.to_thread(read_townships), args.answers)
    db = Database(url)
    await db.upgrade()
    await build_county(db, layout, args.answers)
    await add_sirens(db, layout, args.sirens)
    await db.close()

    broker_url, stop_broker = await start_broker(args.broker, args.mosquitto_limits, tmp)
    port = free_port()
    settings = Settings(
        database_url=url,
        public_url=f"http://127.0.0.1:{port}",
        secret_key=SECRET,
        mqtt_url=broker_url,
        audit_key=AUDIT_KEY,
    )
    channels: dict[ChannelKind, Channel] = {
        k: SandboxChannel(k, keep=args.answers + 10) for k in ChannelKind if k is not ChannelKind.DEVICE
    }
    engine = build_engine(settings, policy=parse_policy(POLICY, "benchmarks/inbound.py"), channels=channels)
    sink = TimedInbound(engine.db, engine.acks)
    engine.inbound = sink
    figures: list[Figures] = []
    problems: list[str] = []
    load0 = os.getloadavg()[0]
    try:
        assert await world.call("connect", broker_url)
        async with serve_app(create_app(engine.core), port):
            await engine.start()
            groups = thirds(layout.townships)
            alert_ids = [await issue(engine, units, i + 1) for i, units in enumerate(groups)]
            await settle(engine, alert_ids, expected=args.answers)
            for alert_id in alert_ids:
                await world.call("commands_for", alert_id, 1)
            await asyncio.sleep(1.0)  # the last commands of the last batch reach the fleet

            for (name, rate, read_ahead), alert_id in zip(
                [
                    ("siren acks, burst", None, mqtt_devices.READ_AHEAD),
                    (f"siren acks at {args.rate:,.0f}/s", args.rate, mqtt_devices.READ_AHEAD),
                    ("baseline: siren acks one at a time", None, 1),
                ],
                alert_ids,
                strict=True,
            ):
                await reconnect_with(engine, read_ahead)
                result, found = await siren_phase(name, engine, sink, world, alert_id, rate)
                figures.append(result)
                problems += found
            await reconnect_with(engine, mqtt_devices.READ_AHEAD)

            batched = engine.acks
            for (name, rate, one_each), alert_id in zip(
                [
                    (f"answers, burst ({args.concurrency} at a time)", None, False),
                    (f"answers at {args.rate:,.0f}/s", args.rate, False),
                    (f"baseline: answers one transaction each ({args.concurrency} at a time)", None, True),
                ],
                alert_ids,
                strict=True,
            ):
                engine.core.acks = OneTransactionEach(engine.db, batched.on_help) if one_each else batched
                result, found = await answer_phase(name, engine, world, alert_id, args.concurrency, rate)
                figures.append(result)
                problems += found
            engine.core.acks = batched
            await engine.stop()
    finally:
        await stop_broker()
    return Run(figures, problems, (load0, os.getloadavg()[0]))


async def reconnect_with(engine: AssembledEngine, read_ahead: int) -> None:
    """The listener reads READ_AHEAD when it connects: a new connection takes the new value."""
    if read_ahead == mqtt_devices.READ_AHEAD:
        return
    mqtt_devices.READ_AHEAD = read_ahead
    device = engine.channels[ChannelKind.DEVICE]
    assert isinstance(device, mqtt_devices.MqttDeviceChannel)
    await device.close()
    await device.start(engine.inbound)


# ---- the report ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, result: Run) -> None:
    table = Table(title=f"inbound: {args.sirens:,} sirens, {args.answers:,} people, broker {broker_name(args)}")
    for column in ("phase", "items", "wall s", "items/s", "p50 ms", "p99 ms", "max ms", "vs baseline"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    baselines = {"siren": result.figures[2].rate, "answers": result.figures[5].rate}
    for f in result.figures:
        base = baselines["siren" if f.name.startswith(("siren", "baseline: siren")) else "answers"]
        against = "" if f.name.startswith("baseline") or not base else f"{f.rate / base:.1f}×"
        table.add_row(
            f.name,
            f"{f.items:,}",
            f"{f.seconds:.2f}",
            f"{f.rate:,.0f}",
            f"{statistics.median(f.latencies_ms):.1f}" if f.latencies_ms else "",
            f"{f.pct(99):.1f}",
            f"{max(f.latencies_ms, default=0):.1f}",
            against,
        )
    console.print(table)
    console.print(
        f"{platform.python_implementation()} {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {result.load[0]:.2f} → {result.load[1]:.2f}"
    )
    if result.problems:
        console.print("[bold red]NOT RECORDED[/]")
        for problem in result.problems:
            console.print(f"  {problem}")


def broker_name(args: argparse.Namespace) -> str:
    if args.broker == "amqtt":
        return "amqtt (embedded)"
    return f"mosquitto ({'its defaults' if args.mosquitto_limits == 'default' else 'deploy/mosquitto.conf limits'})"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sirens", type=int, default=6000, help="sirens, a third per siren phase")
    parser.add_argument("--answers", type=int, default=6000, help="grid workers, a third per answer phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered rate of the paced phases, per second")
    parser.add_argument("--concurrency", type=int, default=50, help="answer pages open at once in the bursts")
    parser.add_argument("--broker", choices=["mosquitto", "amqtt"], default="mosquitto")
    parser.add_argument("--mosquitto-limits", choices=["sample", "default"], default="sample")
    args = parser.parse_args(argv)
    if args.sirens < 3 or args.answers < 3:
        parser.error("--sirens and --answers need at least 3 (a third per phase)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    world = WorldProcess()
    world.start()
    try:
        with tempfile.TemporaryDirectory(prefix="jiaoying-inbound-") as tmp:
            result = asyncio.run(run(args, world, Path(tmp)))
    finally:
        world.stop()
    report(args, result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
