"""What every `jiaoying` command shares: the terminal, settings read once, the engine's services, and one way
of turning a user's mistake into a clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import cache
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from alerting.answer.outcomes import AnswerRejected
from alerting.issue.alerts import AlertNotActive, AlertNotFound
from alerting.issue.planning import UnknownUnits
from config.logging import configure_logging
from config.settings import Settings
from config.startup import refuse_bad_settings, warn_unknown_variables
from config.wiring import AssembledEngine, build_engine

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

USER_ERRORS: tuple[type[Exception], ...] = (
    UnknownUnits,
    AlertNotFound,
    AlertNotActive,
    AnswerRejected,
    LookupError,
    ValueError,
    ValidationError,
    FileNotFoundError,
    PermissionError,
)


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one command's coroutine; a user's mistake is one clear line and a non-zero exit, never a traceback."""
    try:
        return asyncio.run(make())
    except USER_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # a path stays one piece
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def refuse_import(errors: Sequence[object]) -> NoReturn:
    """An import with bad rows: every problem listed, nothing written, exit 2."""
    err.print(f"[bold red]nothing was imported:[/] {len(errors)} problem(s)")
    for e in errors:
        err.print(f"  {e}")
    raise typer.Exit(2)


def settings(*, quiet: bool = True) -> Settings:
    """The settings, read now; a bad one is a clear line per setting and exit 2, a mistyped name a warning.

    `quiet`: a one-off command a person reads logs only warnings and errors beside its own output, unless
    JIAOYING_LOG_LEVEL asks for more; the long-running processes (serve, engine run) log at the level set."""
    try:
        s = Settings()
    except (ValidationError, SettingsError) as exc:
        refuse_bad_settings(exc, err)
    configure_logging("warning" if quiet and "log_level" not in s.model_fields_set else s.log_level)
    _warn_unknown_variables_once()
    return s


@cache
def _warn_unknown_variables_once() -> None:
    # a command may read the settings more than once; the variables it was started with do not change
    warn_unknown_variables(os.environ, err)


async def with_engine(job: Callable[[AssembledEngine], Awaitable[T]]) -> T:
    """The engine's services on an up-to-date database, without starting channels or loops."""
    engine = build_engine(settings())
    try:
        await engine.db.upgrade()
        return await job(engine)
    finally:
        await engine.stop()
