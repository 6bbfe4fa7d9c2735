"""The `jiaoying` command. Each command reads settings once, does one job, and says plainly what happened."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.markup import escape
from rich.table import Table

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.actor import Actor
from alerting.model.clock import SystemClock, local_text
from alerting.model.domain import ChannelKind, DeliveryState, Level, TargetState
from alerting.web.api.queries import recipients_page
from config.cli.accounts import account_app
from config.cli.backup import backup_command, restore_command
from config.cli.cap import cap_app
from config.cli.common import console, err, refuse_import, run, settings, with_engine
from config.cli.policy import policy_app
from config.cli.roster import roster_app
from config.engine_process import engine_app
from config.logging import configure_logging
from config.wiring import AssembledEngine, build_engine

app = typer.Typer(
    help="叫应 jiaoying: push a warning down the grid hierarchy and keep calling until everyone answered.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
alert_app = typer.Typer(help="Issue, watch and lift alerts.", no_args_is_help=True)
audit_app = typer.Typer(help="Check and export the audit trail.", no_args_is_help=True)
app.add_typer(alert_app, name="alert")
app.add_typer(audit_app, name="audit")
app.add_typer(roster_app, name="roster")
app.add_typer(policy_app, name="policy")
app.add_typer(engine_app, name="engine")
app.command("backup")(backup_command)
app.command("restore")(restore_command)
app.add_typer(account_app, name="account")
app.add_typer(cap_app, name="cap")


@app.command()
def init() -> None:
    """Create or upgrade the database schema.

    Example: [bold]JIAOYING_DATABASE_URL=sqlite+aiosqlite:///./jiaoying.db jiaoying init[/]
    """
    url = settings().database_url

    async def job(_: AssembledEngine) -> None:
        console.print(f"Database ready: {url}")

    run(lambda: with_engine(job))


@app.command("sample-data")
def sample_data(
    seed: Annotated[int, typer.Option(help="same seed, same county")] = 2024,
    villages: Annotated[int, typer.Option(min=32, help="villages across the 32 townships")] = 300,
    grids: Annotated[int, typer.Option(min=32, help="grids across all villages")] = 1000,
) -> None:
    """Load the synthetic 巫溪县 sample: real townships, generated villages, grids, people and devices.

    Example: [bold]jiaoying sample-data --seed 7 --villages 300 --grids 1000[/]
    """
    from config.demo.sample import generate_sample
    from config.directory import import_directory

    async def job(engine: AssembledEngine) -> None:
        directory = generate_sample(seed=seed, villages=villages, grids=grids)
        result = await import_directory(
            engine.db, directory, actor=Actor.command_line("sample-data").text, at=SystemClock().now()
        )
        console.print(f"Loaded the 巫溪 sample (seed {seed}): {result}")

    run(lambda: with_engine(job))


@app.command("import")
def import_files(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="CSV, XLSX or YAML files")],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="each unit the people rows name gets exactly the files' list of responsible people; whoever "
            "else answered for it is removed, and named. Without it, rows are added and updated only",
        ),
    ] = False,
    check_only: Annotated[
        bool,
        typer.Option("--check", help="say what would change (with --replace: who would be removed); write nothing"),
    ] = False,
) -> None:
    """Import units, people and devices. Every bad row is listed; nothing is written unless all are good.

    People rows add someone to the list of who answers for a unit, or update their role and rank; nobody is
    taken off a list unless --replace says so.

    Example: [bold]jiaoying import units.csv people.csv[/]  or  [bold]jiaoying import --replace --check 凤凰镇.csv[/]
    """
    from config.directory import DirectoryError, check_import, import_directory, load_directory

    async def job(engine: AssembledEngine) -> None:
        try:
            directory = await load_directory(files)
            if check_only:
                result = await check_import(engine.db, directory, replace=replace)
            else:
                result = await import_directory(
                    engine.db,
                    directory,
                    actor=Actor.command_line("import").text,
                    at=SystemClock().now(),
                    replace=replace,
                )
        except DirectoryError as exc:
            refuse_import(exc.errors)
        console.print(f"{'Would import (nothing written)' if check_only else 'Imported'}: {escape(str(result))}")
        for removal in result.removed:
            console.print(f"  [yellow]{'would remove' if check_only else 'removed'}:[/] {escape(str(removal))}")

    run(lambda: with_engine(job))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Run the engine and the HTTP API (answer pages, webhooks, /docs) until stopped.

    Example: [bold]JIAOYING_PUBLIC_URL=https://jy.example.gov.cn jiaoying serve --host 0.0.0.0[/]
    """
    from config.server import serve as serve_forever
    from config.startup import refuse_weak_secret

    s = settings(quiet=False)
    refuse_weak_secret(s, err)
    run(lambda: serve_forever(s, host, port))


@alert_app.command("send")
def alert_send(
    level: Annotated[Level, typer.Option(help="red | orange | yellow | blue")],
    hazard: Annotated[str, typer.Option(help="暴雨, 山洪, 地质灾害, 高温, 森林火险 …")],
    title: Annotated[str, typer.Option(help="one line")],
    text: Annotated[str, typer.Option(help="the warning")],
    unit: Annotated[list[str], typer.Option(help="unit code; repeat for several")],
    instructions: Annotated[str, typer.Option(help="what to do")] = "",
    exercise: Annotated[bool, typer.Option("--exercise", help="a drill (演练): every message says so")] = False,
    send_now: Annotated[
        bool, typer.Option("--send-now", help="send the first wave from this process instead of leaving it to serve")
    ] = False,
) -> None:
    """Issue an alert. It is written durably first; `jiaoying serve` sends and escalates it.

    Example: [bold]jiaoying alert send --level red --hazard 暴雨 --title 凤凰镇暴雨红色预警
    --text "预计未来3小时降雨超过100毫米" --unit 500238101[/]
    """
    if send_now:  # this process then signs the answer links itself, as serve would
        from config.startup import refuse_weak_secret

        refuse_weak_secret(settings(), err)

    async def job() -> None:
        engine = build_engine(settings())
        try:
            await engine.db.upgrade()
            req = AlertRequest(
                level=level,
                hazard=hazard,
                title=title,
                text=text,
                instructions=instructions,
                units=unit,
                exercise=exercise,
            )
            issued = await engine.alerts.trigger(req, actor=Actor.command_line("duty").text)
            console.print(
                f"Alert [bold]{issued.alert_id}[/] issued: {issued.targets} recipients, "
                f"{issued.deliveries} deliveries {issued.by_channel}"
            )
            if issued.unreachable:
                console.print(
                    f"[yellow]{issued.unreachable} recipient(s) have no channel in the first wave; "
                    "escalation goes to their backups[/]"
                )
            if send_now:
                await engine.start(loops=False)
                sent = await engine.dispatcher.drain()
                console.print(f"First wave sent from this process: {sent} deliveries handled.")
            else:
                console.print("Queued. The running engine ([bold]jiaoying serve[/]) sends it and escalates.")
        finally:
            await engine.stop()

    run(job)


@alert_app.command("status")
def alert_status(alert_id: Annotated[int, typer.Argument(help="alert id")]) -> None:
    """Progress of one alert: who answered, who is silent, what went out over which channel.

    Example: [bold]jiaoying alert status 12[/]
    """

    async def job(engine: AssembledEngine) -> None:
        p = await engine.alerts.progress(alert_id)
        a = p.alert
        console.print(
            f"[bold]Alert {a.id}[/] {Level(a.level).label}{a.hazard} — {a.title}"
            f"{' [magenta]演练[/]' if a.exercise else ''}  status [bold]{a.status}[/]"
        )
        console.print(f"Issued {local_text(a.created_at)} 北京时间 by {a.created_by}; targets {a.target_units}")
        console.print(f"Answered {p.closed}/{p.total}, silent {p.silent}, escalated {p.escalated}")
        table = Table("channel", *[s.value for s in DeliveryState])
        for ch in ChannelKind:
            counts = [p.deliveries.get((ch.value, s.value), 0) for s in DeliveryState]
            if any(counts):
                table.add_row(
                    ch.value + (" [yellow](sandbox)[/]" if ch.value in p.sandbox_channels else ""), *map(str, counts)
                )
        console.print(table)
        if p.silent:
            silent, total = await recipients_page(engine.db, alert_id, limit=30, offset=0, state=TargetState.OPEN)
            table = Table(
                "silent 未应答", "role", "unit", "phone", "escalation step", title="the loop is still open for"
            )
            for r in silent:
                table.add_row(r.name, r.role_label, f"{r.unit_name} {r.unit_code}", r.phone or "", str(r.step))
            console.print(table)
            if total > len(silent):
                console.print(f"… and {total - len(silent)} more (GET /api/v1/alerts/{alert_id}/recipients?state=open)")

    run(lambda: with_engine(job))


@alert_app.command("list")
def alert_list(active: Annotated[bool, typer.Option("--active", help="only active alerts")] = False) -> None:
    """The most recent alerts.

    Example: [bold]jiaoying alert list --active[/]
    """

    async def job(engine: AssembledEngine) -> None:
        alerts = await engine.alerts.list(active_only=active)
        table = Table("id", "issued (北京时间)", "level", "hazard", "title", "status", "drill")
        for a in alerts:
            table.add_row(
                str(a.id),
                local_text(a.created_at),
                Level(a.level).label,
                a.hazard,
                a.title,
                a.status,
                "演练" if a.exercise else "",
            )
        console.print(table)

    run(lambda: with_engine(job))


@app.command()
def queue() -> None:
    """The send queue per channel: due now (and how long the oldest has waited), waiting to retry, claimed by
    a dispatcher, and at the provider right now. First waves and calls for help go out ahead of escalations,
    which go out ahead of lift notices, across all alerts.

    Example: [bold]jiaoying queue[/]
    """
    from alerting.views.labels import channel_label
    from alerting.views.queue import queue_lines

    async def job(engine: AssembledEngine) -> None:
        lines = await queue_lines(engine.db, SystemClock().now())
        if not lines:
            console.print("Nothing is queued.")
            return
        table = Table("channel", "band", "due", "oldest due", "retry later", "claimed", "at provider")
        for line in lines:
            oldest = "" if line.oldest_due_s is None else f"{line.oldest_due_s:.0f} s"
            table.add_row(
                channel_label(line.channel),
                line.band,
                str(line.due),
                oldest,
                str(line.later),
                str(line.claimed),
                str(line.at_provider),
            )
        console.print(table)

    run(lambda: with_engine(job))


@alert_app.command("update")
def alert_update(
    alert_id: Annotated[int, typer.Argument(help="alert id")],
    level: Annotated[Level | None, typer.Option(help="new level: red | orange | yellow | blue")] = None,
    title: Annotated[str | None, typer.Option(help="new title")] = None,
    text: Annotated[str | None, typer.Option(help="new text")] = None,
    instructions: Annotated[str | None, typer.Option(help="new instructions")] = None,
) -> None:
    """Update an alert (e.g. raise orange to red). A raised level reaches everyone again; otherwise those who
    answered keep their answer and only the silent are called.

    Example: [bold]jiaoying alert update 12 --level red --text "降雨加强，河水超警戒"[/]
    """
    from alerting.issue.alerts import AlertChange

    async def job(engine: AssembledEngine) -> None:
        change = AlertChange(level=level, title=title, text=text, instructions=instructions)
        issued = await engine.alerts.update(alert_id, change, actor=Actor.command_line("duty").text)
        console.print(
            f"Alert {alert_id} superseded by alert [bold]{issued.alert_id}[/]: {issued.targets} recipients, "
            f"{issued.deliveries} deliveries {issued.by_channel}. The running engine sends them."
        )

    run(lambda: with_engine(job))


@alert_app.command("cancel")
def alert_cancel(
    alert_id: Annotated[int, typer.Argument(help="alert id")],
    reason: Annotated[str, typer.Option(help="why it is lifted (解除)")],
) -> None:
    """Lift (解除) an alert: nothing more goes out, and everyone already reached is told.

    Example: [bold]jiaoying alert cancel 12 --reason "降雨减弱，风险解除"[/]
    """

    async def job(engine: AssembledEngine) -> None:
        lifted = await engine.alerts.cancel(alert_id, actor=Actor.command_line("duty").text, reason=reason)
        console.print(
            f"Alert {alert_id} lifted: {lifted.cancelled_deliveries} unsent deliveries stopped, "
            f"{lifted.lift_notices} lift notices queued."
        )

    run(lambda: with_engine(job))


@app.command()
def ack(
    alert_id: Annotated[int, typer.Argument(help="alert id")],
    person: Annotated[str, typer.Option(help="person id of the recipient answered for")],
    reason: Annotated[str, typer.Option(help="why you answer on their behalf (required)")],
    by: Annotated[str, typer.Option(help="your name, recorded in the audit")],
) -> None:
    """Answer on someone's behalf as the duty officer (they phoned in, or were reached in person).

    Example: [bold]jiaoying ack 12 --person p-3f2a --by 张值班 --reason "电话确认已收到"[/]
    """
    from sqlalchemy import select
    from sqlmodel import col

    from alerting.store.tables import Target

    async def job(engine: AssembledEngine) -> None:
        async with engine.db.session() as s:
            target_id = await s.scalar(
                select(col(Target.id)).where(col(Target.alert_id) == alert_id, col(Target.person_id) == person)
            )
        if target_id is None:
            raise LookupError(f"alert {alert_id} has no recipient with person id {person}")
        result = await engine.acks.answer_on_behalf(
            alert_id, target_id, by=Actor.command_line(f"duty:{by}"), reason=reason, at=SystemClock().now()
        )
        word = "recorded" if result.counted else f"not counted: already {result.state.value}"
        console.print(f"Answer on behalf of {person} {word}.")

    run(lambda: with_engine(job))


@app.command()
def drills(
    year: Annotated[int, typer.Option(help="calendar year, Asia/Shanghai")],
    csv: Annotated[Path | None, typer.Option(help="also write the record as CSV (UTF-8 with BOM for Excel)")] = None,
) -> None:
    """The yearly drill record (演练记录): every exercise alert of the year and how its loop closed.

    Example: [bold]jiaoying drills --year 2026 --csv 2026-演练记录.csv[/]
    """
    from alerting.views.review.drills import drill_record

    record = run(lambda: with_engine(lambda engine: drill_record(engine.db, year)))
    table = Table(
        "alert",
        "issued (北京时间)",
        "level",
        "hazard",
        "title",
        "reached",
        "answered",
        "for them",
        "silent",
        "escalated",
        "median answer",
        title=f"{year} 演练记录 drill record",
    )
    for d in record.drills:
        median = f"{d.median_answer_s / 60:.1f} min" if d.median_answer_s is not None else ""
        table.add_row(
            str(d.alert_id),
            local_text(d.issued_at),
            Level(d.level).label,
            d.hazard,
            d.title,
            str(d.targets),
            str(d.answered),
            str(d.answered_for),
            str(d.silent),
            str(d.escalated),
            median,
        )
    console.print(table)
    console.print(f"{record.held} drill(s), {record.reached} recipients reached, answer rate {record.answer_rate:.1%}")
    if csv is not None:
        import csv as csv_module
        import io

        buffer = io.StringIO()
        writer = csv_module.writer(buffer)
        writer.writerow(
            [
                "预警编号",
                "发布时间（北京时间）",
                "级别",
                "灾种",
                "标题",
                "叫应对象",
                "本人应答",
                "代应答",
                "未应答",
                "升级",
                "应答用时中位数（秒）",
            ]
        )
        for d in record.drills:
            writer.writerow(
                [
                    d.alert_id,
                    local_text(d.issued_at),
                    Level(d.level).label,
                    d.hazard,
                    d.title,
                    d.targets,
                    d.answered,
                    d.answered_for,
                    d.silent,
                    d.escalated,
                    "" if d.median_answer_s is None else round(d.median_answer_s),
                ]
            )
        csv.write_text("\ufeff" + buffer.getvalue(), encoding="utf-8")
        console.print(f"Drill record written: {csv.resolve()}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the keyed chain of the audit log, held to the latest checkpoint outside the database, and name the
    first row that was changed or removed. It needs the keys and the checkpoint file the engine has
    (JIAOYING_AUDIT_KEY, JIAOYING_AUDIT_KEYS after a rotation, JIAOYING_AUDIT_CHECKPOINTS).

    Example: [bold]jiaoying audit verify[/]
    """

    async def job(engine: AssembledEngine) -> audit.Verification:
        return await audit.verify(engine.db)

    v = run(lambda: with_engine(job))
    if v.ok:
        console.print(f"[green]Audit chain verified:[/] {v.rows} events, unbroken.")
    elif v.first_bad_seq is None:
        err.print(f"[bold red]Audit chain NOT VERIFIED:[/] {escape(v.reason)}", soft_wrap=True)
    else:
        err.print(f"[bold red]Audit chain BROKEN at row {v.first_bad_seq}:[/] {escape(v.reason)}", soft_wrap=True)
    # which rows are keyed, and the checkpoint outside the database the chain was held to (or why there is none)
    for note in v.notes:
        (console if v.ok else err).print(f"  {escape(note)}", soft_wrap=True)
    if not v.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    alert_id: Annotated[int, typer.Argument(help="alert id")],
    fmt: Annotated[str, typer.Option("--format", help="csv | json | html")] = "html",
    out: Annotated[Path | None, typer.Option(help="file to write; default alert-ID-report.FORMAT")] = None,
) -> None:
    """Write the per-recipient report of an alert: who, which channels, delivered, answered, escalated, silent.

    Example: [bold]jiaoying audit export 12 --format html --out report.html[/]
    """
    from alerting.views.report.export import Format, export

    if fmt not in ("csv", "json", "html"):
        err.print(f"[bold red]error:[/] --format must be csv, json or html, not {fmt!r}")
        raise typer.Exit(2)
    path = out or Path(f"alert-{alert_id}-report.{fmt}")

    async def job(engine: AssembledEngine) -> Path:
        return await export(engine.db, alert_id, cast(Format, fmt), path, now=SystemClock().now())

    written = run(lambda: with_engine(job))
    console.print(f"Report written: {written.resolve()}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="same seed, same drill")] = 2024,
    speed: Annotated[
        float | None,
        typer.Option(help="how much faster than real time the drill clock runs (default 40, 10 with --real-local)"),
    ] = None,
    real_local: Annotated[
        bool,
        typer.Option("--real-local", help="real adapters against local fake providers (needs a source checkout)"),
    ] = False,
    workdir: Annotated[Path, typer.Option(help="where the demo database and report go")] = Path("jiaoying-demo"),
) -> None:
    """A complete red 山洪 drill for three 巫溪 townships on a fast clock: no setup, no network.

    Example: [bold]jiaoying demo[/]  or, to see the real wire traffic, [bold]jiaoying demo --real-local[/]
    """
    from config.demo.drill import run_demo

    # the live table owns the terminal; the engine's JSON log goes beside the report
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "demo.log").open("w", encoding="utf-8") as log_file:
        configure_logging("info", log_file)
        # every message of --real-local crosses HTTP twice in this one process: at 40x its sends fall behind the
        # drill's answer windows and the people it plays answer after their backups
        pace = speed if speed is not None else (10.0 if real_local else 40.0)
        result = run(lambda: run_demo(workdir, seed=seed, speed=pace, console=console, real_local=real_local))
    sys.exit(0 if result.ok else 1)
