"""`jiaoying demo`: a red 暴雨/山洪 drill for three 巫溪 townships, end to end, on a fast clock, with no network.

Everything is real but the people: a fresh SQLite database, the sample county, an embedded MQTT
broker with simulated sirens answering over a real MQTT round trip, sandbox channels whose
simulated recipients answer (or stay silent) by a seeded plan. The demo predicts from that plan
how every loop must close and exits non-zero if the engine closed it any other way.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ScaledClock
from alerting.model.domain import AlertStatus, DeliveryState, Level, TargetKind, TargetState
from alerting.store.tables import Delivery, OrgUnit, Target
from alerting.views.report.export import export
from alerting.web.app import create_app
from channels.mqtt.broker import EmbeddedBroker
from channels.sim.devices import SimulatedSirenFleet
from channels.sim.simulation import AnswerSimulator
from config.demo.real_local import LocalProviders, WireRecipients, local_providers, wire_recipients
from config.demo.sample import generate_sample
from config.directory import import_directory
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine

TOWNSHIPS = ["500238101", "500238102", "500238103"]  # 凤凰镇, 宁厂镇, 上磺镇


@dataclass(frozen=True)
class DemoResult:
    ok: bool
    alert_id: int
    report: Path
    mismatches: list[str]


def _fresh_database(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("demo.db*"):
        old.unlink()
    # a fresh chain: the last run's checkpoints would say its rows were removed
    (workdir / "demo-audit-checkpoints.jsonl").unlink(missing_ok=True)
    return workdir / "demo.db"


async def run_demo(
    workdir: Path,
    *,
    seed: int = 2024,
    speed: float = 40.0,
    console: Console | None = None,
    real_local: bool = False,
) -> DemoResult:
    console = console or Console()
    db_path = await asyncio.to_thread(_fresh_database, workdir)
    clock = ScaledClock(speed)
    simulator = AnswerSimulator(clock, seed, max_delay_s=150.0, last_step=5)
    directory = generate_sample(seed=seed)
    async with AsyncExitStack() as stack:
        broker = EmbeddedBroker(port=0)
        await broker.start()
        stack.push_async_callback(broker.stop)
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{db_path}",
            mqtt_url=broker.url,
            public_url="http://127.0.0.1:8000",
            secret_key="demo-only-secret",  # noqa: S106 (the demo's links die with its database)
            audit_key="demo-only-audit-key-its-chain-dies-with-its-database",
            audit_checkpoints=workdir / "demo-audit-checkpoints.jsonl",
        )
        providers: LocalProviders | None = None
        if real_local:
            wecom_ids = [person.wecom_userid for person in directory.people if person.wecom_userid]
            providers = await stack.enter_async_context(local_providers(wecom_ids))
            settings = providers.settings(settings)
        engine = build_engine(settings, clock=clock, simulator=None if real_local else simulator)
        stack.push_async_callback(engine.stop)
        console.rule("[bold]jiaoying 叫应 demo — 巫溪县 红色暴雨/山洪预警演练[/]")
        console.print(_channels_note(providers))
        await engine.db.upgrade()
        await import_directory(engine.db, directory, actor="demo", at=clock.now())
        console.print(
            f"Sample county loaded: {len(directory.units)} units, {len(directory.people)} people, "
            f"{len(directory.devices)} devices (seed {seed})."
        )
        sirens = [d.id for d in directory.devices if d.kind == "siren" and d.unit_code[:9] in TOWNSHIPS]
        silent_sirens = frozenset(sorted(sirens)[::9])  # every ninth siren is broken
        # sirens answer 1 to 10 drill-clock seconds after a command, well inside the 60 s window
        fleet = SimulatedSirenFleet(
            broker.url, sirens, silent=silent_sirens, seed=seed, delay_s=(1 / speed, 10 / speed), clock=clock
        )
        await fleet.start()
        stack.push_async_callback(fleet.stop)
        await engine.start(poll_s=1.0 / speed)  # a clock second of latency at most, however fast the clock runs
        players: WireRecipients | None = None
        if providers is not None:
            await stack.enter_async_context(providers.serve_app(create_app(engine.core), port=providers.public_port))
            players = await stack.enter_async_context(wire_recipients(providers, engine.db, simulator))
        issued = await engine.alerts.trigger(
            AlertRequest(
                level=Level.RED,
                hazard="山洪",
                title="巫溪县山洪灾害红色预警（演练）",
                text="受强降雨影响，凤凰镇、宁厂镇、上磺镇沿河区域未来3小时发生山洪的可能性很大。",
                instructions="立即组织沿河、低洼地带群众转移至安置点，严禁涉水。",
                units=TOWNSHIPS,
                exercise=True,
            ),
            actor="demo:值班员",
        )
        console.print(
            f"Alert {issued.alert_id} issued to {issued.targets} recipients in {len(TOWNSHIPS)} townships, "
            f"{issued.deliveries} first sends ({', '.join(f'{k} {v}' for k, v in sorted(issued.by_channel.items()))})"
            "; escalations add sends as they fire."
        )
        await _watch(engine, issued.alert_id, console, clock, limit_s=45 * 60)
        report = await export(
            engine.db, issued.alert_id, "html", workdir / f"alert-{issued.alert_id}-report.html", now=clock.now()
        )
        mismatches = await _check(engine, issued.alert_id, simulator, silent_sirens)
        if players is not None:
            mismatches += [f"on the wire: {f}" for f in players.failures]
        chain = await audit.verify(engine.db)
        ok = not mismatches and chain.ok
        _summary(console, engine, issued.alert_id, report, mismatches, chain.rows, chain.ok)
        if providers is not None:
            console.print(_wire_summary(providers))
        return DemoResult(ok, issued.alert_id, report, mismatches)


def _channels_note(providers: LocalProviders | None) -> str:
    if providers is None:
        return (
            "[yellow]沙箱 SANDBOX:[/] SMS, voice, WeCom, email, broadcast and manual tasks are sandbox "
            "channels here: they only record what they would send and nobody is reached. "
            "Sirens answer over a real MQTT round trip through the embedded broker."
        )
    o = providers.overrides
    return (
        "[green]Real adapters against local fakes:[/] Twilio SMS and voice at "
        f"{o['twilio_base_url']}, WeCom at {o['wecom_base_url']}, the broadcast gateway at {o['broadcast_url']}, "
        f"SMTP on port {o['smtp_port']}; the engine serves their callbacks at {o['public_url']}/webhooks. "
        "Sirens answer over MQTT. The people answering are played by the demo, on the wire."
    )


def _wire_summary(p: LocalProviders) -> str:
    return (
        f"Wire traffic: Twilio {len(p.twilio.created('Messages'))} messages and {len(p.twilio.created('Calls'))} "
        f"calls, WeCom {len(p.wecom.sent)} cards, broadcast gateway {len(p.gateway.broadcasts)} broadcasts, "
        f"SMTP {len(p.smtp.received)} mails."
    )


async def _watch(
    engine: AssembledEngine, alert_id: int, console: Console, clock: ScaledClock, *, limit_s: float
) -> None:
    started = clock.now()
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            table, status = await _progress_table(engine, alert_id, clock, started)
            live.update(table)
            if status != AlertStatus.ACTIVE or (clock.now() - started).total_seconds() > limit_s:
                return
            await asyncio.sleep(0.25)


# the table's columns in Chinese, and what each says in English under it
HEADINGS = (
    "乡镇 township",
    "对象 recipients",
    "发送 sends",
    "已发 sent",
    "送达 delivered",
    "已应 answered",
    "升级 escalated",
    "未应 silent",
)


async def _progress_table(
    engine: AssembledEngine, alert_id: int, clock: ScaledClock, started: datetime
) -> tuple[Group, str]:
    async with engine.db.session() as s:
        query = select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(TOWNSHIPS))
        names: dict[str, str] = dict((await s.execute(query)).all())
        targets = (
            await s.execute(
                select(func.substr(Target.unit_code, 1, 9), col(Target.state), col(Target.step) > 0, func.count())
                .where(col(Target.alert_id) == alert_id)
                .group_by(func.substr(Target.unit_code, 1, 9), col(Target.state), col(Target.step) > 0)
            )
        ).all()
        deliveries = (
            await s.execute(
                select(func.substr(Target.unit_code, 1, 9), col(Delivery.state), func.count())
                .join(Target, col(Target.id) == Delivery.target_id)
                .where(col(Delivery.alert_id) == alert_id)
                .group_by(func.substr(Target.unit_code, 1, 9), col(Delivery.state))
            )
        ).all()
        alert_status = (await engine.alerts.get(alert_id)).status
    table = Table(title=f"预警 {alert_id} 进度 progress", expand=False)
    for heading in HEADINGS:
        table.add_column(heading.split()[0], justify="right")
    for code in TOWNSHIPS:
        ts = [r for r in targets if r[0] == code]
        ds = Counter({r[1]: r[2] for r in deliveries if r[0] == code})
        answered = sum(r[3] for r in ts if TargetState(r[1]).closed)
        silent = sum(r[3] for r in ts if r[1] == TargetState.OPEN.value)
        table.add_row(
            names.get(code, code),
            str(sum(r[3] for r in ts)),
            str(sum(ds.values())),
            str(ds[DeliveryState.SENT.value] + ds[DeliveryState.DELIVERED.value]),
            str(ds[DeliveryState.DELIVERED.value]),
            f"{answered}/{sum(r[3] for r in ts)}",
            str(sum(r[3] for r in ts if r[2])),
            f"[red]{silent}[/]" if silent else "0",
        )
    elapsed = (clock.now() - started).total_seconds() / 60
    legend = " · ".join(HEADINGS[1:])
    return Group(
        table, legend, f"演练时钟 drill clock: +{elapsed:4.1f} min (x{clock.speed:g})   status: {alert_status}"
    ), alert_status


async def _check(
    engine: AssembledEngine, alert_id: int, sim: AnswerSimulator, silent_sirens: frozenset[str]
) -> list[str]:
    """Compare every target's outcome with what the simulation's seeded plan says must happen."""
    async with engine.db.session() as s:
        targets = list((await s.execute(select(Target).where(col(Target.alert_id) == alert_id))).scalars())
    problems: list[str] = []
    for t in targets:
        if t.kind == TargetKind.PERSON.value:
            assert t.person_id is not None
            own = sim.behaviour(t.person_id).answers_at_step is not None
            expected = TargetState.ANSWERED if own else TargetState.ANSWERED_FOR
        else:
            expected = TargetState.ANSWERED_FOR if t.device_id in silent_sirens else TargetState.ANSWERED
        if t.state != expected.value:
            problems.append(f"{t.kind} {t.person_id or t.device_id}: expected {expected.value}, got {t.state}")
    return problems


def _summary(
    console: Console,
    engine: AssembledEngine,
    alert_id: int,
    report: Path,
    mismatches: list[str],
    rows: int,
    chain_ok: bool,
) -> None:
    sandboxed = ", ".join(k.value for k, c in engine.channels.items() if c.sandbox)
    console.print()
    lines = [
        f"Loop closed as predicted: {'[green]yes[/]' if not mismatches else '[red]NO[/]'}",
        f"Audit chain: {'[green]verified[/]' if chain_ok else '[red]BROKEN[/]'} ({rows} events)",
        f"Sandbox channels (nobody reached): {sandboxed}",
        f"HTML audit report: [bold]{report.resolve()}[/]",
        f"Engine log: {report.parent.resolve() / 'demo.log'}",
    ]
    lines += [f"[red]{m}[/]" for m in mismatches[:20]]
    console.print(Panel("\n".join(lines), title=f"预警 {alert_id} 总结 summary"))
