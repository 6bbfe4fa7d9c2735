"""Console accounts and their sessions. Passwords are argon2id hashes; sessions live in the database.

A browser holds a random session token in a cookie; the store keeps only its SHA-256, so a copy of
the database signs nobody in. Each session carries its own CSRF token, which every form posts back.
Five wrong passwords in a row lock an account for fifteen minutes. Every sign-in, failed sign-in
and sign-out is in the audit.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from alerting.audit import chain as audit
from alerting.model.access import AccountRole, Principal, unit_path
from alerting.model.actor import Actor
from alerting.model.clock import Clock
from alerting.store.db import Database
from alerting.store.tables import Account, OrgUnit, WebSession

log = structlog.get_logger()

SESSION_TTL = timedelta(hours=12)  # one duty shift and some
LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
MIN_PASSWORD = 10
MAX_DISPLAY_NAME = 100  # the column's length: PostgreSQL refuses longer, SQLite would keep it
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# verified against when the username is unknown, so a wrong name costs the same time as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(ValueError):
    """A bad account definition; the message names the field."""


class SignInFailed(Exception):
    """Wrong name or password, or a locked or disabled account. Deliberately says no more than that."""


@dataclass(frozen=True)
class SignedIn:
    token: str  # goes into the cookie; never stored
    csrf_token: str
    principal: Principal
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _principal(account: Account, path: str | None) -> Principal:
    return Principal(
        role=AccountRole(account.role),
        actor=Actor.account(account.username).text,
        name=account.display_name,
        unit_code=account.unit_code if account.role == AccountRole.TOWNSHIP else None,
        unit_path=path if account.role == AccountRole.TOWNSHIP else None,
    )


class AccountService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    async def create(
        self,
        username: str,
        password: str,
        *,
        role: AccountRole,
        display_name: str = "",
        unit_code: str | None = None,
        actor: str,
    ) -> Account:
        if not USERNAME.match(username):
            raise AccountError("username: 2 to 64 letters, digits, '.', '_' or '-'")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"password: at least {MIN_PASSWORD} characters")
        if len(display_name) > MAX_DISPLAY_NAME:
            raise AccountError(f"name: at most {MAX_DISPLAY_NAME} characters")
        if role is AccountRole.TOWNSHIP and not unit_code:
            raise AccountError("unit: a township officer needs the code of their township (--unit)")
        if role is not AccountRole.TOWNSHIP and unit_code:
            raise AccountError(f"unit: only a township officer is bound to a unit, not a {role.value} account")
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        now = self.clock.now()
        async with self.db.session() as s:
            if await s.get(Account, username) is not None:
                raise AccountError(f"username: {username} already exists")
            if unit_code and await s.get(OrgUnit, unit_code) is None:
                raise AccountError(f"unit: no unit has the code {unit_code}")
            account = Account(
                username=username,
                display_name=display_name or username,
                role=role.value,
                unit_code=unit_code,
                password_hash=password_hash,
                created_at=now,
            )
            s.add(account)
            await audit.record(
                s,
                "account.created",
                actor=actor,
                at=now,
                subject=Actor.account(username).text,
                data={"role": role.value, "unit": unit_code},
            )
        log.info("account.created", username=username, role=role.value)
        return account

    async def set_password(self, username: str, password: str, *, actor: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"password: at least {MIN_PASSWORD} characters")
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        now = self.clock.now()
        async with self.db.session() as s:
            account = await s.get(Account, username)
            if account is None:
                raise AccountError(f"username: no account {username}")
            account.password_hash = password_hash
            account.failed_sign_ins, account.locked_until = 0, None
            s.add(account)
            await _end_sessions(s, username, now)
            await audit.record(s, "account.password_set", actor=actor, at=now, subject=Actor.account(username).text)

    async def change_own_password(self, username: str, current: str, new: str) -> None:
        """Someone changing their own password proves they know the current one; every session ends."""
        async with self.db.session() as s:
            account = await s.get(Account, username)
            stored = account.password_hash if account else _DUMMY_HASH
        matches = await asyncio.to_thread(_password_matches, stored, current)
        now = self.clock.now()
        if account is not None and _locked(account, now):
            raise AccountError("current: too many wrong passwords; the account is locked for a while")
        if not matches:
            # guessing through a stolen session counts like guessing at the sign-in page, lock and all
            async with self.db.session() as s:
                row = await s.get(Account, username, with_for_update=True)
                if row is not None:
                    row.failed_sign_ins += 1
                    if row.failed_sign_ins >= LOCK_AFTER:
                        row.locked_until = now + LOCK_FOR
                        await _end_sessions(s, username, now)
                    s.add(row)
                actor = Actor.account(username).text
                await audit.record(s, "account.password_change_refused", actor=actor, at=now, subject=actor)
            raise AccountError("current: the current password is wrong")
        if new == current:
            raise AccountError("password: the new password must differ from the current one")
        await self.set_password(username, new, actor=Actor.account(username).text)

    async def set_active(self, username: str, active: bool, *, actor: str) -> None:
        if not active and actor == Actor.account(username).text:
            raise AccountError("username: an administrator cannot disable their own account")
        now = self.clock.now()
        async with self.db.session() as s:
            account = await s.get(Account, username)
            if account is None:
                raise AccountError(f"username: no account {username}")
            account.active = active
            s.add(account)
            if not active:
                await _end_sessions(s, username, now)
            kind = "account.enabled" if active else "account.disabled"
            await audit.record(s, kind, actor=actor, at=now, subject=Actor.account(username).text)

    async def list(self) -> list[Account]:
        async with self.db.session() as s:
            return list((await s.execute(select(Account).order_by(col(Account.username)))).scalars())

    async def sign_in(self, username: str, password: str, *, client: str | None = None) -> SignedIn:
        """A new session, or SignInFailed. The audit records both outcomes with the client address."""
        username = username.strip()[:64]
        async with self.db.session() as s:
            account = await s.get(Account, username)
            stored = account.password_hash if account else _DUMMY_HASH
        ok = await asyncio.to_thread(_password_matches, stored, password)  # ~50 ms of CPU, off the loop
        rehash = ok and _hasher.check_needs_rehash(stored)
        new_hash = await asyncio.to_thread(_hasher.hash, password) if rehash else None
        now = self.clock.now()
        async with self.db.session() as s:
            account = await s.get(Account, username, with_for_update=True)
            refused = _refusal(account, ok, now)
            if account is None or refused:
                await _record_failure(s, username, account, refused or "unknown", client, now)
                signed_in = None
            else:
                if new_hash:
                    account.password_hash = new_hash
                signed_in = await _open_session(s, account, client, now)
        if signed_in is None:  # raised after the commit, so the failure and any lock are kept
            raise SignInFailed("用户名或密码不对，或账号已停用、暂时锁定")
        log.info("account.signed_in", username=username)
        return signed_in

    async def session(self, token: str) -> tuple[Principal, str] | None:
        """The principal and CSRF token of a live session, or None for an unknown, ended or expired one."""
        now = self.clock.now()
        async with self.db.session() as s:
            row = await s.get(WebSession, _digest(token))
            if row is None or row.ended_at is not None or row.expires_at <= now:
                return None
            account = await s.get(Account, row.username)
            if account is None or not account.active:
                return None
            path = await unit_path(s, account.unit_code) if account.unit_code else None
            return _principal(account, path), row.csrf_token

    async def sign_out(self, token: str) -> None:
        now = self.clock.now()
        async with self.db.session() as s:
            row = await s.get(WebSession, _digest(token), with_for_update=True)
            if row is None or row.ended_at is not None:
                return
            row.ended_at = now
            s.add(row)
            actor = Actor.account(row.username).text
            await audit.record(s, "account.signed_out", actor=actor, at=now, subject=actor)


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _locked(account: Account, now: datetime) -> bool:
    return account.locked_until is not None and account.locked_until > now


def _refusal(account: Account | None, password_ok: bool, now: datetime) -> str | None:
    """Why this sign-in is refused (for the audit, never for the page), or None."""
    if account is None:
        return "unknown"
    if not account.active:
        return "disabled"
    if _locked(account, now):
        return "locked"
    return None if password_ok else "password"


async def _record_failure(
    s: AsyncSession, username: str, account: Account | None, reason: str, client: str | None, now: datetime
) -> None:
    if account is not None and reason == "password":
        account.failed_sign_ins += 1
        if account.failed_sign_ins >= LOCK_AFTER:
            account.locked_until = now + LOCK_FOR
        s.add(account)
    actor = Actor.account(username).text
    data = {"reason": reason, "client": client}
    await audit.record(s, "account.sign_in_failed", actor=actor, at=now, subject=actor, data=data)
    log.warning("account.sign_in_failed", username=username, reason=reason)


async def _open_session(s: AsyncSession, account: Account, client: str | None, now: datetime) -> SignedIn:
    account.failed_sign_ins, account.locked_until = 0, None
    s.add(account)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + SESSION_TTL
    s.add(
        WebSession(
            token_hash=_digest(token), username=account.username, csrf_token=csrf, created_at=now, expires_at=expires
        )
    )
    actor = Actor.account(account.username).text
    data = {"client": client, "role": account.role}
    await audit.record(s, "account.signed_in", actor=actor, at=now, subject=actor, data=data)
    path = await unit_path(s, account.unit_code) if account.unit_code else None
    return SignedIn(token, csrf, _principal(account, path), expires)


async def _end_sessions(s: AsyncSession, username: str, now: datetime) -> None:
    await s.execute(
        update(WebSession)
        .where(col(WebSession.username) == username, col(WebSession.ended_at).is_(None))
        .values(ended_at=now)
    )
