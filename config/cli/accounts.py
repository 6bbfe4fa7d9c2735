"""`jiaoying account`: the console's sign-in accounts. The main app adds it as `account`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole
from alerting.model.actor import Actor
from config.cli.common import console, run, with_engine
from config.wiring import AssembledEngine

account_app = typer.Typer(help="Console accounts: add them, list them, set passwords.", no_args_is_help=True)

ACTOR = Actor.command_line("account").text


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    entered: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return entered


@account_app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="the sign-in name, e.g. zhang.wei")],
    role: Annotated[AccountRole, typer.Option(help="duty, township, auditor or admin")],
    unit: Annotated[str | None, typer.Option(help="a township officer's unit code, e.g. 500238101")] = None,
    name: Annotated[str, typer.Option(help="the name pages show, e.g. 张伟")] = "",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Add an account. The password is asked for twice (or read from stdin) and stored as an argon2 hash.

    Example: [bold]jiaoying account add li.na --role township --unit 500238101 --name 李娜[/]
    """

    password = _password(password_stdin)

    async def job(engine: AssembledEngine) -> None:
        await engine.core.accounts.create(username, password, role=role, display_name=name, unit_code=unit, actor=ACTOR)

    run(lambda: with_engine(job))
    console.print(f"added [bold]{username}[/] ({ACCOUNT_ROLE_LABEL[role]}{f', {unit}' if unit else ''})")


@account_app.command("list")
def list_accounts() -> None:
    """Every account, its role and whether it can sign in."""

    async def job(engine: AssembledEngine) -> None:
        table = Table("username", "name", "role", "unit", "active")
        for a in await engine.core.accounts.list():
            table.add_row(a.username, a.display_name, a.role, a.unit_code or "", "yes" if a.active else "no")
        console.print(table)

    run(lambda: with_engine(job))


@account_app.command("password")
def set_password(
    username: Annotated[str, typer.Argument(help="the account")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Set a new password; the account's open sessions end."""

    password = _password(password_stdin)

    async def job(engine: AssembledEngine) -> None:
        await engine.core.accounts.set_password(username, password, actor=ACTOR)

    run(lambda: with_engine(job))
    console.print(f"password set for [bold]{username}[/]; its sessions were ended")


@account_app.command("disable")
def disable(username: Annotated[str, typer.Argument(help="the account")]) -> None:
    """Stop an account from signing in; its open sessions end at once."""

    async def job(engine: AssembledEngine) -> None:
        await engine.core.accounts.set_active(username, False, actor=ACTOR)

    run(lambda: with_engine(job))
    console.print(f"[bold]{username}[/] can no longer sign in")
