"""/api/v1: what the live board shows and what a duty officer does from it (call again, answer on behalf).

Scope is the key's: a township key sees only alerts reaching its subtree (404 for any other) and acts
only on recipients inside it (403 otherwise).
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from alerting.answer.outcomes import AnswerRejected
from alerting.issue.alerts import AlertNotActive
from alerting.model.access import Forbidden
from alerting.model.plain_text import FilledText, Line, Text
from alerting.views.board import Board
from alerting.views.board_hub import BoardHub
from alerting.web import acting
from alerting.web.api.auth import CoreDep, Issuer, Reader
from alerting.web.api.numbers import AlertId
from alerting.web.api.problems import Problem, documented

log = structlog.get_logger()

router = APIRouter(prefix="/api/v1", tags=["board"], responses=documented(401, 403, 422))


class CallAgainIn(BaseModel):
    target_ids: list[Line] = Field(default_factory=list, max_length=10_000, description="recipients to call again")
    all_silent: bool = Field(default=False, description="every silent recipient the key may see, instead")
    dry_run: bool = Field(default=False, description="only count what would go out; nothing is sent or recorded")

    @model_validator(mode="after")
    def _one_or_the_other(self) -> CallAgainIn:
        if self.all_silent == bool(self.target_ids):
            raise ValueError("give either target_ids or all_silent: true")
        return self


class CalledAgainOut(BaseModel):
    alert_id: int
    targets: int = Field(description="silent recipients a fresh call went to")
    deliveries: int = Field(description="deliveries queued now (with dry_run: that would be queued)")
    by_channel: dict[str, int]
    skipped: int = Field(description="answered already, or their last call is still queued")


class AnswerForIn(BaseModel):
    reason: FilledText = Field(min_length=1, max_length=200, examples=["已电话联系本人，确认收到"])


class AnsweredOut(BaseModel):
    alert_id: int
    target_id: str
    counted: bool = Field(description="this answer closed the recipient's loop (false: they had answered already)")
    state: str
    alert_status: str


class CallLogIn(BaseModel):
    outcome: acting.CallOutcome = Field(
        description="answered: they took the call and confirmed (an answer on their behalf); "
        "no_answer: 打过电话，未接通 (audited, the loop stays open)"
    )
    note: Text = Field(default="", max_length=200, examples=["关机"], description="optional, kept in the audit")


class CallLoggedOut(BaseModel):
    alert_id: int
    target_id: str
    outcome: acting.CallOutcome
    counted: bool = Field(description="the call closed the recipient's loop (answered, and not answered before)")
    state: str = Field(description="the recipient's state afterwards")


def _missing(exc: Exception) -> Problem:
    return Problem(404, "not-found", "No such alert or recipient", str(exc))


@router.get("/board", response_model=Board)
async def board(request: Request, who: Reader) -> Board:
    """Active alerts with progress per township and the silent furthest up their escalation; alerts ended in
    the last day. The same snapshot the console's live board streams."""
    hub: BoardHub = request.app.state.board_hub  # one read per change, whoever polls
    return (await hub.latest(who)).for_viewer(who)  # numbers to dial for whoever may call them


@router.post("/alerts/{alert_id}/call-again", response_model=CalledAgainOut, responses=documented(403, 404, 409, 422))
async def call_again(alert_id: AlertId, body: CallAgainIn, core: CoreDep, who: Issuer) -> CalledAgainOut:
    """立即重呼: call silent recipients again now over the channels of the step they reached, without waiting for
    the next escalation step. Recipients who answered meanwhile are skipped."""
    try:
        done = await acting.call_again(
            core, who, alert_id, None if body.all_silent else body.target_ids, preview=body.dry_run
        )
    except Forbidden:
        raise
    except (acting.NotVisible, LookupError) as exc:
        raise _missing(exc) from exc
    except AlertNotActive as exc:
        raise Problem(409, "alert-not-active", "The alert is not active", str(exc)) from exc
    log.info("api.called_again", alert_id=alert_id, targets=done.targets, actor=who.actor)
    return CalledAgainOut(
        alert_id=alert_id,
        targets=done.targets,
        deliveries=done.deliveries,
        by_channel=done.by_channel,
        skipped=done.skipped,
    )


@router.post(
    "/alerts/{alert_id}/recipients/{target_id}/answer",
    response_model=AnsweredOut,
    responses=documented(403, 404, 422),
)
async def answer_for(alert_id: AlertId, target_id: str, body: AnswerForIn, core: CoreDep, who: Issuer) -> AnsweredOut:
    """代为确认: the duty officer answers for a recipient they reached another way. The reason is audited."""
    if not body.reason.strip():
        raise Problem(
            422,
            "reason-required",
            "A reason is required",
            "answering on someone's behalf needs a reason",
            errors=[{"field": "reason", "location": "body", "pointer": "#/reason", "message": "must not be blank"}],
        )
    try:
        result = await acting.answer_for(core, who, alert_id, target_id, body.reason)
    except Forbidden:
        raise
    except (acting.NotVisible, AnswerRejected) as exc:
        raise _missing(exc) from exc
    return AnsweredOut(
        alert_id=alert_id,
        target_id=target_id,
        counted=result.counted,
        state=result.state.value,
        alert_status=result.alert_status.value,
    )


@router.post(
    "/alerts/{alert_id}/recipients/{target_id}/call",
    response_model=CallLoggedOut,
    responses=documented(403, 404, 422),
)
async def log_call(alert_id: AlertId, target_id: str, body: CallLogIn, core: CoreDep, who: Issuer) -> CallLoggedOut:
    """The duty officer phoned a silent person: log how it went in one step. `answered` is an answer on their
    behalf (audited as target.answered_for, the reason saying it was by phone); `no_answer` is audited as
    target.called_no_answer and shown in the recipient's timeline. The same rules as answering on behalf."""
    try:
        done = await acting.log_call(core, who, alert_id, target_id, body.outcome, body.note)
    except Forbidden:
        raise
    except (acting.NotVisible, AnswerRejected) as exc:
        raise _missing(exc) from exc
    log.info("api.call_logged", alert_id=alert_id, target_id=target_id, outcome=body.outcome.value, actor=who.actor)
    return CallLoggedOut(
        alert_id=alert_id, target_id=target_id, outcome=done.outcome, counted=done.counted, state=done.state.value
    )
