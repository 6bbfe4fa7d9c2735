"""What an answer comes to: counted, kept as a repeat, already taken in, or refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alerting.model.domain import AlertStatus, TargetState


class AlreadyTaken(Exception):
    """This very report was taken in before (by this process or another one that received it too)."""


class AnswerRejected(LookupError):
    """The answer cannot be matched to anything that can be answered; the message says why."""


@dataclass(frozen=True)
class AnswerResult:
    alert_id: int
    target_id: str
    counted: bool  # this answer closed the target
    state: TargetState  # the target's state after the answer
    answered_at: datetime | None
    answered_by: str | None
    alert_status: AlertStatus
    alert_closed_now: bool = False
    help_needed: bool = False  # this answer asked for help (on an alert not lifted)


Outcome = AnswerResult | AlreadyTaken | AnswerRejected
