"""/api/v1/accounts: console accounts for an administrator's key. Every change is audited by AccountService."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from alerting.model.access import AccountRole
from alerting.model.plain_text import Line
from alerting.people.accounts import MIN_PASSWORD, AccountError
from alerting.views.accounts import AccountRow, account_rows
from alerting.web.api.auth import Admin, CoreDep
from alerting.web.api.numbers import Offset
from alerting.web.api.problems import Problem, documented
from alerting.web.api.schemas import Page

log = structlog.get_logger()

router = APIRouter(prefix="/api/v1/accounts", tags=["accounts"], responses=documented(401, 403, 422))

Username = Annotated[str, Path(min_length=1, max_length=64, description="the account's user name")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Password = Field(min_length=MIN_PASSWORD, max_length=200, description=f"at least {MIN_PASSWORD} characters")


class AccountOut(BaseModel):
    username: str
    display_name: str
    role: AccountRole
    role_label: str
    unit_code: str | None
    unit_name: str | None
    active: bool
    locked_until: datetime | None = Field(description="set while five wrong passwords in a row keep it locked")
    created_at: datetime
    last_sign_in: datetime | None

    @classmethod
    def of(cls, a: AccountRow, now: datetime) -> AccountOut:
        return cls(
            username=a.username,
            display_name=a.display_name,
            role=a.role,
            role_label=a.role_label,
            unit_code=a.unit_code,
            unit_name=a.unit_name,
            active=a.active,
            locked_until=a.locked_until if a.locked(now) else None,
            created_at=a.created_at,
            last_sign_in=a.last_sign_in,
        )


class AccountIn(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{2,64}$", examples=["ningchang"])
    display_name: Line = Field(default="", max_length=100, examples=["宁厂镇值班员"])
    role: AccountRole
    unit_code: str | None = Field(default=None, max_length=20, description="a township officer's township code")
    password: str = Password


class PasswordIn(BaseModel):
    password: str = Password


def _not_found(username: str) -> Problem:
    return Problem(404, "account-not-found", "No such account", f"there is no account {username}")


def _invalid(exc: AccountError) -> Problem:
    name, _, message = str(exc).partition(":")
    field = {"unit": "unit_code"}.get(name.strip(), name.strip())
    return Problem(
        422,
        "invalid-account",
        "The account is not valid",
        str(exc),
        errors=[{"field": field, "location": "body", "pointer": f"#/{field}", "message": message.strip()}],
    )


async def _one(core: CoreDep, username: str) -> AccountOut:
    found = await account_rows(core.db, username)
    if not found:
        raise _not_found(username)
    return AccountOut.of(found[0], core.clock.now())


@router.get("", response_model=Page[AccountOut])
async def list_accounts(core: CoreDep, who: Admin, limit: Limit = 100, offset: Offset = 0) -> Page[AccountOut]:
    """Every console account with its role, unit, status and last sign-in."""
    rows = await account_rows(core.db)  # a county has tens of accounts: read all, page in memory
    now = core.clock.now()
    return Page(
        items=[AccountOut.of(a, now) for a in rows[offset : offset + limit]],
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.post("", status_code=201, response_model=AccountOut, responses=documented(409))
async def create_account(body: AccountIn, core: CoreDep, who: Admin, response: Response) -> AccountOut:
    """Add an account; a township officer needs the code of their township."""
    if await account_rows(core.db, body.username):
        raise Problem(409, "account-exists", "The account exists", f"there is already an account {body.username}")
    try:
        await core.accounts.create(
            body.username,
            body.password,
            role=body.role,
            display_name=body.display_name.strip(),
            unit_code=body.unit_code or None,
            actor=who.actor,
        )
    except AccountError as exc:
        raise _invalid(exc) from exc
    log.info("api.account_created", username=body.username, actor=who.actor)
    response.headers["Location"] = f"/api/v1/accounts/{body.username}"
    return await _one(core, body.username)


@router.get("/{username}", response_model=AccountOut, responses=documented(404))
async def get_account(username: Username, core: CoreDep, who: Admin) -> AccountOut:
    return await _one(core, username)


async def _set_active(core: CoreDep, who: Admin, username: str, active: bool) -> AccountOut:
    await _one(core, username)
    try:
        await core.accounts.set_active(username, active, actor=who.actor)
    except AccountError as exc:
        raise _invalid(exc) from exc
    return await _one(core, username)


@router.post("/{username}/disable", response_model=AccountOut, responses=documented(404))
async def disable_account(username: Username, core: CoreDep, who: Admin) -> AccountOut:
    """Stop the account from signing in; its sessions end at once."""
    return await _set_active(core, who, username, False)


@router.post("/{username}/enable", response_model=AccountOut, responses=documented(404))
async def enable_account(username: Username, core: CoreDep, who: Admin) -> AccountOut:
    return await _set_active(core, who, username, True)


@router.post("/{username}/password", status_code=204, responses=documented(404))
async def set_password(username: Username, body: PasswordIn, core: CoreDep, who: Admin) -> Response:
    """Set a new password (a reset): it also lifts a lock and ends the account's sessions."""
    await _one(core, username)
    try:
        await core.accounts.set_password(username, body.password, actor=who.actor)
    except AccountError as exc:
        raise _invalid(exc) from exc
    return Response(status_code=204)
