"""Who did something, as a person reads it: the audit keeps "user:<username>" or "api:<role>:<key digest>"; the
console shows the account's name (王值班), or which kind of API key it was."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole
from alerting.model.actor import Actor
from alerting.store.tables import Account


async def actor_names(s: AsyncSession, actors: Iterable[str]) -> dict[str, str]:
    """A readable name for each actor string; anything not recognised is shown as it is."""
    parsed = {text: Actor.parse(text) for text in set(actors)}
    users = {a.username for a in parsed.values() if a.username is not None}
    names: dict[str, str] = {}
    if users:
        rows = await s.execute(
            select(col(Account.username), col(Account.display_name)).where(col(Account.username).in_(users))
        )
        names = {username: display or username for username, display in rows}
    out = {}
    for text, actor in parsed.items():
        if actor.username is not None:
            # an account since removed: its username is all there is
            out[text] = names.get(actor.username, actor.username)
        elif (role := actor.api_role) is not None:
            label = ACCOUNT_ROLE_LABEL[AccountRole(role)] if role in AccountRole.__members__.values() else role
            out[text] = f"接口调用（{label}）"
        else:
            out[text] = text
    return out
