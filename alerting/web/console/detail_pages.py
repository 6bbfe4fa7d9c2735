"""One alert in detail, and what a duty officer does to it: call again, answer for someone, lift, change level.

Every action is a POST with the CSRF token, checked against the viewer's scope in alerting/acting.py,
audited by the core service it calls, and answered with a redirect back carrying a one-line notice.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from alerting.answer.outcomes import AnswerRejected
from alerting.issue.alerts import AlertChange, AlertNotActive, AlertNotFound, AlertUnchanged
from alerting.model.access import Forbidden
from alerting.model.domain import Level, TargetState
from alerting.model.plain_text import BadCharacter, bad_character
from alerting.views.board import MEANING, since_text, totals
from alerting.views.labels import ALERT_STATUS_LABEL, channel_label
from alerting.views.timeline import Show, read_alert
from alerting.web import acting
from alerting.web.api.auth import CoreDep
from alerting.web.console.web import PREFIX, AlertNumber, Issuing, PageError, Seeing, local_path, redirect, render

log = structlog.get_logger()

router = APIRouter(include_in_schema=False)

PER_PAGE = 50
ALERT = PREFIX + "/alerts/{alert_id:alert}"


@router.get(ALERT)
async def alert_page(
    request: Request,
    alert_id: AlertNumber,
    who: Seeing,
    core: CoreDep,
    show: Annotated[str, Query()] = "",
    q: Annotated[str, Query(max_length=50)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    try:
        wanted = Show(show)
    except ValueError:
        wanted = Show.ALL
    view = await read_alert(
        core.db, who.principal, alert_id, show=wanted, search=q, limit=PER_PAGE, offset=(page - 1) * PER_PAGE
    )
    if view is None:
        raise PageError(404, f"没有编号为 {alert_id} 的预警，或它不在您的辖区内。")
    now = core.clock.now()
    pages = max(1, -(-view.total // PER_PAGE))
    return render(
        request,
        who,
        "alert",
        view=view,
        a=view.alert,
        total=totals(view.townships),
        meaning=MEANING,
        shows=list(Show),
        show=wanted,
        q=q,
        page=page,
        pages=pages,
        request_query=request.url.query,
        status_label=ALERT_STATUS_LABEL,
        since=lambda t: since_text(t, now),
    )


def _back(value: str, alert_id: int) -> str:
    """Where to return after an action: a console page of ours, never an address given from outside."""
    return local_path(value, f"{PREFIX}/alerts/{alert_id}")


def _refused(alert_id: int, exc: Exception) -> PageError:
    if isinstance(exc, acting.NotVisible | AlertNotFound | AnswerRejected | LookupError):
        return PageError(404, f"没有编号为 {alert_id} 的预警或该责任人，或不在您的辖区内。")
    return PageError(409, f"这条预警已结束，不能再这样处置（{exc}）。")


def _unseen(found: BadCharacter) -> str:
    return f"原因的第 {found.position} 个字符是不可见的控制字符（{found.code}），请删除后再试。"


@router.get(ALERT + "/call-again")
async def call_again_confirm(
    request: Request,
    alert_id: AlertNumber,
    who: Seeing,  # a GET carries no CSRF token; acting.call_again still requires an issuer
    core: CoreDep,
    back: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    """重呼全部未应答 asks first: how many recipients, and how many messages and calls on which channels."""
    try:
        alert = await core.alerts.get(alert_id)
        would = await acting.call_again(core, who.principal, alert_id, None, preview=True)
    except Forbidden:
        raise
    except (acting.NotVisible, AlertNotFound, LookupError, AlertNotActive) as exc:
        raise _refused(alert_id, exc) from exc
    sends = [(channel_label(ch), n) for ch, n in sorted(would.by_channel.items(), key=lambda kv: -kv[1])]
    return render(request, who, "call_again", a=alert, would=would, sends=sends, back=_back(back, alert_id))


@router.post(ALERT + "/call-again")
async def call_again(
    alert_id: AlertNumber,
    who: Issuing,
    core: CoreDep,
    target_id: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "",
) -> Response:
    if bad_character(target_id, multiline=False):  # no recipient's id has one, and PostgreSQL could not look it up
        raise _refused(alert_id, LookupError(target_id))
    try:
        done = await acting.call_again(core, who.principal, alert_id, [target_id] if target_id else None)
    except Forbidden:
        raise
    except (acting.NotVisible, LookupError, AlertNotActive) as exc:
        raise _refused(alert_id, exc) from exc
    if done.deliveries:
        notice = f"已立即重呼 {done.targets} 人/台，共 {done.deliveries} 条通知。"
    elif done.skipped:
        notice = "没有需要重呼的：对方已应答，或上一次呼叫仍在发送队列中。"
    else:
        notice = "没有未应答的责任人。"
    return redirect(_back(back, alert_id), notice)


@router.post(ALERT + "/recipients/{target_id}/answer")
async def answer_for(
    alert_id: AlertNumber,
    target_id: str,
    who: Issuing,
    core: CoreDep,
    reason: Annotated[str, Form(max_length=200)] = "",
    back: Annotated[str, Form()] = "",
) -> Response:
    to = _back(back, alert_id)
    if not reason.strip():
        return redirect(to, "代为确认未完成：请填写原因（例如：已电话联系本人，确认收到）。")
    if found := bad_character(reason, multiline=True):
        return redirect(to, "代为确认未完成：" + _unseen(found))
    try:
        result = await acting.answer_for(core, who.principal, alert_id, target_id, reason)
    except Forbidden:
        raise
    except (acting.NotVisible, AnswerRejected) as exc:
        raise _refused(alert_id, exc) from exc
    if result.counted:
        notice = "已代为确认，原因已记入审计。"
    else:
        notice = "此人已经应答过（或预警已结束），本次代为确认只作记录。"
    return redirect(to, notice)


@router.post(ALERT + "/recipients/{target_id}/call")
async def log_call(
    alert_id: AlertNumber,
    target_id: str,
    who: Issuing,
    core: CoreDep,
    outcome: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "",
) -> Response:
    """One click after phoning a silent person: 已接通 answers for them, 未接通 is audited and the loop stays open."""
    to = _back(back, alert_id)
    try:
        how = acting.CallOutcome(outcome)
    except ValueError:
        return redirect(to, "电话记录未完成：请选择“已接通，本人确认收到”或“打过电话，未接通”。")
    if bad_character(target_id, multiline=False):
        raise _refused(alert_id, LookupError(target_id))
    try:
        done = await acting.log_call(core, who.principal, alert_id, target_id, how)
    except Forbidden:
        raise
    except (acting.NotVisible, AnswerRejected) as exc:
        raise _refused(alert_id, exc) from exc
    if how is acting.CallOutcome.NO_ANSWER:
        notice = "已记录：打过电话，未接通（已记入审计，叫应继续）。"
        if done.state is not TargetState.OPEN:
            notice = "已记录：打过电话，未接通。此人此前已应答或已处置。"
    elif done.counted:
        notice = "已记录电话接通，已代为确认，已记入审计。"
    else:
        notice = "已记录电话接通。此人已经应答过（或预警已结束），本次只作记录。"
    return redirect(to, notice)


@router.post(ALERT + "/cancel")
async def cancel(
    alert_id: AlertNumber,
    who: Issuing,
    core: CoreDep,
    reason: Annotated[str, Form(max_length=500)] = "",
    back: Annotated[str, Form()] = "",
) -> Response:
    if not reason.strip():
        return redirect(_back(back, alert_id), "解除未完成：请填写解除原因。")
    if found := bad_character(reason, multiline=True):
        return redirect(_back(back, alert_id), "解除未完成：" + _unseen(found))
    try:
        lifted = await acting.cancel(core, who.principal, alert_id, reason)
    except Forbidden:
        raise
    except (acting.NotVisible, AlertNotFound, AlertNotActive) as exc:
        raise _refused(alert_id, exc) from exc
    return redirect(
        f"{PREFIX}/alerts/{alert_id}",
        f"预警已解除：停止 {lifted.cancelled_deliveries} 条未发出的通知，"
        f"向 {lifted.lift_notices} 个已送达渠道发送解除通知。",
    )


@router.post(ALERT + "/update")
async def update(
    alert_id: AlertNumber,
    who: Issuing,
    core: CoreDep,
    level: Annotated[str, Form()] = "",
    confirm_red: Annotated[str, Form()] = "",
) -> Response:
    here = f"{PREFIX}/alerts/{alert_id}"
    try:
        new_level = Level(level)
    except ValueError:
        return redirect(here, "调整级别未完成：请选择红、橙、黄、蓝之一。")
    if new_level is Level.RED and not confirm_red:  # as when issuing: red is never one unconsidered click
        return redirect(here, "调整级别未完成：升为红色预警须勾选“我已核实，确认发布红色预警”。")
    try:
        issued = await acting.update(core, who.principal, alert_id, AlertChange(level=new_level))
    except Forbidden:
        raise
    except AlertUnchanged:
        return redirect(here, "调整级别未完成：所选级别与当前相同，预警没有任何改动。")
    except (acting.NotVisible, AlertNotFound, AlertNotActive) as exc:
        raise _refused(alert_id, exc) from exc
    return redirect(
        f"{PREFIX}/alerts/{issued.alert_id}",
        f"已更新为{new_level.label}预警（#{issued.alert_id}，取代 #{alert_id}），{issued.deliveries} 条通知已排队。",
    )
