"""`jiaoying cap`: take a CAP 1.2 (or 1.1) message from a file: check it and show what it would issue, or issue it.

The main app adds it with `app.add_typer(cap_app, name="cap")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from alerting.cap.importer import CapImporter, Preview
from alerting.model.access import AccountRole, Principal
from alerting.model.actor import Actor
from config.cli.common import console, run, with_engine
from config.wiring import AssembledEngine

cap_app = typer.Typer(help="CAP 1.2 messages (GB/T 35965.1): check and issue them.", no_args_is_help=True)

CLI = Principal(AccountRole.DUTY, Actor.command_line("cap").text, "命令行")
ACTION_LABEL = {"issue": "发布预警", "update": "更新预警", "cancel": "解除预警", "none": "不做任何改动"}


def _show(p: Preview) -> None:
    m = p.message
    table = Table(show_header=False, box=None)
    table.add_row("message", f"{m.msg_type} {m.status} from {m.sender}, {m.identifier} (CAP {m.version})")
    table.add_row("would", ACTION_LABEL[p.action] + (f" (alert {p.alert_id})" if p.alert_id else ""))
    if p.already is not None:
        table.add_row("already", f"taken at {p.already.received_at:%Y-%m-%d %H:%M} UTC: {p.already.outcome}")
    if p.mapped.exercise:
        table.add_row("exercise", "[bold]演练[/]: a drill, never a real warning")
    if p.mapped.level is not None:
        how = "the level parameter" if p.mapped.level_from == "parameter" else "its severity"
        table.add_row("level", f"{p.mapped.level.label} ({p.mapped.level.value}, from {how})")
    for name, value in (("hazard", p.mapped.hazard), ("title", p.mapped.title), ("text", p.mapped.text)):
        if value:
            table.add_row(name, value)
    if p.mapped.instructions:
        table.add_row("instructions", p.mapped.instructions)
    if p.resolved is not None:
        units = "、".join(f"{n} ({c})" for c, n in zip(p.resolved.units, p.resolved.names, strict=True))
        table.add_row("units", units)
    for aside in p.mapped.ignored + (p.resolved.elsewhere if p.resolved else []) + p.unknown_references:
        table.add_row("left aside", aside)
    if p.note:
        table.add_row("note", p.note)
    console.print(table)


@cap_app.command("import")
def import_message(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a CAP 1.2 or 1.1 XML file")],
    issue: Annotated[bool, typer.Option("--issue", help="issue it (without: only check and show)")] = False,
) -> None:
    """Check a CAP message and show what it would issue; with --issue, issue (update, lift) it.

    The same message (sender and identifier) is taken once. A refusal names the element, e.g.
    info[0]/area[1]/polygon[0].

    Example: [bold]jiaoying cap import 暴雨红色预警.xml[/], then [bold]jiaoying cap import 暴雨红色预警.xml --issue[/]
    """
    data = file.read_bytes()

    async def job(engine: AssembledEngine) -> None:
        core = engine.core
        importer = CapImporter(core.db, core.clock, core.alerts, core.cap_mapping)
        if not issue:
            _show(await importer.check(data, CLI))
            console.print("Nothing was issued; run again with [bold]--issue[/] to issue it.")
            return
        taken = await importer.take(data, CLI)
        _show(taken.preview)
        if taken.duplicate:
            console.print(f"Already taken before ({taken.outcome}, alert {taken.alert_id}); nothing was done now.")
        else:
            console.print(f"[bold]{taken.outcome}[/]: alert {taken.alert_id}")

    run(lambda: with_engine(job))
