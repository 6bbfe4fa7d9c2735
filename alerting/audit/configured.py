"""What this process signs the audit with and where it writes checkpoints: installed once by config.wiring.

Every write of the core appends to the audit through a session it already holds, from a dozen places; the key
reaches them here rather than through each of their signatures. The keys are immutable values, installed before
the engine starts and read by the engine's thread and the web's alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alerting.audit.keys import Keyring


@dataclass(frozen=True)
class AuditSetup:
    keyring: Keyring = field(default_factory=Keyring)
    # the checkpoint file outside the database (None: no checkpoints, which verify says)
    checkpoints: Path | None = None


_current = AuditSetup()


def install(setup: AuditSetup) -> None:
    global _current
    _current = setup


def current() -> AuditSetup:
    return _current


@contextmanager
def using(setup: AuditSetup) -> Iterator[AuditSetup]:
    """`setup` for the length of a block (tests, and a command that verifies with other keys), then the old one."""
    before = _current
    install(setup)
    try:
        yield setup
    finally:
        install(before)
