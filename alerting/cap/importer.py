"""Taking a CAP message: check it and say what it would do, or do it (issue, update or lift), exactly once.

A message is taken once per (sender, identifier), under a unique constraint: its row in cap_message is written in
the same transaction as the alert it issues, updates or lifts, so a second copy arriving at the same moment fails
on the first one's row and its alert is rolled back with it, and a crash leaves both or neither. The row keeps the
bytes as received; the audit entry of the taking carries their SHA-256 and links the message to the alert.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import structlog
from pydantic import ValidationError
from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.cap.errors import CapRefused
from alerting.cap.mapping import CapMapping, Mapped, map_message
from alerting.cap.message import Message, Reference
from alerting.cap.parse import parse
from alerting.cap.rules import references
from alerting.cap.units import Resolved, resolve
from alerting.issue.alerts import AlertChange, AlertNotActive, AlertRequest, AlertService, Within
from alerting.issue.warning_texts import hazards
from alerting.model.access import Principal, check_units, visible_alert
from alerting.model.clock import Clock
from alerting.model.domain import AlertStatus, Level
from alerting.store.db import Database
from alerting.store.tables import Alert, CapMessage

log = structlog.get_logger()

Action = Literal["issue", "update", "cancel", "none"]
OUTCOMES: dict[Action, str] = {"issue": "issued", "update": "updated", "cancel": "lifted", "none": "unchanged"}
MAX_NAME = 200  # sender and identifier as stored


@dataclass(frozen=True)
class Preview:
    """What taking the message would do. Nothing is written to find it out."""

    message: Message
    sha256: str
    action: Action
    mapped: Mapped
    request: AlertRequest | None = None  # for an Alert
    change: AlertChange | None = None  # for an Update
    alert_id: int | None = None  # the alert an Update or Cancel applies to
    resolved: Resolved | None = None
    unknown_references: list[str] = field(default_factory=list)
    already: CapMessage | None = None  # this very message was taken before
    note: str = ""


@dataclass(frozen=True)
class Taken:
    preview: Preview
    alert_id: int | None  # the alert issued, updated to, or lifted
    outcome: str  # issued | updated | lifted | unchanged
    duplicate: bool = False  # the message had been taken before: nothing was done now


class CapImporter:
    def __init__(self, db: Database, clock: Clock, alerts: AlertService, mapping: CapMapping | None = None) -> None:
        self.db, self.clock, self.alerts = db, clock, alerts
        self.mapping = mapping or CapMapping()

    async def check(self, data: bytes, who: Principal) -> Preview:
        """Parse, validate and map the message, and say what taking it would do; refuse what cannot be taken."""
        message = parse(data)
        for name, value in (("sender", message.sender), ("identifier", message.identifier)):
            if len(value) > MAX_NAME:
                raise CapRefused(name, f"{len(value)} characters; at most {MAX_NAME} are kept")
        sha = hashlib.sha256(data).hexdigest()
        async with self.db.session() as s:
            already = await _taken(s, message.sender, message.identifier)
            if already is not None:
                if already.sha256 != sha:
                    raise CapRefused(
                        "identifier",
                        f"a different message from {message.sender} with the identifier {message.identifier} was "
                        f"taken at {already.received_at.isoformat()}; a changed message needs an identifier of its own",
                        status=409,
                        slug="cap-identifier-reused",
                    )
                mapped = Mapped(None, exercise=message.exercise)
                return Preview(message, sha, "none", mapped, alert_id=already.alert_id, already=already)
            mapped = map_message(message, self.mapping, hazards())
            if message.msg_type == "Alert":
                return await self._new_alert(s, message, sha, mapped, who)
            return await self._follow_up(s, message, sha, mapped, who)

    async def take(self, data: bytes, who: Principal) -> Taken:
        """Do what check says, once: the same message again is answered with what it did the first time."""
        preview = await self.check(data, who)
        if preview.already is not None:
            return Taken(preview, preview.already.alert_id, preview.already.outcome, duplicate=True)
        msg, now = preview.message, self.clock.now()
        outcome = OUTCOMES[preview.action]
        recorded: list[int] = []

        async def record(s: AsyncSession, alert_id: int) -> None:
            """The message's row and the audit of its taking, in the transaction of what it did to the alert."""
            row = CapMessage(
                sender=msg.sender,
                identifier=msg.identifier,
                sent=msg.sent,
                msg_type=msg.msg_type,
                status=msg.status,
                version=msg.version,
                sha256=preview.sha256,
                body=data,
                received_at=now,
                received_by=who.actor,
                alert_id=alert_id,
                outcome=outcome,
            )
            s.add(row)
            await s.flush()  # a twin taken meanwhile: IntegrityError, and the alert's work is rolled back with it
            assert row.id is not None
            recorded.append(row.id)
            await audit.record(
                s,
                "cap.taken",
                actor=who.actor,
                at=now,
                alert_id=alert_id,
                subject=f"cap:{row.id}",
                data={
                    "message": row.id,
                    "sha256": preview.sha256,
                    "sender": msg.sender,
                    "identifier": msg.identifier,
                    "sent": msg.sent,
                    "msg_type": msg.msg_type,
                    "status": msg.status,
                    "version": msg.version,
                    "outcome": outcome,
                    "references": [r for r in (msg.references.text.split() if msg.references else [])],
                    "unknown_references": preview.unknown_references,
                    "left_aside": preview.mapped.ignored + (preview.resolved.elsewhere if preview.resolved else []),
                },
            )

        try:
            alert_id = await self._act(preview, who, record)
        except IntegrityError:
            # the same message, taken meanwhile by another request: answered as a duplicate
            again = await self.check(data, who)
            if again.already is None:
                raise
            return Taken(again, again.already.alert_id, again.already.outcome, duplicate=True)
        log.info("cap.taken", message=recorded[0], alert_id=alert_id, outcome=outcome, sender=msg.sender)
        return Taken(preview, alert_id, outcome)

    async def _act(self, preview: Preview, who: Principal, record: Within) -> int | None:
        """Issue, update or lift as the preview says, with `record` written in that same transaction."""
        if preview.action == "issue":
            assert preview.request is not None
            issued = await self.alerts.trigger(preview.request, actor=who.actor, within=record)
            return issued.alert_id
        assert preview.alert_id is not None
        if preview.action == "none":
            async with self.db.session() as s:
                await record(s, preview.alert_id)
            return preview.alert_id
        try:
            if preview.action == "update":
                assert preview.change is not None
                issued = await self.alerts.update(preview.alert_id, preview.change, actor=who.actor, within=record)
                return issued.alert_id
            msg = preview.message
            said = msg.note or (
                preview.mapped.info.headline.text if preview.mapped.info and preview.mapped.info.headline else ""
            )
            reason = f"CAP Cancel {msg.sender},{msg.identifier}" + (f"：{said}" if said else "")
            await self.alerts.cancel(preview.alert_id, actor=who.actor, reason=reason[:500], within=record)
            return preview.alert_id
        except AlertNotActive as exc:
            raise CapRefused("references", str(exc), status=409, slug="alert-not-active") from exc

    async def _new_alert(self, s: AsyncSession, message: Message, sha: str, mapped: Mapped, who: Principal) -> Preview:
        resolved = await resolve(s, mapped.codes)
        outside = await check_units(s, who, resolved.units)
        if outside:
            raise CapRefused(
                mapped.codes[0].path,
                f"the message warns units outside this key's area ({who.unit_code}): {', '.join(outside)}",
                status=403,
                slug="forbidden",
            )
        assert mapped.level is not None
        with _refused_as_cap(mapped):
            request = AlertRequest(
                level=mapped.level,
                hazard=mapped.hazard,
                title=mapped.title,
                text=mapped.text,
                instructions=mapped.instructions,
                units=resolved.units,
                exercise=mapped.exercise,
            )
        return Preview(message, sha, "issue", mapped, request=request, resolved=resolved)

    async def _follow_up(self, s: AsyncSession, message: Message, sha: str, mapped: Mapped, who: Principal) -> Preview:
        assert message.references is not None  # rules.check requires it of an Update or Cancel
        refs = references(message.references)
        alert, unknown = await self._referenced(s, refs, who)
        assert alert.id is not None
        outside = await check_units(s, who, alert.target_units)
        if outside:
            raise CapRefused(
                "references",
                f"the alert {alert.id} it changes also warns units outside this key's area: {', '.join(outside)}",
                status=403,
                slug="forbidden",
            )
        if message.msg_type == "Cancel":
            return Preview(message, sha, "cancel", mapped, alert_id=alert.id, unknown_references=unknown)
        if alert.exercise != mapped.exercise:
            raise CapRefused(
                "status",
                f"the message is {message.status}, the alert {alert.id} it updates is "
                f"{'an exercise' if alert.exercise else 'a real warning'}; a drill and a warning never mix",
            )
        assert mapped.info is not None and mapped.level is not None
        if mapped.hazard != alert.hazard:
            raise CapRefused(
                mapped.info.event.path,
                f"the update is about {mapped.hazard}, the alert {alert.id} about {alert.hazard}: "
                "lift it and issue anew",
            )
        resolved = await resolve(s, mapped.codes)
        if sorted(resolved.units) != sorted(alert.target_units):
            raise CapRefused(
                mapped.codes[0].path,
                f"the update names other units ({', '.join(resolved.units)}) than the alert {alert.id} warns "
                f"({', '.join(alert.target_units)}); an update here keeps the area: lift it and issue anew",
            )
        with _refused_as_cap(mapped):
            change = AlertChange(
                level=mapped.level, title=mapped.title, text=mapped.text, instructions=mapped.instructions
            )
        if _unchanged(alert, change):
            note = "the update changes neither level nor texts: it is kept, and nobody is called again"
            return Preview(message, sha, "none", mapped, alert_id=alert.id, resolved=resolved, note=note)
        return Preview(
            message,
            sha,
            "update",
            mapped,
            change=change,
            alert_id=alert.id,
            resolved=resolved,
            unknown_references=unknown,
        )

    async def _referenced(self, s: AsyncSession, refs: list[Reference], who: Principal) -> tuple[Alert, list[str]]:
        """The alert now standing for what the references name (the newest of its chain), and the references
        naming nothing we took. At least one must be known, and all known ones must be of one chain."""
        keys = [(r.sender, r.identifier) for r in refs]
        rows = (
            await s.execute(
                select(CapMessage).where(tuple_(col(CapMessage.sender), col(CapMessage.identifier)).in_(keys))
            )
        ).scalars()
        known = {(m.sender, m.identifier): m for m in rows if m.alert_id is not None}
        unknown = [r.text for r in refs if (r.sender, r.identifier) not in known]
        heads: dict[int, Alert] = {}
        for m in known.values():
            assert m.alert_id is not None
            head = await _newest(s, m.alert_id)
            if await visible_alert(s, who, m.alert_id) is not None:
                heads[head.id or 0] = head
        if not heads and not unknown:
            raise CapRefused(
                "references",
                "the alerts these references name lie outside this key's area",
                status=403,
                slug="forbidden",
            )
        if not heads:
            raise CapRefused(
                "references",
                f"references {unknown[0]}: no message taken here has that sender and identifier",
                status=422,
                slug="cap-unknown-reference",
            )
        if len(heads) > 1:
            raise CapRefused(
                "references",
                f"the references name several alerts ({', '.join(map(str, sorted(heads)))}), not one chain",
            )
        return next(iter(heads.values())), unknown


async def _taken(s: AsyncSession, sender: str, identifier: str) -> CapMessage | None:
    return (
        await s.execute(
            select(CapMessage).where(col(CapMessage.sender) == sender, col(CapMessage.identifier) == identifier)
        )
    ).scalar_one_or_none()


async def _newest(s: AsyncSession, alert_id: int) -> Alert:
    """The alert at the end of the update chain that starts at alert_id (an update supersedes its predecessor)."""
    alert = await s.get(Alert, alert_id)
    assert alert is not None
    while alert.status == AlertStatus.SUPERSEDED.value:
        nxt = (await s.execute(select(Alert).where(col(Alert.supersedes_id) == alert.id))).scalars().first()
        if nxt is None:
            break
        alert = nxt
    return alert


def _unchanged(alert: Alert, change: AlertChange) -> bool:
    return (
        (change.level is None or change.level == Level(alert.level))
        and change.title == alert.title
        and change.text == alert.text
        and change.instructions == alert.instructions
    )


@contextlib.contextmanager
def _refused_as_cap(mapped: Mapped) -> Iterator[None]:
    """What the alert's own checks refuse (mapping checks most of it first) is a refusal of the message, naming
    the info block, never a crash."""
    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise CapRefused(
            mapped.info.path if mapped.info else "", f"the alert it maps to is refused: {field}: {first['msg']}"
        ) from exc
