"""The tables. Nothing here is SQLite-only: the same schema runs on PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, Table, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from alerting.store.types import UTCDateTime


def _utc(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class OrgUnit(SQLModel, table=True):
    __tablename__ = "org_unit"

    code: str = Field(primary_key=True, max_length=20)
    name: str = Field(max_length=100)
    kind: str = Field(max_length=16)
    parent_code: str | None = Field(default=None, foreign_key="org_unit.code", index=True)
    # "/500238/500238101/500238101001/": a subtree is one indexed prefix match
    path: str = Field(max_length=200, index=True)


class Person(SQLModel, table=True):
    __tablename__ = "person"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=100)
    phone: str | None = Field(default=None, max_length=20, index=True)  # E.164
    wecom_userid: str | None = Field(default=None, max_length=64, index=True)
    email: str | None = Field(default=None, max_length=200)
    active: bool = True


class Responsibility(SQLModel, table=True):
    """A person answering for a unit: rank 0 is the primary, 1 and up the backups in order."""

    __tablename__ = "responsibility"
    __table_args__ = (UniqueConstraint("unit_code", "person_id"),)

    id: int | None = Field(default=None, primary_key=True)
    unit_code: str = Field(foreign_key="org_unit.code", index=True)
    person_id: str = Field(foreign_key="person.id", index=True)
    role: str = Field(max_length=32)
    rank: int = 0


class Device(SQLModel, table=True):
    __tablename__ = "device"

    id: str = Field(primary_key=True, max_length=64)  # the MQTT device id or broadcast zone id
    unit_code: str = Field(foreign_key="org_unit.code", index=True)
    kind: str = Field(max_length=32)
    name: str = Field(max_length=100)
    online: bool | None = None
    status_at: datetime | None = _utc(nullable=True)


class DutyShift(SQLModel, table=True):
    """One shift of the duty roster (值班表) of a township or the county."""

    __tablename__ = "duty_shift"

    id: int | None = Field(default=None, primary_key=True)
    unit_code: str = Field(foreign_key="org_unit.code", index=True)
    person_id: str = Field(foreign_key="person.id")
    rank: int = 0
    starts_at: datetime = _utc(index=True)
    ends_at: datetime = _utc(index=True)


class Alert(SQLModel, table=True):
    __tablename__ = "alert"

    id: int | None = Field(default=None, primary_key=True)
    level: str = Field(max_length=16)
    hazard: str = Field(max_length=32)
    title: str = Field(max_length=200)
    text: str
    instructions: str = ""
    status: str = Field(max_length=16, index=True)
    exercise: bool = False
    target_units: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # the escalation plan as it was when the alert went out; editing policy later does not change it
    plan: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _utc()
    created_by: str = Field(max_length=100)
    supersedes_id: int | None = Field(default=None, foreign_key="alert.id")
    ended_at: datetime | None = _utc(nullable=True)
    end_reason: str | None = None
    # grid workers still to be planned: the critical first wave went out first (issue.alerts.trigger)
    planning_pending: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class Target(SQLModel, table=True):
    """Someone or something that must answer this alert: one loop to close."""

    __tablename__ = "target"
    __table_args__ = (
        UniqueConstraint("alert_id", "person_id", "device_id"),
        Index("ix_target_alert_state", "alert_id", "state"),
    )

    id: str = Field(primary_key=True, max_length=32)
    alert_id: int = Field(foreign_key="alert.id")
    kind: str = Field(max_length=16)
    person_id: str | None = Field(default=None, foreign_key="person.id")
    device_id: str | None = Field(default=None, foreign_key="device.id")
    unit_code: str = Field(foreign_key="org_unit.code", index=True)
    role: str = Field(max_length=32)
    priority: int = 0
    state: str = Field(max_length=16)
    step: int = 0  # the escalation step reached
    answered_at: datetime | None = _utc(nullable=True)
    answered_by: str | None = None  # person id, or "device"
    answer_channel: str | None = None
    feedback: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Delivery(SQLModel, table=True):
    """One attempt to reach one contact over one channel about one target. Its id is the idempotency key."""

    __tablename__ = "delivery"
    __table_args__ = (
        Index("ix_delivery_queue", "channel", "state", "priority", "next_attempt_at"),
        Index("ix_delivery_alert_target", "alert_id", "target_id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    alert_id: int = Field(foreign_key="alert.id")
    target_id: str = Field(foreign_key="target.id")
    person_id: str | None = Field(default=None, foreign_key="person.id")  # who is contacted
    device_id: str | None = Field(default=None, foreign_key="device.id")
    channel: str = Field(max_length=16)
    purpose: str = Field(max_length=8)
    step: int = 0
    priority: int = 0
    state: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _utc()
    claimed_by: str | None = None
    claimed_at: datetime | None = _utc(nullable=True)
    # set, durably, right before the provider is called: a crash can repeat only what has it and no outcome
    handed_at: datetime | None = _utc(nullable=True)
    created_at: datetime = _utc()
    sent_at: datetime | None = _utc(nullable=True)
    delivered_at: datetime | None = _utc(nullable=True)
    provider: str | None = None
    provider_id: str | None = Field(default=None, index=True)
    sandbox: bool = False
    error: str | None = None
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Acknowledgement(SQLModel, table=True):
    """Every answer is kept; `counted` marks the one that closed the target."""

    __tablename__ = "acknowledgement"
    __table_args__ = (Index("ix_ack_alert_target", "alert_id", "target_id"),)

    id: str = Field(primary_key=True, max_length=32)
    alert_id: int = Field(foreign_key="alert.id")
    target_id: str = Field(foreign_key="target.id")
    person_id: str | None = Field(default=None, foreign_key="person.id")  # who answered
    delivery_id: str | None = None
    channel: str = Field(max_length=16)
    at: datetime = _utc()
    counted: bool = False
    on_behalf_reason: str | None = None
    feedback: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Deadline(SQLModel, table=True):
    """When the next escalation step of a target is due. In-process timers only wake the engine."""

    __tablename__ = "deadline"
    __table_args__ = (Index("ix_deadline_due", "state", "due_at"),)

    id: str = Field(primary_key=True, max_length=32)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    target_id: str = Field(foreign_key="target.id", index=True)
    step: int
    due_at: datetime = _utc()
    state: str = Field(max_length=16)
    fence: int = 0  # bumped by every claim, so a stale claimer cannot finish
    claimed_by: str | None = None
    fired_at: datetime | None = _utc(nullable=True)


class AuditEvent(SQLModel, table=True):
    """Append-only (the database refuses UPDATE and DELETE) and chained: hash = HMAC-SHA-256 under the audit key
    named by key_id of prev_hash + canonical body; rows from before the key (key_id NULL) are plain SHA-256."""

    __tablename__ = "audit_event"
    # an alert's events in order, and its latest one (the position its cached report is keyed by) in one probe;
    # with alert_id alone PostgreSQL found an old alert's latest by walking the primary key back from the end
    __table_args__ = (Index("ix_audit_event_alert_seq", "alert_id", "seq"),)

    seq: int = Field(primary_key=True)
    at: datetime = _utc()
    alert_id: int | None = None
    kind: str = Field(max_length=48)
    actor: str = Field(max_length=100)
    subject: str | None = Field(default=None, max_length=100, index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    key_id: str | None = Field(default=None, max_length=16)


class AuditHead(SQLModel, table=True):
    """One row: the end of the chain. Appending updates it first, which serialises writers."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True)
    seq: int = 0
    hash: str = Field(max_length=64)


class Account(SQLModel, table=True):
    """Someone who signs in to the console. A township officer's unit_code limits them to its subtree."""

    __tablename__ = "account"

    username: str = Field(primary_key=True, max_length=64)
    display_name: str = Field(max_length=100)
    role: str = Field(max_length=16)  # duty | township | auditor | admin
    unit_code: str | None = Field(default=None, foreign_key="org_unit.code")
    password_hash: str = Field(max_length=200)  # argon2id, with its parameters and salt
    active: bool = True
    created_at: datetime = _utc()
    failed_sign_ins: int = 0  # in a row; reset by a good one
    locked_until: datetime | None = _utc(nullable=True)


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "web_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    username: str = Field(foreign_key="account.username", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = _utc()
    expires_at: datetime = _utc(index=True)
    ended_at: datetime | None = _utc(nullable=True)


class EngineOwner(SQLModel, table=True):
    """One run of an engine process: the name it writes on its claims, and its heartbeat.

    Another process takes over this run's claims once it is known dead: it stopped, its heartbeat went stale,
    or it ran on the same machine and its pid is gone. `live_slot` numbers the live processes of one node
    (NULL once the run ended), so a restarted process takes its dead predecessor's slot and a live sibling
    never shares one; the slot names the process to the MQTT broker.
    """

    __tablename__ = "engine_owner"
    __table_args__ = (UniqueConstraint("node", "live_slot", name="uq_engine_owner_live_slot"),)

    owner: str = Field(primary_key=True, max_length=100)  # "<node>/<run>"
    node: str = Field(max_length=64)
    slot: int
    live_slot: int | None = None
    host: str | None = Field(default=None, max_length=100)  # boot and pid namespace: where `pid` means something
    pid: int
    pid_started: int | None = Field(
        default=None, sa_type=BigInteger
    )  # the process's start time in clock ticks, so a reused pid is not mistaken
    started_at: datetime = _utc()
    beat_at: datetime = _utc()
    ended_at: datetime | None = _utc(nullable=True)


class InboundSeen(SQLModel, table=True):
    """Reports already taken in, by key: a device ack reaches every engine subscribed to it, and QoS 1 may
    hand the same one over twice; only the first one to insert its key records it."""

    __tablename__ = "inbound_seen"

    key: str = Field(primary_key=True, max_length=200)
    at: datetime = _utc()


class IssueRequest(SQLModel, table=True):
    """An Idempotency-Key (or a console form's one-time token) and the alert it issued. The unique constraint is
    what makes two requests sent at the same moment issue one alert: the second one's insert waits for the
    first one's transaction and then finds the key taken (issue.once)."""

    __tablename__ = "issue_request"
    __table_args__ = (UniqueConstraint("caller", "key", name="uq_issue_request_caller_key"),)

    id: int | None = Field(default=None, primary_key=True)
    caller: str = Field(max_length=100)  # the actor: one caller's key never answers another's request
    key: str = Field(max_length=255)
    fingerprint: str = Field(max_length=64)  # SHA-256 of the request as validated: a different body is refused
    alert_id: int | None = Field(default=None, foreign_key="alert.id")  # set in the transaction that took the key
    issued: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # the first answer
    created_at: datetime = _utc()
    expires_at: datetime = _utc(index=True)


def core_table(model: type[SQLModel]) -> Table:
    """A model's table for Core statements: bulk inserts and executemany updates that need no ORM objects."""
    return SQLModel.metadata.tables[str(model.__tablename__)]


class CapMessage(SQLModel, table=True):
    """A CAP message taken in (alerting.cap.importer), kept verbatim with its SHA-256. One (sender, identifier) is
    taken once: the same message again changes nothing. `alert_id` is the alert it issued, updated to or lifted."""

    __tablename__ = "cap_message"
    __table_args__ = (UniqueConstraint("sender", "identifier", name="uq_cap_message_sender_identifier"),)

    id: int | None = Field(default=None, primary_key=True)
    sender: str = Field(max_length=200)
    identifier: str = Field(max_length=200)
    sent: str = Field(max_length=32)  # as the message wrote it, offset included
    msg_type: str = Field(max_length=16)
    status: str = Field(max_length=16)
    version: str = Field(max_length=8)  # what it came in: 1.2, or 1.1 (upgraded before it was validated)
    sha256: str = Field(max_length=64)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # the bytes as received
    received_at: datetime = _utc()
    received_by: str = Field(max_length=100)
    alert_id: int | None = Field(default=None, foreign_key="alert.id", index=True)
    outcome: str = Field(default="taking", max_length=16)  # taking, then issued | updated | lifted | unchanged
