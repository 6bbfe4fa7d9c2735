"""What every console page shares: who is signed in, CSRF, rendering, notices and error pages.

Pages are server-rendered; the little JavaScript there is (live board, unit search) lives in
/static and only improves a page that already works without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.convertors import Convertor, register_url_convertor

from alerting.model.access import ACCOUNT_ROLE_LABEL, Principal
from alerting.views import templating
from alerting.views.labels import (
    ALERT_STATUS_LABEL,
    CALL_OUTCOME_LABEL,
    CHANNEL_LABEL,
    LEVEL_LABEL,
    ROLE_LABEL,
    TARGET_STATE_LABEL,
    step_label,
)
from alerting.views.tiles import board_tiles, report_tiles
from alerting.web.api.auth import CoreDep
from alerting.web.api.numbers import ROW_NUMBER_MAX, valid_alert_id
from alerting.web.api.problems import problem_response
from alerting.web.core import Core

SESSION_COOKIE = "jy_session"
NOTICE_COOKIE = "jy_notice"
PREFIX = "/console"

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class SignInRequired(Exception):
    """No live session: the handler sends the browser to the sign-in page and back afterwards."""


class PageError(Exception):
    """Shown to the person as a page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Viewer:
    """The signed-in person looking at a page."""

    principal: Principal
    csrf: str


@cache
def environment() -> Environment:
    env = templating.environment()
    env.globals.update(
        LEVEL_LABEL=LEVEL_LABEL,
        ALERT_STATUS_LABEL=ALERT_STATUS_LABEL,
        TARGET_STATE_LABEL=TARGET_STATE_LABEL,
        CHANNEL_LABEL=CHANNEL_LABEL,
        ROLE_LABEL=ROLE_LABEL,  # a responsible person's role (网格员…)
        ACCOUNT_ROLE_LABEL=ACCOUNT_ROLE_LABEL,  # a console account's role (县值班员…)
        step_label=step_label,
        CALL_OUTCOME_LABEL=CALL_OUTCOME_LABEL,  # a logged phone call's outcome
        board_tiles=board_tiles,  # the township tile map of an alert on the board
        report_tiles=report_tiles,  # and of a report
    )
    return env


def render(request: Request, viewer: Viewer | None, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A console page. `name` is a template under templates/console/, without the extension."""
    core: Core = request.app.state.core
    notice = request.cookies.get(NOTICE_COOKIE)
    html = (
        environment()
        .get_template(f"console/{name}.html")
        .render(
            viewer=viewer,
            me=viewer.principal if viewer else None,
            csrf=viewer.csrf if viewer else "",
            path=request.url.path,
            notice=unquote(notice) if notice else None,
            sandbox=[c.kind for c in core.channels if c.sandbox],
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


def local_path(value: str | None, fallback: str) -> str:
    """`value` if it is a console path on this site, else `fallback`: a form or link can never send a
    browser elsewhere (//host, /\\host, scheme://, control characters)."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
        and "://" not in value
        and value.isprintable()
    ):
        return value
    return fallback


def redirect(url: str, notice: str | None = None) -> RedirectResponse:
    """303 after a POST, with a one-line notice shown on the next page."""
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    if notice:
        response.set_cookie(NOTICE_COOKIE, quote(notice), max_age=60, path="/", httponly=True, samesite="strict")
    return response


async def viewer(request: Request, core: CoreDep) -> Viewer:
    token = request.cookies.get(SESSION_COOKIE)
    found = await core.accounts.session(token) if token else None
    if found is None:
        raise SignInRequired
    principal, csrf = found
    return Viewer(principal, csrf)


async def acting_viewer(request: Request, who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """A viewer whose POST carries the session's CSRF token and comes from this site."""
    if cross_site(request):
        raise PageError(403, "请求来自其他网站，已拒绝。请在本系统页面内操作。")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not sent or sent != who.csrf:
        raise PageError(403, "页面已过期（安全校验未通过），请刷新页面后重试。")
    return who


def cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc != request.url.netloc


def issuer(who: Viewer) -> Viewer:
    if not who.principal.can_issue:
        raise PageError(403, f"{ACCOUNT_ROLE_LABEL[who.principal.role]}只能查看，不能发布或处置预警。")
    return who


async def _issuing_viewer(who: Annotated[Viewer, Depends(acting_viewer)]) -> Viewer:
    return issuer(who)


async def _admin_viewer(who: Annotated[Viewer, Depends(acting_viewer)]) -> Viewer:
    if not who.principal.is_admin:
        raise PageError(403, "只有管理员可以这样做。")
    return who


Seeing = Annotated[Viewer, Depends(viewer)]  # any signed-in person, for GET pages
Acting = Annotated[Viewer, Depends(acting_viewer)]  # any signed-in person posting a form
Issuing = Annotated[Viewer, Depends(_issuing_viewer)]  # may issue and act on alerts (duty, township, admin)
Administering = Annotated[Viewer, Depends(_admin_viewer)]


class _AlertNumberConvertor(Convertor[int]):
    """`{alert_id:alert}` in a console path: at most as many digits as the largest alert number has, so a longer
    one matches no route (a 404 page) instead of reaching int(), which refuses past 4,300 digits with a 500."""

    regex = f"[0-9]{{1,{len(str(ROW_NUMBER_MAX))}}}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("alert", _AlertNumberConvertor())


def _alert_number(alert_id: int) -> int:
    # a number no alert can have gets the page of one no alert has, not a database error (the store cannot bind it)
    if not valid_alert_id(alert_id):
        raise PageError(404, f"没有编号为 {alert_id} 的预警，或它不在您的辖区内。")
    return alert_id


AlertNumber = Annotated[int, Depends(_alert_number)]  # an alert's number in a console path


def is_console(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, None, "error", status=status, status_code=status, message=message)


def html_error(request: Request, status: int) -> Response | None:
    """Errors under /console are pages a person can read."""
    if not is_console(request):
        return None
    messages = {404: "找不到这个页面。", 405: "不支持这样打开这个页面。", 500: "系统出错了，错误已记录。请稍后重试。"}
    return error_page(request, status, messages.get(status, "请求无法处理。"))


async def on_sign_in_required(request: Request, exc: Exception) -> Response:
    if request.method == "GET" and request.headers.get("accept", "").startswith("text/event-stream"):
        return Response(status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/sign-in?next={quote(target)}", status_code=303)


async def on_page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return error_page(request, exc.status, exc.message)


async def on_forbidden(request: Request, exc: Exception) -> Response:
    """A Forbidden from the core: a page on the console, problem+json on the API."""
    if is_console(request):
        return error_page(request, 403, str(exc))
    return problem_response(request, 403, "forbidden", "Not allowed", str(exc))
