"""Storm benchmark: a rainy night's load on one `jiaoying serve` during a county-wide red alert.

Run from the repository root (a few minutes):

    python benchmarks/storm.py                       # 20 boards, 5 pollers, 1 auditor; 20 -> 50 -> 100 answers/s
    python -m benchmarks.storm --streams 40 --phases 50,100 --phase-s 30

The server is the installed `jiaoying serve`, started as a county starts it, on the 巫溪 sample with sandbox
channels (nothing leaves the machine). The grid workers answer through the links the sandbox SMS carried
(read from GET /api/v1/sandbox/outbox), as a phone would, while duty screens hold the live board
(/console/events), pollers read GET /api/v1/board every second and auditors open the alert's report every
10 s. The first step's window is short, so escalation deadlines fall due while the answers flow; their
lateness is read from the store (fired_at beside due_at). GET /healthz, timed alongside, is the same-run
floor every latency is read against.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: this checkout's packages, not whatever else is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import itertools
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from rich.table import Table

from benchmarks.fanout import console
from tests.alerting.deliver.paced import JIAOYING, engine_env, make_sample, until_serving
from tests.fakes.server import free_port

DUTY_KEY, AUDIT_KEY, PASSWORD = "storm-duty-key", "storm-audit-key", "storm-pass-0001"
WINDOW_S = 20  # the first step's answer window: deadlines fall due during the phases
POLICY = "levels:\n" + "".join(
    f"  {level}:\n    person_steps:\n      - {{who: target, channels: [sms], wait_s: {WINDOW_S}}}\n"
    "      - {who: target, channels: [sms], wait_s: 900}\n"
    for level in ("red", "orange", "yellow", "blue")
)
SLOW_S = 10.0  # a request taking longer counts as an error: the phone or the screen gave up


@dataclass
class Phase:
    rate: int
    started: float = 0.0
    ended: float = 0.0
    wall: tuple[datetime, datetime] | None = None
    answers: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0
    rss_mib: float = 0.0


@dataclass
class Timings:
    board: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    report: list[tuple[float, float]] = field(default_factory=list)
    healthz: list[tuple[float, float]] = field(default_factory=list)
    events: list[list[float]] = field(default_factory=list)  # per stream: arrival of every board event


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def within(samples: list[tuple[float, float]], phase: Phase) -> list[float]:
    return [s for at, s in samples if phase.started <= at <= phase.ended]


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed(samples: list[tuple[float, float]], call: Callable[[], Awaitable[httpx.Response]]) -> None:
    began = time.monotonic()
    with contextlib.suppress(httpx.HTTPError):
        await call()
    samples.append((began, time.monotonic() - began))


async def every(seconds: float, action: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.gather(action(), asyncio.sleep(seconds))


async def stream(url: str, cookie: str, arrivals: list[float]) -> None:
    timeout = httpx.Timeout(SLOW_S, read=120.0)
    async with (
        httpx.AsyncClient(base_url=url, cookies={"jy_session": cookie}, timeout=timeout, trust_env=False) as c,
        c.stream("GET", "/console/events", headers={"accept": "text/event-stream"}) as events,
    ):
        async for line in events.aiter_lines():
            if line.startswith("event: board"):
                arrivals.append(time.monotonic())


async def links(api: httpx.AsyncClient, alert_id: int, want: int) -> list[str]:
    found: list[str] = []
    while len(found) < want:
        page = (
            await api.get(
                "/api/v1/sandbox/outbox",
                params={"alert_id": alert_id, "channel": "sms", "limit": 1000, "offset": len(found)},
            )
        ).json()
        found += [item["ack_path"] for item in page["items"] if item["ack_path"]]
        if len(found) >= page["total"]:
            break
    return found


async def answer(phones: httpx.AsyncClient, path: str, phase: Phase) -> None:
    began = time.monotonic()
    try:
        r = await phones.post(path, data={}, timeout=SLOW_S)
        ok = r.status_code == 200
    except httpx.HTTPError:
        ok = False
    if ok:
        phase.answers.append(time.monotonic() - began)
    else:
        phase.errors += 1


def deadline_lateness(db: Path, phase: Phase) -> tuple[int, float]:
    assert phase.wall is not None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT due_at, fired_at FROM deadline WHERE fired_at IS NOT NULL").fetchall()
    late = [
        (datetime.fromisoformat(f).replace(tzinfo=UTC) - datetime.fromisoformat(d).replace(tzinfo=UTC)).total_seconds()
        for d, f in rows
        if phase.wall[0] <= datetime.fromisoformat(f).replace(tzinfo=UTC) <= phase.wall[1]
    ]
    return len(late), max(late, default=0.0)


def longest_gap(events: list[list[float]], phase: Phase) -> float:
    gaps = []
    for arrivals in events:
        inside = [phase.started, *(t for t in arrivals if phase.started <= t <= phase.ended), phase.ended]
        gaps.append(max(b - a for a, b in itertools.pairwise(inside)))
    return max(gaps, default=float("nan"))


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="jiaoying-storm-"))
    console.print(f"[bold]storm[/]: the 巫溪 sample into {work}")
    db = await asyncio.to_thread(make_sample, work)
    env = engine_env(work, db)
    port = free_port()
    (work / "policy.yaml").write_text(POLICY, encoding="utf-8")
    env.update(
        JIAOYING_PUBLIC_URL=f"http://127.0.0.1:{port}",
        JIAOYING_POLICY_FILE=str(work / "policy.yaml"),
        JIAOYING_API_KEYS=f'["{DUTY_KEY}:duty","{AUDIT_KEY}:auditor"]',
        JIAOYING_MQTT_EMBEDDED_PORT=str(free_port()),
        JIAOYING_LOG_LEVEL="warning",
    )
    add = [*JIAOYING, "account", "add", "duty", "--role", "duty", "--password-stdin"]
    await asyncio.to_thread(
        subprocess.run, add, env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True
    )
    url = f"http://127.0.0.1:{port}"
    log = (work / "serve.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        *JIAOYING, "serve", "--port", str(port), env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT
    )
    duty = httpx.AsyncClient(base_url=url, headers={"X-API-Key": DUTY_KEY}, timeout=60, trust_env=False)
    auditor = httpx.AsyncClient(base_url=url, headers={"X-API-Key": AUDIT_KEY}, timeout=60, trust_env=False)
    phones = httpx.AsyncClient(base_url=url, trust_env=False, limits=httpx.Limits(max_connections=400))
    background: list[asyncio.Task[None]] = []
    try:
        await until_serving(server, duty, lambda: (work / "serve.log").read_text(errors="replace")[-3000:])
        signed = await httpx.AsyncClient(base_url=url, trust_env=False).post(
            "/console/sign-in", data={"username": "duty", "password": PASSWORD}
        )
        cookie = signed.cookies["jy_session"]
        body = {
            "level": "red",
            "hazard": "暴雨",
            "title": "全县暴雨红色预警（压力测试）",
            "text": "特大暴雨。",
            "instructions": "立即转移。",
            "units": ["500238"],
            "exercise": True,
        }
        alert = (await duty.post("/api/v1/alerts", json=body)).json()
        alert_id, targets = int(alert["id"]), int(alert["targets"])
        console.print(f"alert {alert_id}: {targets} recipients; waiting for the sandbox SMS")
        paths: list[str] = []
        for _ in range(120):
            paths = await links(duty, alert_id, targets)
            if len(paths) >= min(targets, sum(args.phases) * args.phase_s):
                break
            await asyncio.sleep(1)
        console.print(
            f"{len(paths)} answer links; {args.streams} boards, {args.pollers} pollers, {args.auditors} auditors"
        )

        t = Timings(events=[[] for _ in range(args.streams)])
        background += [asyncio.create_task(stream(url, cookie, arrivals)) for arrivals in t.events]
        background += [
            asyncio.create_task(every(1.0, lambda: timed(t.board, lambda: duty.get("/api/v1/board"))))
            for _ in range(args.pollers)
        ]
        report = f"/api/v1/alerts/{alert_id}/report"
        background += [
            asyncio.create_task(every(10.0, lambda: timed(t.report, lambda: auditor.get(report))))
            for _ in range(args.auditors)
        ]
        background.append(asyncio.create_task(every(0.5, lambda: timed(t.healthz, lambda: duty.get("/healthz")))))
        await asyncio.sleep(3)

        phases = [Phase(rate) for rate in args.phases]
        left = iter(paths)
        for phase in phases:
            cpu = process_cpu_s(server.pid)
            phase.started, wall_from = time.monotonic(), datetime.now(UTC)
            sent: list[asyncio.Task[None]] = []
            for n in range(phase.rate * args.phase_s):
                await asyncio.sleep(max(0.0, phase.started + n / phase.rate - time.monotonic()))
                path = next(left, None)
                if path is None:
                    break
                sent.append(asyncio.create_task(answer(phones, path, phase)))
            await asyncio.gather(*sent)
            phase.ended, phase.wall = time.monotonic(), (wall_from, datetime.now(UTC))
            phase.cpu_s = process_cpu_s(server.pid) - cpu
            phase.rss_mib = process_rss_mib(server.pid)
        table = Table(
            title=f"storm: {targets} recipients, {args.streams} boards, {args.pollers} pollers, "
            f"{args.auditors} auditors (ms unless said)"
        )
        for column in (
            "answers/s",
            "answers",
            "errors",
            "answer p50",
            "answer p99",
            "longest board gap s",
            "board p99",
            "report p99",
            "deadlines fired",
            "worst lateness s",
            "server CPU %",
            "RSS MiB",
            "healthz p99 (floor)",
        ):
            table.add_column(column, justify="right")
        for phase in phases:
            fired, worst = deadline_lateness(db, phase)
            wall_s = phase.ended - phase.started
            table.add_row(
                str(phase.rate),
                str(len(phase.answers)),
                str(phase.errors),
                f"{p(phase.answers, 0.5) * 1000:.0f}",
                f"{p(phase.answers, 0.99) * 1000:.0f}",
                f"{longest_gap(t.events, phase):.1f}",
                f"{p(within(t.board, phase), 0.99) * 1000:.0f}",
                f"{p(within(t.report, phase), 0.99) * 1000:.0f}",
                str(fired),
                f"{worst:.2f}",
                f"{phase.cpu_s / wall_s * 100:.0f}",
                f"{phase.rss_mib:.0f}",
                f"{p(within(t.healthz, phase), 0.99) * 1000:.0f}",
            )
        console.print(table)
        console.print(
            "targets at 50/s with 20 boards: answer p99 < 200 ms, 0 errors, no board silent > 5 s, "
            "deadlines <= 2 s late, report p99 < 1 s"
        )
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for client in (duty, auditor, phones):
            await client.aclose()
        server.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait(), 20)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20, help="live boards held open")
    parser.add_argument("--pollers", type=int, default=5, help="clients reading GET /api/v1/board every second")
    parser.add_argument("--auditors", type=int, default=1, help="auditors opening the report every 10 s")
    parser.add_argument(
        "--phases",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[20, 50, 100],
        help="answers per second, one phase each",
    )
    parser.add_argument("--phase-s", type=int, default=10, help="seconds per phase")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
