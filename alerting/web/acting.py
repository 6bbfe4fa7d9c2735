"""What a duty officer does to a running alert, with who-may-do-what checked first. Console and API share it.

A township officer acts only inside their subtree: they call again and answer for recipients there,
and cancel or update only an alert whose every target unit lies inside it (lifting a county-wide
warning is the county's call). An alert that does not reach them at all is, to them, not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import col, select

from alerting.answer.outcomes import AnswerResult
from alerting.issue.alerts import AlertChange, CalledAgain, Issued, Lifted
from alerting.model.access import Forbidden, Principal, check_units, in_scope, visible_alert
from alerting.model.actor import Actor
from alerting.model.domain import TargetState
from alerting.store.tables import Alert, Target
from alerting.views.labels import CALL_ANSWERED_REASON
from alerting.web.core import Core


class NotVisible(LookupError):
    """No such alert or recipient, as far as this viewer may know."""


async def _visible(core: Core, who: Principal, alert_id: int) -> Alert:
    async with core.db.session() as s:
        alert = await visible_alert(s, who, alert_id)
    if alert is None:
        raise NotVisible(f"there is no alert {alert_id}")
    return alert


async def _recipient_in_scope(core: Core, who: Principal, alert_id: int, target_id: str) -> None:
    async with core.db.session() as s:
        found = await s.scalar(
            select(col(Target.id)).where(col(Target.id) == target_id, col(Target.alert_id) == alert_id)
        )
        inside = await s.scalar(
            select(col(Target.id)).where(col(Target.id) == target_id, in_scope(who, col(Target.unit_code)))
        )
    if found is None:
        raise NotVisible(f"alert {alert_id} has no recipient {target_id}")
    if inside is None:
        raise Forbidden("这位责任人不在您的辖区内，不能替其处置")


async def require_whole_alert(core: Core, who: Principal, alert: Alert) -> None:
    """Cancelling or updating changes the alert for everyone it reaches: only for alerts wholly inside the scope."""
    async with core.db.session() as s:
        outside = await check_units(s, who, alert.target_units)
    if outside:
        raise Forbidden(f"这条预警还发往辖区以外的单位（{'、'.join(outside)}），只能由县值班室解除或调整")


async def call_again(
    core: Core, who: Principal, alert_id: int, target_ids: list[str] | None, *, preview: bool = False
) -> CalledAgain:
    who.require_issuer()
    await _visible(core, who, alert_id)
    # the service checks every id in one query: unknown ones are a LookupError, outside ones Forbidden
    return await core.alerts.call_again(alert_id, target_ids, actor=who.actor, within=who.unit_path, preview=preview)


async def answer_for(core: Core, who: Principal, alert_id: int, target_id: str, reason: str) -> AnswerResult:
    who.require_issuer()
    if not reason.strip():
        raise ValueError("代为确认需要填写原因（例如：已电话联系本人，确认收到）")
    await _visible(core, who, alert_id)
    await _recipient_in_scope(core, who, alert_id, target_id)
    return await core.acks.answer_on_behalf(
        alert_id, target_id, by=Actor.officer(who.actor), reason=reason, at=core.clock.now()
    )


class CallOutcome(StrEnum):
    """How a phone call the duty officer made to a silent recipient went."""

    ANSWERED = "answered"  # they took it and confirmed: an answer on their behalf
    NO_ANSWER = "no_answer"  # 打过电话，未接通: audited, and the loop stays open


@dataclass(frozen=True)
class CallLogged:
    outcome: CallOutcome
    counted: bool  # the call closed the recipient's loop (only when answered, and not answered before)
    state: TargetState  # the recipient's state afterwards


async def log_call(
    core: Core, who: Principal, alert_id: int, target_id: str, outcome: CallOutcome, note: str = ""
) -> CallLogged:
    """One step after a call: answered (the same answer on behalf as 代为确认, its reason saying it was by phone)
    or not taken (an audit entry, shown in the recipient's timeline). Same rules as answering on behalf."""
    who.require_issuer()
    await _visible(core, who, alert_id)
    await _recipient_in_scope(core, who, alert_id, target_id)
    async with core.db.session() as s:
        person = await s.scalar(select(col(Target.person_id)).where(col(Target.id) == target_id))
    if person is None:
        raise NotVisible(f"recipient {target_id} of alert {alert_id} is a device: there is nobody to phone")
    by = Actor.officer(who.actor)
    if outcome is CallOutcome.ANSWERED:
        reason = CALL_ANSWERED_REASON + (f"（{note.strip()}）" if note.strip() else "")
        result = await core.acks.answer_on_behalf(alert_id, target_id, by=by, reason=reason, at=core.clock.now())
        return CallLogged(outcome, result.counted, result.state)
    state = await core.acks.called_no_answer(alert_id, target_id, by=by, at=core.clock.now(), note=note)
    return CallLogged(outcome, False, state)


async def cancel(core: Core, who: Principal, alert_id: int, reason: str) -> Lifted:
    who.require_issuer()
    if not reason.strip():
        raise ValueError("解除预警需要填写原因")
    alert = await _visible(core, who, alert_id)
    await require_whole_alert(core, who, alert)
    return await core.alerts.cancel(alert_id, actor=who.actor, reason=reason.strip())


async def update(core: Core, who: Principal, alert_id: int, change: AlertChange) -> Issued:
    who.require_issuer()
    alert = await _visible(core, who, alert_id)
    await require_whole_alert(core, who, alert)
    return await core.alerts.update(alert_id, change, actor=who.actor)
