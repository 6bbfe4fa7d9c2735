"""`jiaoying backup` and `jiaoying restore`: a copy of the SQLite store taken while the engine runs, put back later."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from alerting.store.backup import BackupError, Contents, backup, restore, sqlite_file
from config.cli.common import console, err, settings


def _said(what: str, c: Contents) -> None:
    last = f", the last at {c.last_audit_at} UTC" if c.last_audit_at else ""
    console.print(f"{what} {escape(str(c.path))}: {c.alerts:,} alerts, {c.audit_events:,} audit events{last}.")


def backup_command(
    path: Annotated[Path, typer.Argument(help="the new backup file (never overwritten)")],
) -> None:
    """Copy the database to PATH while the engine keeps running: one consistent snapshot, checked before it gets
    its name. PostgreSQL is backed up with pg_dump instead (the command says how).

    Example: [bold]jiaoying backup /var/backups/jiaoying/$(date +%F-%H%M).db[/]
    """
    try:
        _said("Backed up to", backup(sqlite_file(settings().database_url), path))
    except BackupError as exc:
        err.print(f"[bold red]no backup:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print("Keep it with the audit checkpoint file (JIAOYING_AUDIT_CHECKPOINTS) and the keys, apart from both.")


def restore_command(
    path: Annotated[Path, typer.Argument(help="a backup file made by jiaoying backup")],
    replace: Annotated[
        bool, typer.Option("--replace", help="put it in place of the existing database (every process stopped)")
    ] = False,
) -> None:
    """Put a backup in place as the configured database. An existing database is replaced only with --replace,
    and never while serve or an engine process is running on it. Then check it: [bold]jiaoying audit verify[/].

    Example: [bold]jiaoying restore --replace /var/backups/jiaoying/2026-07-06-0300.db[/]
    """
    try:
        restored = restore(path, sqlite_file(settings().database_url), replace=replace)
    except BackupError as exc:
        err.print(f"[bold red]nothing restored:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    _said("Restored", restored)
    console.print(
        "What was written after the backup is gone; [bold]jiaoying audit verify[/] says so against the checkpoints "
        "written since (a rolled-back tail), which is the record that this restore happened."
    )
