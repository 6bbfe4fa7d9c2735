"""Signing in and out of the console."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from alerting.deliver.pacing import PerClient
from alerting.people.accounts import SESSION_TTL, SignInFailed
from alerting.web.api.auth import CoreDep
from alerting.web.console.web import PREFIX, SESSION_COOKIE, Acting, PageError, cross_site, local_path, redirect, render

router = APIRouter(include_in_schema=False)


def attempts_limit() -> PerClient:
    """Per app: twenty attempts at once, then one every three seconds, per address. A person never notices."""
    return PerClient(per_minute=20, burst=20)


def _safe_next(target: str | None) -> str:
    """Only a path on this site, so the sign-in page cannot be used to send someone elsewhere."""
    return local_path(target, PREFIX + "/")


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=303)


@router.get(PREFIX + "/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    return render(request, None, "sign_in", next=_safe_next(next), error=None, username="")


@router.post(PREFIX + "/sign-in")
async def sign_in(
    request: Request,
    core: CoreDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form()] = PREFIX + "/",
) -> Response:
    if cross_site(request):
        raise PageError(403, "请求来自其他网站，已拒绝。")
    client = request.client.host if request.client else None
    limit: PerClient = request.app.state.sign_in_attempts
    if wait := limit.try_acquire(client or "?"):
        error = f"尝试过于频繁，请 {math.ceil(wait)} 秒后再试。"
        page = render(request, None, "sign_in", status=429, next=_safe_next(next), error=error, username=username)
        page.headers["Retry-After"] = str(math.ceil(wait))
        return page
    try:
        signed = await core.accounts.sign_in(username, password, client=client)
    except SignInFailed as exc:
        return render(request, None, "sign_in", status=401, next=_safe_next(next), error=str(exc), username=username)
    response = redirect(_safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        signed.token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post(PREFIX + "/sign-out")
async def sign_out(request: Request, core: CoreDep, _: Acting) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await core.accounts.sign_out(token)
    response = redirect(PREFIX + "/sign-in", "已退出登录")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
