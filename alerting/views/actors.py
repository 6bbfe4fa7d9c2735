"""Who did something, as a person reads it: the audit keeps "user:<username>" or "api:<role>:<key digest>"; the
console shows the account's name (王值班), or which kind of API key it was."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole
from alerting.store.tables import Account


async def actor_names(s: AsyncSession, actors: Iterable[str]) -> dict[str, str]:
    """A readable name for each actor string; anything not recognised is shown as it is."""
    wanted = set(actors)
    users = {a.removeprefix("user:") for a in wanted if a.startswith("user:")}
    names: dict[str, str] = {}
    if users:
        rows = await s.execute(
            select(col(Account.username), col(Account.display_name)).where(col(Account.username).in_(users))
        )
        names = {f"user:{username}": display or username for username, display in rows}
    out = {}
    for actor in wanted:
        if actor in names:
            out[actor] = names[actor]
        elif actor.startswith("user:"):
            out[actor] = actor.removeprefix("user:")  # an account since removed: its username is all there is
        elif actor.startswith("api:"):
            role = actor.split(":")[1]
            label = ACCOUNT_ROLE_LABEL[AccountRole(role)] if role in AccountRole.__members__.values() else role
            out[actor] = f"接口调用（{label}）"
        else:
            out[actor] = actor
    return out
