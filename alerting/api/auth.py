"""API keys and roles. duty and admin issue and cancel; every valid key may read."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from alerting.api.problems import Problem
from alerting.core import Core


class ApiRole(StrEnum):
    DUTY = "duty"
    AUDITOR = "auditor"
    ADMIN = "admin"


ISSUERS = (ApiRole.DUTY, ApiRole.ADMIN)

_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key; its role decides what it may do"
)
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


@dataclass(frozen=True)
class Caller:
    role: ApiRole
    actor: str  # what the audit records: "api:<role>:<first 6 characters of the key>"


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


CoreDep = Annotated[Core, Depends(core_of)]


def identify(api_keys: dict[str, str], presented: str) -> Caller | None:
    """The caller a key belongs to. Compares every key in constant time, so timing tells nothing."""
    found: Caller | None = None
    for key, role in api_keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()) and role in ApiRole.__members__.values():
            found = Caller(ApiRole(role), f"api:{role}:{key[:6]}")
    return found


async def caller(
    core: CoreDep,
    key: Annotated[str | None, Security(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
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
    return found


def require(*roles: ApiRole) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency letting only these roles through: 403 for any other valid key."""

    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise Problem(403, "forbidden", "This key may not do that", f"needs role {allowed}; the key is {who.role}")
        return who

    return check


Reader = Annotated[Caller, Depends(caller)]
Issuer = Annotated[Caller, Depends(require(*ISSUERS))]
