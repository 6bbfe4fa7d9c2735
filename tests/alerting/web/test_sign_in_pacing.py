"""Signing in from a duty room whose screens share one address, and a script guessing from one address.

The limiter counts every attempt per account and address, and wrong passwords per address (signin_pages). Its
clock is a number the test moves, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import insert

from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.people import accounts
from alerting.store.db import Database
from alerting.store.tables import Account
from alerting.web.app import create_app
from alerting.web.console.signin_pages import ACCOUNT_BURST, FAILURES_BURST, attempts_limit
from tests.harness import sandbox_engine

PASSWORD = "pass-word-0001"
ROOM = "10.20.0.1"  # the duty room's NAT address: every screen in it comes from here
ELSEWHERE = "10.30.0.9"


class Seconds:
    """The limiter's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def seconds() -> Seconds:
    return Seconds()


@pytest.fixture
async def app(db: Database, clock: ManualClock, seconds: Seconds, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The console with 100 duty accounts (duty-000 … duty-099), all with the same password.

    These tests sign in hundreds of times: argon2 at its lightest settings keeps that to seconds on a shared
    machine. The limiter is what is tested, and it never sees the hash."""
    light = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", light)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", light.hash("no such account"))
    hashed = light.hash(PASSWORD)
    rows = [
        {
            "username": f"duty-{n:03}",
            "display_name": f"值班员{n}",
            "role": AccountRole.DUTY.value,
            "password_hash": hashed,
            "created_at": clock.now(),
        }
        for n in range(100)
    ]
    async with db.session() as s:
        await s.execute(insert(Account), rows)
    app = create_app(sandbox_engine(db, clock).core)
    app.state.sign_in_attempts = attempts_limit(clock=seconds)
    return app


@asynccontextmanager
async def screen(app: FastAPI, address: str = ROOM) -> AsyncIterator[httpx.AsyncClient]:
    """One browser, its own cookies, coming from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://jy.test") as client:
        yield client


async def sign_in(app: FastAPI, username: str, password: str = PASSWORD, address: str = ROOM) -> httpx.Response:
    async with screen(app, address) as browser:
        data = {"username": username, "password": password}
        return await browser.post("/console/sign-in", data=data, follow_redirects=False)


async def test_a_duty_room_of_forty_screens_signs_in_at_once(app: FastAPI) -> None:
    names = [f"duty-{n:03}" for n in range(40)]
    answers = await asyncio.gather(*(sign_in(app, name) for name in names))  # the same instant, one address
    assert [r.status_code for r in answers] == [303] * 40
    assert all("jy_session" in r.headers["set-cookie"] for r in answers)


def test_a_hundred_screens_behind_one_address_are_never_slowed(seconds: Seconds) -> None:
    """The limiter alone (no password hashing): a right password costs the address nothing."""
    limit = attempts_limit(clock=seconds)
    assert [limit.wait(f"duty-{n:03}", ROOM) for n in range(100)] == [0.0] * 100


async def test_one_account_guessed_from_one_address_is_slowed_while_the_room_signs_in(
    app: FastAPI, seconds: Seconds
) -> None:
    statuses = [(await sign_in(app, "duty-000", "guess-guess")).status_code for _ in range(ACCOUNT_BURST)]
    assert statuses == [401] * ACCOUNT_BURST  # locked after LOCK_AFTER, still told no more than 401
    r = await sign_in(app, "duty-000", "guess-guess")
    assert r.status_code == 429 and r.headers["retry-after"] == "3"  # one attempt every three seconds
    assert "尝试过于频繁，请 3 秒后再试" in r.text and "jy_session" not in r.headers.get("set-cookie", "")
    assert (await sign_in(app, "duty-000 ", "guess-guess")).status_code == 429  # the same account, not a new count
    assert (await sign_in(app, "duty-001")).status_code == 303  # the colleague at the next screen
    seconds.now += 3
    assert (await sign_in(app, "duty-000", "guess-guess")).status_code == 401  # one more try, three seconds on
    # the guessing locked the account: the right password from another address does not open it either
    assert (await sign_in(app, "duty-000", address=ELSEWHERE)).status_code == 401


async def test_one_address_cycling_wrong_passwords_over_many_names_is_stopped(app: FastAPI, seconds: Seconds) -> None:
    names = [f"duty-{n:03}" for n in range(FAILURES_BURST)]
    statuses = [(await sign_in(app, name, "spring2026!")).status_code for name in names]
    assert statuses == [401] * FAILURES_BURST  # one guess per account: no account locks, no account count runs out
    for name in ("duty-050", "admin", "root"):
        r = await sign_in(app, name, "spring2026!")
        assert r.status_code == 429 and r.headers["retry-after"] == "10"
    # from this address even a right password waits: letting it through would tell a guesser which guess was right
    assert (await sign_in(app, "duty-060")).status_code == 429
    assert (await sign_in(app, "duty-060", address=ELSEWHERE)).status_code == 303  # other addresses are untouched
    seconds.now += 10
    assert (await sign_in(app, "duty-061")).status_code == 303  # ten seconds on, one attempt again
    assert (await sign_in(app, "duty-062", "spring2026!")).status_code == 401
    assert (await sign_in(app, "duty-063", "spring2026!")).status_code == 429


async def test_guesses_in_flight_when_the_count_runs_out_are_waited_off(app: FastAPI, seconds: Seconds) -> None:
    """Wrong passwords sent all at once all get through the check, and the address then waits off every one."""
    burst = FAILURES_BURST + 10
    answers = await asyncio.gather(*(sign_in(app, f"duty-{n:03}", "spring2026!") for n in range(burst)))
    assert {r.status_code for r in answers} <= {401, 429}
    through = sum(r.status_code == 401 for r in answers)
    r = await sign_in(app, "duty-099", "spring2026!")
    assert r.status_code == 429
    # each guess past the burst costs ten seconds more before the next one
    assert int(r.headers["retry-after"]) == 10 * (through - FAILURES_BURST + 1)
