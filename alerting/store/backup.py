"""A copy of a SQLite store taken while the engine runs, and putting one back in its place.

The copy is one step of SQLite's online backup API over a read-only connection: in WAL mode a reader never holds a
writer up, and one step reads one snapshot, so the copy is consistent however busy the store is (a backup taken in
pages would start again each time a writer commits, and might never finish in a storm). It is written under a
temporary name, checked (integrity_check) and only then renamed to its final name, so a file with the final name
is always a whole backup.

Restoring refuses while any engine process of the store is alive (its heartbeat is fresh), and removes the old
store's write-ahead log with it: a WAL left beside a different database file would be replayed into it.

PostgreSQL is backed up by pg_dump (see the README); these functions say so rather than pretend.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

LIVE_WITHIN = timedelta(seconds=30)  # a heartbeat this fresh means the process is running (people/liveness.py)


class BackupError(Exception):
    """A backup or restore that cannot be done, said so that an operator knows what to do instead."""


@dataclass(frozen=True)
class Contents:
    """What a store holds, enough to tell one copy from another at a glance."""

    path: Path
    alerts: int
    audit_events: int
    last_audit_at: str | None


def sqlite_file(url: str) -> Path:
    """The file a SQLite database URL names; a clear refusal for anything else."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupError(
            f"the database is {parsed.get_backend_name()}, not SQLite: back it up with pg_dump "
            f"(pg_dump -Fc -f jiaoying.dump {parsed.database}) and restore with pg_restore, as the README says"
        )
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("the database is in memory: there is no file to back up")
    return Path(parsed.database)


def backup(source: Path, target: Path) -> Contents:
    """Copy the store at `source` to `target`, a new file, while the engine may be writing to it."""
    if not source.is_file():
        raise BackupError(f"{source}: no such database file")
    if target.exists():
        raise BackupError(f"{target} exists: a backup never overwrites a file; choose a new name")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    _copy(source, partial)
    try:
        contents = _checked(partial)
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return Contents(target, contents.alerts, contents.audit_events, contents.last_audit_at)


def restore(copy: Path, target: Path, *, replace: bool, now: datetime | None = None) -> Contents:
    """Put the backup `copy` in place as the store at `target`. An existing store is replaced only when asked, and
    never while one of its engine processes is alive."""
    if not copy.is_file():
        raise BackupError(f"{copy}: no such backup file")
    contents = _checked(copy)
    if target.exists():
        if not replace:
            raise BackupError(
                f"{target} exists: restoring puts the backup in its place and loses what was written since the "
                "backup; say --replace to do that"
            )
        alive = _live_processes(target, now or datetime.now(UTC))
        if alive:
            raise BackupError(
                f"engine processes of {target} are still running ({', '.join(alive)}): stop serve and every "
                "engine run first, then restore"
            )
    partial = target.with_name(target.name + ".restoring")
    partial.unlink(missing_ok=True)
    _copy(copy, partial)
    for stale in (Path(f"{target}-wal"), Path(f"{target}-shm")):
        stale.unlink(missing_ok=True)
    partial.replace(target)
    return Contents(target, contents.alerts, contents.audit_events, contents.last_audit_at)


def _copy(source: Path, target: Path) -> None:
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent}: no such directory")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)  # a backup never writes to the store it copies
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst, pages=-1)  # all in one step: one snapshot (see the module's docstring)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise BackupError(f"copying {source} to {target} failed: {exc}") from exc


def _checked(path: Path) -> Contents:
    """The file is a whole SQLite database and a jiaoying store; what it holds."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot be opened as SQLite ({exc})") from exc
    try:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"{path}: the SQLite integrity check failed: {verdict}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"alembic_version", "alert", "audit_event"} <= tables:
            raise BackupError(f"{path}: not a jiaoying database (no alert and audit tables)")
        alerts = db.execute("SELECT count(*) FROM alert").fetchone()[0]
        events, last = db.execute("SELECT count(*), max(at) FROM audit_event").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database ({exc})") from exc
    finally:
        db.close()
    return Contents(path, int(alerts), int(events), str(last) if last is not None else None)


def _live_processes(store: Path, now: datetime) -> list[str]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT owner, beat_at FROM engine_owner WHERE ended_at IS NULL").fetchall()
    except sqlite3.DatabaseError:
        return []  # no registry table: no engine ever ran on it
    finally:
        db.close()
    fresh = now.astimezone(UTC).replace(tzinfo=None) - LIVE_WITHIN
    return sorted(owner for owner, beat in rows if datetime.fromisoformat(str(beat)).replace(tzinfo=None) >= fresh)
