"""API keys and roles. duty, township and admin issue and act; auditors read; a township key sees its subtree.

A key is configured as `key:role`, or `key:township:<unit code>` for a township officer's key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole, Principal, unit_path
from alerting.model.actor import Actor
from alerting.web.api.problems import Problem
from alerting.web.core import Core

_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key; its role decides what it may do"
)
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


CoreDep = Annotated[Core, Depends(core_of)]


def key_label(key: str) -> str:
    """What the audit calls a key: a short digest, so the log (which auditors read) holds no part of the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def identify(api_keys: dict[str, str], presented: str) -> tuple[AccountRole, str | None, str] | None:
    """(role, unit code, key label) of the key presented. Compares every key in constant time."""
    found: tuple[AccountRole, str | None, str] | None = None
    for key, grant in api_keys.items():
        role, _, unit = grant.partition(":")
        if hmac.compare_digest(key.encode(), presented.encode()) and role in AccountRole.__members__.values():
            found = (AccountRole(role), unit or None, key_label(key))
    return found


async def caller(
    core: CoreDep,
    key: Annotated[str | None, Security(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    presented = key or (bearer.credentials if bearer else None)
    if not presented:
        raise Problem(
            401,
            "unauthenticated",
            "An API key is required",
            "send it in the X-API-Key header or as Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = identify(core.api_keys, presented)
    if found is None:
        raise Problem(401, "unauthenticated", "The API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    role, unit, label = found
    path = None
    if role is AccountRole.TOWNSHIP:
        async with core.db.session() as s:
            path = await unit_path(s, unit or "")
        if path is None:
            raise Problem(401, "unauthenticated", "The API key's unit does not exist", f"no unit has the code {unit}")
    return Principal(role, Actor.api_key(role.value, label).text, ACCOUNT_ROLE_LABEL[role], unit, path)


def require(*roles: AccountRole) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency letting only these roles through: 403 for any other valid key."""

    async def check(who: Annotated[Principal, Depends(caller)]) -> Principal:
        if who.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise Problem(403, "forbidden", "This key may not do that", f"needs role {allowed}; the key is {who.role}")
        return who

    return check


Reader = Annotated[Principal, Depends(caller)]
Issuer = Annotated[Principal, Depends(require(AccountRole.DUTY, AccountRole.TOWNSHIP, AccountRole.ADMIN))]
Admin = Annotated[Principal, Depends(require(AccountRole.ADMIN))]
