"""Signing in and out of the console."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from alerting.deliver.pacing import PerClient
from alerting.model.plain_text import bad_character
from alerting.people.accounts import SESSION_TTL, SignInFailed
from alerting.web.api.auth import CoreDep
from alerting.web.console.web import PREFIX, SESSION_COOKIE, Acting, PageError, cross_site, local_path, redirect, render

router = APIRouter(include_in_schema=False)


# A duty room's screens share one address (one NAT, or one proxy), so the address alone cannot be the key: 40 of
# them signing in at shift change would wait a minute. Two counts instead:
# - every attempt, per account and address: twenty at once, then one every three seconds. Someone signing in on a
#   few screens never notices; a script guessing one account is held to a person's pace (and LOCK_AFTER wrong
#   passwords lock the account anyway, from every address).
# - wrong passwords and unknown names, per address: thirty at once, then one every ten seconds. A right password
#   costs nothing here, so 40 or 400 screens sign in at once; thirty typos is more than a room makes at one shift
#   change, and one typist past them waits about as long as retyping takes. A script cycling through names gets
#   8,640 guesses a day from an address instead of 28,800, and each name it tries still locks after LOCK_AFTER.
#   A success does not wipe the count, or one known password would reset it between guesses.
ACCOUNT_BURST, ACCOUNT_PER_MINUTE = 20, 20
FAILURES_BURST, FAILURES_PER_MINUTE = 30, 6


class SignInAttempts:
    """Whether a sign-in may go ahead now, and the failures counted against its address afterwards."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_account = PerClient(per_minute=ACCOUNT_PER_MINUTE, burst=ACCOUNT_BURST, clock=clock)
        self.failures = PerClient(per_minute=FAILURES_PER_MINUTE, burst=FAILURES_BURST, clock=clock)

    def wait(self, username: str, address: str) -> float:
        """0 if this attempt may go ahead (it is counted against the account), else the seconds to wait."""
        if wait := self.failures.wait(address):
            return wait  # checked first, so a refused attempt takes nothing from the account's count
        # the same name the account service looks up, so "duty " is not a fresh count for duty; an address
        # holds no space, so the key cannot be forged from another pair
        return self.per_account.try_acquire(f"{address} {username.strip()[:64]}")

    def failed(self, address: str) -> None:
        # charged after the password check, so attempts already in flight when the count runs out still count:
        # the address waits off the debt, and its pace over time stays one every ten seconds
        self.failures.charge(address)


def attempts_limit(clock: Callable[[], float] = time.monotonic) -> SignInAttempts:
    """Per app. `clock` is for tests, which move time instead of sleeping."""
    return SignInAttempts(clock)


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
    # behind a proxy named in JIAOYING_FORWARDED_ALLOW_IPS, uvicorn has already put the forwarded address here
    client = request.client.host if request.client else None
    limit: SignInAttempts = request.app.state.sign_in_attempts
    if wait := limit.wait(username, client or "?"):
        error = f"尝试过于频繁，请 {math.ceil(wait)} 秒后再试。"
        page = render(request, None, "sign_in", status=429, next=_safe_next(next), error=error, username=username)
        page.headers["Retry-After"] = str(math.ceil(wait))
        return page
    try:
        if bad_character(username, multiline=False) is not None:  # no account is named so; PostgreSQL would refuse it
            raise SignInFailed("用户名含有控制字符，请重新输入")
        signed = await core.accounts.sign_in(username, password, client=client)
    except SignInFailed as exc:
        limit.failed(client or "?")
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
