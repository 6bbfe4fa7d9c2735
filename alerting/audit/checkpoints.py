"""Checkpoints: the chain's end written outside the database, one signed line at a time.

Someone who can write the database can put back an earlier copy of the audit tables, head and all, and the chain
inside is whole again. What they cannot put back is a line already written to a file they do not control: each
line says "at this time the chain had N rows and row N's hash was H", and `verify` holds the database to it.
A line is `{"at", "seq", "hash", "key", "mac"}`, signed with the audit key, so an edited line is told apart from
a real one. Written when the chain moved and a minute has passed, and within seconds of an alert being issued,
updated, lifted or closed.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import exists, select
from sqlmodel import col

from alerting.audit.keys import AuditKey, Keyring
from alerting.model.clock import Clock, utc
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, AuditHead

log = structlog.get_logger()

FILE_IN_DIRECTORY = "audit-checkpoints.jsonl"
# the events after which a checkpoint is written at once, not at the next minute
LIFECYCLE = ("alert.triggered", "alert.updated", "alert.cancelled", "alert.closed")


def checkpoint_file(location: Path) -> Path:
    """The operator names a file (with an extension: .jsonl, .log), or a directory to keep `audit-checkpoints.jsonl`
    in, which need not exist yet: a name without an extension is taken for one."""
    made = location.is_dir() or (not location.exists() and not location.suffix)
    return location / FILE_IN_DIRECTORY if made else location


class CheckpointError(ValueError):
    """A checkpoint line that is not one this engine wrote: unreadable, or its signature does not fit."""


class CheckpointFileError(ValueError):
    """The checkpoint file cannot be written. A ValueError, so a command says it in one line."""


@dataclass(frozen=True)
class Checkpoint:
    at: datetime
    seq: int
    hash: str
    key_id: str
    line: int = 0  # where it stands in the file, to name it

    def _message(self) -> str:
        return f"jiaoying audit checkpoint|{utc(self.at).isoformat(timespec='microseconds')}|{self.seq}|{self.hash}"

    def to_line(self, key: AuditKey) -> str:
        body = {
            "at": utc(self.at).isoformat(timespec="microseconds"),
            "seq": self.seq,
            "hash": self.hash,
            "key": key.id,
            "mac": key.sign(self._message()),
        }
        return json.dumps(body, separators=(",", ":")) + "\n"

    @classmethod
    def from_line(cls, text: str, number: int, keyring: Keyring) -> Checkpoint:
        try:
            raw = json.loads(text)
            point = cls(datetime.fromisoformat(raw["at"]), int(raw["seq"]), str(raw["hash"]), str(raw["key"]), number)
            mac = str(raw["mac"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"line {number} is not a checkpoint ({exc})") from None
        key = keyring.find(point.key_id)
        if key is None:
            raise CheckpointError(
                f"line {number} is signed with audit key {point.key_id}, which is not configured "
                "(JIAOYING_AUDIT_KEY, or JIAOYING_AUDIT_KEYS for earlier keys)"
            )
        if key.sign(point._message()) != mac:
            raise CheckpointError(f"line {number} does not carry a valid signature (edited)")
        return point


def read_checkpoints(path: Path, keyring: Keyring) -> list[Checkpoint]:
    """Every checkpoint in the file, in file order; none if it does not exist yet. Blocking: run it in a thread.

    A last line without its newline is a write cut short by a crash and is left out; any other line that does
    not check out raises CheckpointError naming it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:  # not a file, or not ours to read: nothing to hold the chain to, which must be said
        raise CheckpointError(f"it cannot be read ({exc.strerror or exc})") from None
    lines = text.split("\n")
    complete = lines[:-1]  # after the last newline: empty, or a line whose write never finished
    return [Checkpoint.from_line(t, n, keyring) for n, t in enumerate(complete, start=1) if t.strip()]


def latest(points: list[Checkpoint]) -> Checkpoint | None:
    """The one that saw the longest chain. Several processes append to one file, so the last line need not be."""
    return max(points, key=lambda p: (p.seq, p.at), default=None)


def _append(path: Path, line: str) -> None:
    # one write() of a short line to a file opened for appending lands whole, also with several processes at it
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())  # a checkpoint lost in a power cut would leave the minute before it unguarded
    except OSError as exc:
        raise CheckpointFileError(
            f"JIAOYING_AUDIT_CHECKPOINTS: cannot write checkpoints to {path}: {exc.strerror or exc}"
        ) from None


class Checkpointer:
    """Writes the chain's end to the checkpoint file. `tick` is called every few seconds by the scheduler."""

    def __init__(
        self, db: Database, clock: Clock, path: Path, key: AuditKey, *, every: timedelta = timedelta(minutes=1)
    ) -> None:
        self.db, self.clock, self.path, self.key, self.every = db, clock, path, key, every
        self._last: Checkpoint | None = None

    async def tick(self) -> Checkpoint | None:
        """A checkpoint if the chain moved since the last one and a minute has passed or an alert began or ended."""
        async with self.db.session() as s:
            head = await s.get(AuditHead, 1)
            if head is None or (self._last is not None and head.seq == self._last.seq):
                return None
            due = self._last is None or self.clock.now() - self._last.at >= self.every
            if not due:
                assert self._last is not None
                since = col(AuditEvent.seq) > self._last.seq
                due = bool(await s.scalar(select(exists().where(since, col(AuditEvent.kind).in_(LIFECYCLE)))))
        if not due:
            return None
        try:
            return await self._write(head.seq, head.hash)
        except CheckpointFileError as exc:  # the engine goes on; the operator must hear that its chain is unguarded
            log.error("audit.checkpoint_failed", path=str(self.path), error=str(exc))
            return None

    async def write(self) -> Checkpoint | None:
        """A checkpoint now if the chain moved since the last one (when the engine starts and stops). Raises
        CheckpointFileError when the file cannot be written."""
        async with self.db.session() as s:
            head = await s.get(AuditHead, 1)
        if head is None or (self._last is not None and head.seq == self._last.seq):
            return None
        return await self._write(head.seq, head.hash)

    async def check_writable(self) -> None:
        """Raises CheckpointFileError now if the file cannot be written (`serve`, before it listens)."""
        await asyncio.to_thread(_append, self.path, "")

    async def _write(self, seq: int, digest: str) -> Checkpoint:
        point = Checkpoint(utc(self.clock.now()), seq, digest, self.key.id)
        await asyncio.to_thread(_append, self.path, point.to_line(self.key))
        self._last = point
        log.debug("audit.checkpoint", seq=seq, path=str(self.path))
        return point
