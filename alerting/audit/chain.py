"""The audit log: append-only, keyed and chained, appended in the same transaction as the change it records.

hash(n) = HMAC-SHA-256(key, hash(n-1) + canonical JSON of row n), the key outside the database (keys.py) and named
by its fingerprint in the row. Editing, deleting or reordering any row breaks every hash after it, and making them
fit again takes the key. Rows written before the chain was keyed (key_id NULL) are plain SHA-256 and are reported
as such; none may follow a keyed row. `verify` also holds the chain to the checkpoints written outside the
database (checkpoints.py), which catches an earlier copy of the tables put back whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import configured
from alerting.audit.checkpoints import Checkpoint, CheckpointError, latest, read_checkpoints
from alerting.audit.keys import AuditKey, Keyring
from alerting.model.clock import utc
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, AuditHead, core_table

GENESIS = "0" * 64
AUDIT_EVENT = core_table(AuditEvent)


@dataclass(frozen=True)
class Entry:
    kind: str
    actor: str
    at: datetime
    alert_id: int | None = None
    subject: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def _body(seq: int, e: Entry, key_id: str | None) -> str:
    body: dict[str, Any] = {
        "seq": seq,
        "at": utc(e.at).isoformat(timespec="microseconds"),
        "alert_id": e.alert_id,
        "kind": e.kind,
        "actor": e.actor,
        "subject": e.subject,
        "data": e.data,
    }
    if key_id is not None:  # an unkeyed row's body is exactly what it was before keys, so old chains still verify
        body["key"] = key_id
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def chain_hash(prev_hash: str, seq: int, entry: Entry, key: AuditKey | None = None) -> str:
    """The row's hash: keyed under `key`, or the plain SHA-256 of the rows written before the chain was keyed."""
    if key is None:
        return hashlib.sha256((prev_hash + _body(seq, entry, None)).encode()).hexdigest()
    return key.sign(prev_hash + _body(seq, entry, key.id))


async def append(session: AsyncSession, entries: Sequence[Entry]) -> None:
    """Append entries at the end of the chain, inside the caller's transaction.

    Raises AuditKeyMissing (nothing written: the caller's transaction rolls back) when no key is configured.
    """
    if not entries:
        return
    key = configured.current().keyring.signer()
    # Touching the head row first takes the write lock (SQLite) or the row lock (PostgreSQL),
    # so two writers cannot both extend the same end of the chain.
    await session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=col(AuditHead.seq)))
    head = (await session.execute(select(col(AuditHead.seq), col(AuditHead.hash)).where(col(AuditHead.id) == 1))).one()
    seq, prev = head.seq, head.hash
    rows: list[dict[str, Any]] = []
    for e in entries:
        seq += 1
        digest = chain_hash(prev, seq, e, key)
        rows.append(
            {
                "seq": seq,
                "at": e.at,
                "alert_id": e.alert_id,
                "kind": e.kind,
                "actor": e.actor,
                "subject": e.subject,
                # stored as the JSON it was hashed as, so what verify reads back is what was signed
                "data": json.loads(json.dumps(e.data, ensure_ascii=False, default=str)),
                "prev_hash": prev,
                "hash": digest,
                "key_id": key.id,
            }
        )
        prev = digest
    # Core, not the ORM's bulk path: these rows are never read back as objects in this transaction
    await (await session.connection()).execute(insert(AUDIT_EVENT), rows)
    await session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=seq, hash=prev))


async def record(session: AsyncSession, kind: str, *, actor: str, at: datetime, **kwargs: Any) -> None:
    await append(session, [Entry(kind=kind, actor=actor, at=at, **kwargs)])


@dataclass(frozen=True)
class Verification:
    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str = ""
    # rows 1..unkeyed were written before the chain was keyed: plain SHA-256, sealed only by the keyed row after them
    unkeyed: int = 0
    keys: tuple[str, ...] = ()  # the key ids the chain is signed with, oldest first
    checkpoint: Checkpoint | None = None  # the latest checkpoint outside the database, which the chain was held to
    checkpoints: str = ""  # where the checkpoints are, or why there are none to hold the chain to
    checkpoints_configured: bool = False  # a checkpoint file is set (checkpoint None then: none written yet)

    @property
    def notes(self) -> list[str]:
        """What an auditor needs beside ok/broken: which rows are keyed, and the checkpoint it was held to."""
        notes = []
        if self.unkeyed:
            notes.append(
                f"rows 1-{self.unkeyed} were written before the chain was keyed (plain SHA-256: an edit recomputed "
                "before the first keyed row was written would not show)"
            )
        if self.keys:
            notes.append(f"keyed rows signed with audit key {', then '.join(self.keys)}")
        if self.checkpoint is not None:
            at = utc(self.checkpoint.at).isoformat(timespec="seconds")
            notes.append(f"latest checkpoint: row {self.checkpoint.seq} at {at} in {self.checkpoints}")
        elif self.checkpoints:
            notes.append(self.checkpoints)
        return notes

    @property
    def summary(self) -> str:
        return "; ".join(self.notes)


@dataclass
class _Walk:
    """Where a walk along the chain has got to: the hash to link to next, the row expected, rows checked."""

    keyring: Keyring
    marks: dict[int, Checkpoint] = field(default_factory=dict)  # the earliest checkpoint at each row
    prev: str = GENESIS
    expected_seq: int = 1
    count: int = 0
    unkeyed: int = 0
    keys: list[str] = field(default_factory=list)
    fits: int = 0  # the last row a checkpoint vouched for and the chain still matched

    def _fault(self, seq: int, reason: str) -> Verification:
        return Verification(False, self.count, seq, reason, self.unkeyed, tuple(self.keys))

    def check(self, rows: Iterable[AuditEvent]) -> Verification | None:
        """Check the next rows in order; the first fault found, or None."""
        for row in rows:
            entry = Entry(
                kind=row.kind, actor=row.actor, at=row.at, alert_id=row.alert_id, subject=row.subject, data=row.data
            )
            if row.seq != self.expected_seq:
                return self._fault(self.expected_seq, f"row {self.expected_seq} is missing")
            if row.prev_hash != self.prev:
                return self._fault(row.seq, "its link to the row before it is broken")
            key: AuditKey | None = None
            if row.key_id is None:
                if self.keys:  # a writer without the key can only make plain hashes: this is where they began
                    return self._fault(row.seq, "it is unkeyed after keyed rows (rewritten without the key)")
            elif (key := self.keyring.find(row.key_id)) is None:
                return self._fault(
                    row.seq,
                    f"it is signed with audit key {row.key_id}, which is not configured "
                    "(JIAOYING_AUDIT_KEY, or JIAOYING_AUDIT_KEYS for earlier keys)",
                )
            if chain_hash(self.prev, row.seq, entry, key) != row.hash:
                return self._fault(row.seq, "its content does not match its hash (edited)")
            mark = self.marks.get(row.seq)
            if mark is not None and mark.hash != row.hash:
                at = utc(mark.at).isoformat(timespec="seconds")
                since = f"after row {self.fits}, the last checkpoint it still fits" if self.fits else "from row 1"
                return self._fault(
                    row.seq, f"it differs from checkpoint line {mark.line} written at {at}: rewritten {since}"
                )
            if mark is not None:
                self.fits = row.seq
            if key is None:
                self.unkeyed += 1
            elif not self.keys or self.keys[-1] != key.id:
                self.keys.append(key.id)
            self.prev, self.expected_seq, self.count = row.hash, self.expected_seq + 1, self.count + 1
        return None

    def end(self, head: AuditHead | None, checkpoint: Checkpoint | None) -> Verification:
        if head is not None and (head.seq != self.count or head.hash != self.prev):
            reason = f"the chain ends at row {self.count} but the head says {head.seq}"
            return self._fault(self.count + 1, reason)
        if checkpoint is not None and checkpoint.seq > self.count:
            at = utc(checkpoint.at).isoformat(timespec="seconds")
            reason = (
                f"the chain ends at row {self.count} but checkpoint line {checkpoint.line} written at {at} saw "
                f"row {checkpoint.seq}: rows {self.count + 1}-{checkpoint.seq} were removed (truncated or rolled back)"
            )
            return self._fault(self.count + 1, reason)
        return Verification(True, self.count, None, "", self.unkeyed, tuple(self.keys))


async def _checkpoints(setup: configured.AuditSetup) -> tuple[list[Checkpoint], str]:
    """The checkpoints to hold the chain to, and a note on them for the report."""
    if setup.checkpoints is None:
        return [], "no checkpoints configured (JIAOYING_AUDIT_CHECKPOINTS): an earlier copy put back whole would pass"
    points = await asyncio.to_thread(read_checkpoints, setup.checkpoints, setup.keyring)
    if not points:
        return [], f"no checkpoint written yet in {setup.checkpoints}"
    return points, str(setup.checkpoints)


async def verify(db: Database, batch: int = 5000) -> Verification:
    """Walk the whole chain in order, up to the head as it was when the walk began, and hold it to the checkpoints.

    Each batch is read in a transaction of its own and hashed off the event loop, so a long chain
    (hundreds of thousands of rows after a rainy season) holds up neither writers nor answers coming in.
    """
    setup = configured.current()
    try:
        points, note = await _checkpoints(setup)
    except CheckpointError as exc:
        return Verification(False, 0, None, f"the checkpoint file {setup.checkpoints} is not to be trusted: {exc}")
    newest = latest(points)
    walk = _Walk(setup.keyring, marks={})
    for p in sorted(points, key=lambda p: p.at, reverse=True):
        walk.marks[p.seq] = p  # the earliest written wins: the checkpoint held longest
    async with db.session() as s:
        head = await s.get(AuditHead, 1)
    last = 0
    while head is not None:
        query = select(AuditEvent).where(col(AuditEvent.seq) > last, col(AuditEvent.seq) <= head.seq)
        async with db.session() as s:
            chunk = (await s.execute(query.order_by(col(AuditEvent.seq)).limit(batch))).scalars().all()
        if fault := await asyncio.to_thread(walk.check, chunk):
            return _with_checkpoint(fault, newest, note)
        if len(chunk) < batch:
            break
        last = chunk[-1].seq
    return _with_checkpoint(walk.end(head, newest), newest, note)


def _with_checkpoint(v: Verification, checkpoint: Checkpoint | None, note: str) -> Verification:
    configured_ = configured.current().checkpoints is not None
    return Verification(v.ok, v.rows, v.first_bad_seq, v.reason, v.unkeyed, v.keys, checkpoint, note, configured_)
