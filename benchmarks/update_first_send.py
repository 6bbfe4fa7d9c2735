"""Time to first send of an update: the duty room raises or rewrites a county-wide warning, and the new text should
reach the first phones as fast as a fresh alert's would. Same-run baseline: the fresh alert itself.

Run from the repository root:

    python -m benchmarks.update_first_send                    # 20,000 grid workers, half of them answered
    python -m benchmarks.update_first_send --recipients 100000 --answered 0.8

What runs: benchmarks.fanout's synthetic county on a fresh SQLite file, the whole engine with every channel a
zero-latency sandbox and its loops running (as `jiaoying serve` does). A county-wide orange exercise is triggered;
once it is planned, and while it is still going out, a share of the grid workers are marked answered (straight in
the store, as set-up); then the alert is updated with a new text at the same level, so those who answered keep
their answer and everyone else is sent the new text. Both calls are timed from the call to its first commit (the
dispatcher is woken), to the first message of its alert a channel is handed (first send), and to its return
(every page planned). Last the update is lifted (解除), timed the same way to its first lift notice and its return
(the rest of it stopped). Before this benchmark the update planned everyone in one transaction, and at this size it
failed outright (carried answers and plain rows in one insert), so the fresh alert is the baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: this checkout's packages, not whatever else is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from sqlalchemy import select, update
from sqlmodel import col

from alerting.deliver.port import OutboundMessage, Receipt
from alerting.issue.alerts import AlertChange, AlertRequest, AlertService, Issued
from alerting.model.domain import Level, Purpose, Role, TargetState
from alerting.store.db import Database
from alerting.store.tables import Target
from benchmarks.fanout import COUNTY, Layout, build_county, quiet_logs, read_townships, sandbox_engine
from channels.sandbox import SandboxChannel

console = Console()


@dataclass(frozen=True)
class Timed:
    name: str
    alert_id: int
    targets: int
    deliveries: int
    first_commit_s: float
    first_send_s: float
    planned_s: float  # the call's return: every page written


class FirstSends:
    """The monotonic time each alert's first message of each purpose (warning, lift) reached a channel."""

    def __init__(self, channels: Sequence[SandboxChannel]) -> None:
        self.first: dict[tuple[int, Purpose], float] = {}
        for channel in channels:
            channel.send = self._wrap(channel.send)  # type: ignore[method-assign,assignment]

    def _wrap(self, send: Callable[[OutboundMessage], Awaitable[Receipt]]) -> Callable[..., Awaitable[Receipt]]:
        async def timed(message: OutboundMessage) -> Receipt:
            self.first.setdefault((message.alert_id, message.purpose), time.monotonic())
            return await send(message)

        return timed

    async def of(self, alert_id: int, purpose: Purpose = Purpose.WARN) -> float:
        async with asyncio.timeout(300):
            while (alert_id, purpose) not in self.first:  # noqa: ASYNC110 (set by the dispatcher's sends)
                await asyncio.sleep(0.005)
        return self.first[alert_id, purpose]


@contextmanager
def wakes_noted(alerts: AlertService) -> Iterator[list[float]]:
    """The times the service woke the dispatcher while inside: the first is its first commit."""
    woken: list[float] = []
    wake = alerts.wake

    def noted() -> None:
        woken.append(time.monotonic())
        wake()

    alerts.wake = noted
    try:
        yield woken
    finally:
        alerts.wake = wake


async def timed(name: str, call: Callable[[], Awaitable[Issued]], sends: FirstSends, alerts: AlertService) -> Timed:
    with wakes_noted(alerts) as woken:
        t0 = time.monotonic()
        issued = await call()
    planned = time.monotonic() - t0
    first = await sends.of(issued.alert_id) - t0
    return Timed(name, issued.alert_id, issued.targets, issued.deliveries, woken[0] - t0, first, planned)


async def timed_lift(alert_id: int, sends: FirstSends, alerts: AlertService) -> Timed:
    """解除 of the updated alert once it is planned and mostly sent: to its first commit, its first lift notice
    handed to a channel, and its return (the rest of the alert stopped)."""
    with wakes_noted(alerts) as woken:
        t0 = time.monotonic()
        lifted = await alerts.cancel(alert_id, actor="benchmark", reason="基准测试结束")
    done = time.monotonic() - t0
    first = await sends.of(alert_id, Purpose.LIFT) - t0
    return Timed("lift (解除) of the update", alert_id, 0, lifted.lift_notices, woken[0] - t0, first, done)


async def mark_answered(db: Database, alert_id: int, share: float) -> int:
    """Answer for every n-th grid worker of the alert, straight in the store (set-up, not what is measured)."""
    every = max(1, round(1 / share)) if share > 0 else 0
    async with db.session() as s:
        ids = list(
            (
                await s.execute(
                    select(col(Target.id))
                    .where(col(Target.alert_id) == alert_id, col(Target.role) == Role.GRID_WORKER.value)
                    .order_by(col(Target.id))
                )
            ).scalars()
        )
        chosen = ids[::every] if every else []
        for i in range(0, len(chosen), 5000):
            await s.execute(
                update(Target)
                .where(col(Target.id).in_(chosen[i : i + 5000]))
                .values(state=TargetState.ANSWERED.value, answer_channel="sms")
            )
    return len(chosen)


async def run(args: argparse.Namespace, url: str) -> tuple[list[Timed], int]:
    db = Database(url)
    await db.upgrade()
    townships = await asyncio.to_thread(read_townships)
    await build_county(db, Layout.for_recipients(townships, args.recipients), args.recipients)
    await db.close()

    engine = await sandbox_engine(url)
    sends = FirstSends([c for c in engine.channels.values() if isinstance(c, SandboxChannel)])
    await engine.start()
    try:
        request = AlertRequest(
            level=Level.ORANGE,
            hazard="暴雨",
            title="巫溪县暴雨橙色预警（基准测试）",
            text="预计未来6小时内全县大部地区将出现暴雨，请做好防范。",
            units=[COUNTY],
            exercise=True,
        )
        fresh = await timed(
            "trigger (fresh alert)", lambda: engine.alerts.trigger(request, actor="benchmark"), sends, engine.alerts
        )
        alert_id = fresh.alert_id  # still going out: the update comes while the first alert's queue is full
        answered = await mark_answered(engine.db, alert_id, args.answered)
        change = AlertChange(text="预计未来6小时内全县大部地区将出现暴雨，局地大暴雨，山洪风险高，请做好防范。")
        updated = await timed(
            "update (new text, same level)",
            lambda: engine.alerts.update(alert_id, change, actor="benchmark"),
            sends,
            engine.alerts,
        )
        lifted = await timed_lift(updated.alert_id, sends, engine.alerts)
    finally:
        await engine.stop()
    return [fresh, updated, lifted], answered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000, help="grid workers in the county (default 20000)")
    parser.add_argument("--answered", type=float, default=0.5, help="share of grid workers answered (default 0.5)")
    args = parser.parse_args(argv)
    if args.recipients < 1 or not 0 <= args.answered <= 1:
        parser.error("--recipients must be positive and --answered between 0 and 1")
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="jiaoying-update-") as tmp:
        load0 = os.getloadavg()[0]
        results, answered = asyncio.run(run(args, f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))
        load1 = os.getloadavg()[0]
    table = Table(title=f"Time to first send, {args.recipients:,} grid workers, {answered:,} of them answered")
    for column in ("call", "targets", "deliveries", "first commit s", "first send s", "returned s"):
        table.add_column(column, justify="left" if column == "call" else "right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.targets:,}",
            f"{r.deliveries:,}",
            f"{r.first_commit_s:.3f}",
            f"{r.first_send_s:.3f}",
            f"{r.planned_s:.2f}",
        )
    console.print(table)
    fresh, updated, _ = results
    console.print(
        f"update's first send / a fresh alert's: {updated.first_send_s / fresh.first_send_s:.2f}x; "
        f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {load0:.1f} → {load1:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
