"""What is checked in the settings before anything runs: a secret of our own, and variables that mean something.

A `serve` on the placeholder secret would sign answer links anyone can forge (the placeholder is in this public
source), so it is refused, not warned about. A mistyped variable (JIAOYING_TWILIO_SMS_PER_SEC for
JIAOYING_TWILIO_SMS_PER_SECOND) is otherwise read by nobody and its default runs without a word, so each one is
named at start-up with the setting it most likely meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import structlog
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from config.settings import PLACEHOLDER_SECRET, Settings

log = structlog.get_logger()

PREFIX = "JIAOYING_"
# shorter than this is guessable offline from one answer link; token_urlsafe(32) gives 43 characters
SECRET_MIN_LENGTH = 32
HOW_TO_SET = (
    "Set JIAOYING_SECRET_KEY to a long random secret kept outside the source, the same for every process of this "
    "county, e.g. export JIAOYING_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
)
# read by name elsewhere, not settings fields: which TOML file to read, and the test suite's own switches
NOT_FIELDS = frozenset(
    {
        "JIAOYING_CONFIG",
        "JIAOYING_TEST_POSTGRES",
        "JIAOYING_PG_BIN",
        "JIAOYING_CHROMIUM",
        "JIAOYING_ARTIFACTS",
    }
)


class SecretRefused(ValueError):
    """The secret key would let anyone sign answer links: nothing that signs them may start."""


def check_secret(settings: Settings) -> str | None:
    """Raises SecretRefused for the placeholder or an empty secret; says what is weak about a short one."""
    secret = settings.secret_key.get_secret_value()
    if not secret.strip():
        raise SecretRefused(f"JIAOYING_SECRET_KEY is empty: answer links cannot be signed safely. {HOW_TO_SET}")
    if secret == PLACEHOLDER_SECRET:
        raise SecretRefused(
            f"JIAOYING_SECRET_KEY is still the placeholder {PLACEHOLDER_SECRET!r}, printed in the public source: "
            f"anyone could sign working answer links with it. {HOW_TO_SET}"
        )
    if len(secret) < SECRET_MIN_LENGTH:
        return (
            f"JIAOYING_SECRET_KEY is only {len(secret)} characters; a secret shorter than {SECRET_MIN_LENGTH} "
            f"can be guessed from one answer link. {HOW_TO_SET}"
        )
    return None


@dataclass(frozen=True)
class UnknownVariable:
    name: str
    closest: str | None

    def __str__(self) -> str:
        hint = f"did you mean {self.closest}?" if self.closest else "no setting has a similar name"
        return f"{self.name} is not a jiaoying setting and is ignored; {hint}"


def known_variables() -> frozenset[str]:
    return frozenset(PREFIX + name.upper() for name in Settings.model_fields) | NOT_FIELDS


def unknown_variables(environ: Mapping[str, str], known: Iterable[str] | None = None) -> list[UnknownVariable]:
    """Every JIAOYING_* variable no setting reads, with the known name it is closest to (if any is close)."""
    names = sorted(known if known is not None else known_variables())
    out: list[UnknownVariable] = []
    for variable in sorted(environ):
        name = variable.upper()  # settings are read case-insensitively, as pydantic-settings does
        if not name.startswith(PREFIX) or name in names:
            continue
        # compared without the prefix every name shares, which would make any two look alike
        closest = difflib.get_close_matches(name.removeprefix(PREFIX), [n.removeprefix(PREFIX) for n in names], n=1)
        out.append(UnknownVariable(variable, PREFIX + closest[0] if closest else None))
    return out


def describe(exc: ValidationError) -> list[str]:
    """One line per bad setting, named as it is set: JIAOYING_API_KEYS: ...; values stay out (they may be secrets)."""
    lines: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        name = PREFIX + where.upper() if where else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return lines


def refuse_weak_secret(settings: Settings, terminal: Console) -> None:
    """For the commands that sign answer links (serve, engine run): exit 2 on a refused secret, warn on a short one."""
    try:
        weak = check_secret(settings)
    except SecretRefused as exc:
        log.error("settings.secret_refused", reason=str(exc))
        terminal.print(f"[bold red]refusing to start:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if weak is not None:
        log.warning("settings.secret_short", reason=weak, min_length=SECRET_MIN_LENGTH)
        terminal.print(f"[yellow]warning:[/] {escape(weak)}", soft_wrap=True)


def warn_unknown_variables(environ: Mapping[str, str], terminal: Console) -> list[UnknownVariable]:
    """Each JIAOYING_* variable no setting reads, in the log and on the terminal; start-up goes on."""
    unknown = unknown_variables(environ)
    for variable in unknown:
        log.warning("settings.unknown_variable", variable=variable.name, closest=variable.closest)
        terminal.print(f"[yellow]warning:[/] {escape(str(variable))}", soft_wrap=True)
    return unknown


def refuse_bad_settings(exc: ValidationError | SettingsError, terminal: Console) -> NoReturn:
    """Settings that do not load: every bad one on its own line, exit 2."""
    lines = describe(exc) if isinstance(exc, ValidationError) else [str(exc)]
    terminal.print("[bold red]configuration error:[/]")
    for line in lines:
        terminal.print(f"  {escape(line)}", soft_wrap=True)
    raise typer.Exit(2)
