"""`jiaoying roster`: import duty rosters (值班表) and check that every township and the county has someone on duty.

The main app adds it with `app.add_typer(roster_app, name="roster")`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from alerting.model.actor import Actor
from alerting.model.clock import SystemClock, local_text
from config.cli.common import console, refuse_import, run, with_engine
from config.wiring import AssembledEngine
from escalation.rosters import Gap

roster_app = typer.Typer(
    help="Duty rosters (值班表): import them, find hours with nobody on duty.", no_args_is_help=True
)


@roster_app.command("import")
def import_files(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="CSV or XLSX roster files")],
) -> None:
    """Import shifts. Every bad row is listed; nothing is written unless all are good.

    Columns: 单位代码, 值班人员 (person id or phone), 顺位 (值班/备班 or 0/1), 开始, 结束 (Asia/Shanghai).
    The shifts stored for a unit within the span the files give it are replaced.

    Example: [bold]jiaoying roster import 凤凰镇7月值班表.xlsx[/]
    """
    # config.cli adds this app, so it can only be imported once a command runs
    from config.directory.rosters import RosterError, import_roster, load_roster

    async def job(engine: AssembledEngine) -> None:
        try:
            roster = await load_roster(files)
            result = await import_roster(
                engine.db, roster, actor=Actor.command_line("roster").text, at=SystemClock().now()
            )
        except RosterError as exc:
            refuse_import(exc.errors)
        console.print(f"Imported: {result}")
        for shift in result.removed:  # a roster replaces its span: say whose shifts went
            console.print(f"  [yellow]stored shift:[/] {escape(shift)}")
        for w in result.warnings:
            console.print(f"  [yellow]check:[/] {w}")

    run(lambda: with_engine(job))


def _parse_from(text: str | None) -> datetime:
    if text is None:
        return SystemClock().now()
    from config.directory.rosters import parse_local_time

    try:
        return parse_local_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--from") from None


def _minutes(dt: datetime) -> str:
    return local_text(dt)[:16]


def gap_table(gaps: list[Gap]) -> Table:
    table = Table(title="值班空档 duty gaps (Asia/Shanghai)")
    table.add_column("unit 单位")
    table.add_column("from 从", no_wrap=True)
    table.add_column("to 到", no_wrap=True)
    table.add_column("h", justify="right")
    table.add_column("status 情况")
    table.add_column("meanwhile 期间由")
    for g in gaps:
        if g.covered_by_fallback:
            status = "[yellow]no roster 无值班表[/]"
        elif g.no_roster:
            status = "[bold red]no roster 无值班表[/]"
        else:
            status = "[bold red]nobody on duty 无人值班[/]"
        meanwhile = f"{g.fallback_name} {g.fallback_id}" if g.fallback_id else "[bold red]nobody 无人[/]"
        table.add_row(
            f"{g.unit_name} {g.unit_code}",
            _minutes(g.starts_at),
            _minutes(g.ends_at),
            f"{g.hours:g}",
            status,
            meanwhile,
        )
    return table


@roster_app.command("check")
def check(
    hours: Annotated[float, typer.Option(min=0.25, help="how far ahead to look")] = 24,
    start: Annotated[
        str | None, typer.Option("--from", help='start looking at this Asia/Shanghai time, e.g. "2026-07-06 08:00"')
    ] = None,
) -> None:
    """List the hours in which a township or the county has no primary on duty; exit 1 if there are any.

    A unit that never had a roster is listed as falling back to its duty responsible person; that alone
    does not fail the check.

    Example: [bold]jiaoying roster check --hours 72[/]
    """
    from escalation.rosters import coverage_gaps

    now = _parse_from(start)

    async def job(engine: AssembledEngine) -> list[Gap]:
        return await coverage_gaps(engine.db, now=now, hours=hours)

    gaps = run(lambda: with_engine(job))
    window = f"{_minutes(now)} – {_minutes(now + timedelta(hours=hours))} (Asia/Shanghai)"
    failing = [g for g in gaps if not g.covered_by_fallback]
    if gaps:
        console.print(gap_table(gaps))
    if failing:
        units = len({g.unit_code for g in failing})
        console.print(f"[bold red]{len(failing)} gap(s) in {units} unit(s)[/] {window}")
        raise typer.Exit(1)
    console.print(f"[green]Every township and the county has someone on duty[/] {window}")
