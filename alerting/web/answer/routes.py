"""GET|POST /ack/{token}: the page a grid worker opens from the SMS or WeCom link and answers 收到 on.

No JavaScript, one small HTML response, nothing loaded from elsewhere: it has to work on an old
phone on a weak mobile signal in a storm. GET only shows (link previewers fetch links too); POST
answers. The signed token in the URL is the capability; POSTs from another site are refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Template

from alerting.answer.outcomes import AlreadyTaken, AnswerRejected
from alerting.deliver.tokens import TokenError
from alerting.model.clock import local_text
from alerting.model.domain import AlertStatus, Purpose
from alerting.views import templating
from alerting.web.answer.form import FeedbackForm, parse_feedback
from alerting.web.answer.view import AckView, load_ack_view
from alerting.web.api.auth import CoreDep
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(prefix="/ack", tags=["answer page"], include_in_schema=True)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # same-origin keeps the token out of any Referer, while same-site POSTs still carry a real Origin
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}


@dataclass(frozen=True)
class Notice:
    title: str
    message: str


NOTICES = {
    400: Notice("链接无效", "这个链接不完整或被改动过。请从短信或企业微信里重新打开完整的链接。"),
    403: Notice("请从通知链接打开", "为安全起见，请直接从短信或企业微信里的链接打开本页，再点“收到”。"),
    404: Notice("找不到这条通知", "这条通知不存在或已被清理。如有疑问，请电话联系乡镇或县值班室。"),
    405: Notice("无法处理", "请从短信或企业微信里的链接打开本页。"),
    410: Notice("链接已过期", "这个链接已超过有效期，不能再回复。如预警仍在进行，请直接电话联系乡镇或县值班室。"),
    500: Notice("系统暂时出错", "请稍后再试，或直接电话联系乡镇或县值班室。"),
}


@cache
def templates() -> dict[str, Template]:
    """Loaded once (create_app calls this at start-up), so no request reads a file."""
    env = templating.environment()
    return {name: env.get_template(f"{name}.html") for name in ("ack", "ack_notice")}


def _page(name: str, status: int, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates()[name].render(**context), status_code=status, headers=PAGE_HEADERS)


def notice_page(status: int) -> HTMLResponse:
    notice = NOTICES.get(status) or NOTICES[500 if status >= 500 else 400]
    return _page("ack_notice", status, notice=notice)


def html_error(request: Request, status: int) -> Response | None:
    """Errors under /ack are shown as a page a person can read; the API keeps problem+json."""
    path = request.url.path
    return notice_page(status) if path == "/ack" or path.startswith("/ack/") else None


@dataclass
class Outcome:
    """What just happened on a POST, for the confirmation line."""

    kind: str  # counted | repeat | ended | invalid
    feedback_saved: bool = False
    help_asked: bool = False  # the call for help went up to the township and county duty
    errors: list[str] = field(default_factory=list)


def _cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    # "null" comes from privacy-preserving contexts; the token still has to be right, so it is let through
    if not origin or origin == "null":
        return False
    hosts = {h.strip().lower() for h in (request.headers.get("host"), request.headers.get("x-forwarded-host")) if h}
    return urlsplit(origin).netloc.lower() not in hosts


async def _open(core: Core, token: str) -> AckView | HTMLResponse:
    """The delivery behind a token, or the page saying why there is none. Records nothing either way."""
    try:
        delivery_id = core.signer.verify(token, core.clock.now())
    except TokenError as exc:
        log.info("ack.bad_token", expired=exc.expired, reason=str(exc))
        return notice_page(410 if exc.expired else 400)
    view = await load_ack_view(core.db, delivery_id)
    if view is None:
        log.info("ack.unknown_delivery", delivery_id=delivery_id)
        return notice_page(404)
    return view


def _show(
    core: Core, view: AckView, status: int = 200, *, outcome: Outcome | None = None, form: FeedbackForm | None = None
) -> HTMLResponse:
    return _page(
        "ack",
        status,
        v=view,
        outcome=outcome,
        form=form or FeedbackForm(),
        lifted=view.purpose is Purpose.LIFT,
        is_task=view.purpose is Purpose.TASK,
        ended=view.alert_status is not AlertStatus.ACTIVE,
        status_word={
            AlertStatus.CANCELLED: "已解除",
            AlertStatus.CLOSED: "已闭环（所有责任人均已回复）",
            AlertStatus.SUPERSEDED: "已被新预警取代",
        }.get(view.alert_status, ""),
        t=local_text,
        duty_phone=core.duty_phone,
    )


def repeat_key(delivery_id: str, feedback: Mapping[str, Any]) -> str:
    """The same answer to the same message is one answer, however often the phone sends it."""
    said = json.dumps(feedback, sort_keys=True, ensure_ascii=False, default=str)
    return f"ack-page:{delivery_id}:{hashlib.sha256(said.encode()).hexdigest()[:32]}"


@router.get("/{token}", response_class=HTMLResponse, summary="the answer page (HTML)")
async def ack_page(token: str, core: CoreDep) -> HTMLResponse:
    opened = await _open(core, token)
    if isinstance(opened, HTMLResponse):
        return opened
    return _show(core, opened)


@router.post("/{token}", response_class=HTMLResponse, summary="answer 收到, with optional feedback (HTML form)")
async def ack_answer(token: str, request: Request, core: CoreDep) -> HTMLResponse:
    arrived = core.clock.now()  # the answer's time is when it came, not when a busy server got round to it
    opened = await _open(core, token)
    if isinstance(opened, HTMLResponse):
        return opened
    view = opened
    log_ = log.bind(alert_id=view.alert_id, delivery_id=view.delivery_id)
    if _cross_site(request):
        log_.warning("ack.cross_site_refused", origin=request.headers.get("origin"))
        return notice_page(403)
    if view.purpose is Purpose.LIFT:
        return _show(core, view)  # a lifted notice needs no answer; the page says so
    form = parse_feedback(await request.form(), task=view.purpose is Purpose.TASK, answering=view.can_answer)
    if not form.valid:
        return _show(core, view, 400, outcome=Outcome("invalid", errors=form.errors), form=form)
    try:
        result = await core.acks.answer_delivery(
            view.delivery_id,
            channel=view.channel,
            at=arrived,
            feedback=form.feedback or None,
            once=repeat_key(view.delivery_id, form.feedback),
        )
    except AlreadyTaken:  # the phone sent it again (a retry after a timeout, a double tap): nothing new to write
        log_.info("ack.page_repeat_ignored")
        return _show(core, await load_ack_view(core.db, view.delivery_id) or view, outcome=Outcome("repeat"))
    except AnswerRejected as exc:
        log_.info("ack.rejected", reason=str(exc))
        return _show(core, view)
    request.app.state.board_hub.changed()
    after = await load_ack_view(core.db, view.delivery_id) or view
    if result.counted:
        kind = "counted"
    elif not view.answered and result.alert_status is not AlertStatus.ACTIVE:
        kind = "ended"
    else:
        kind = "repeat"
    log_.info("ack.page_answer", outcome=kind, channel=view.channel.value)
    outcome = Outcome(kind, feedback_saved=bool(form.feedback), help_asked=result.help_needed)
    return _show(core, after, outcome=outcome)
