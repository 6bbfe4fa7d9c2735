"""Console forms with a control character in them: refused with a word on the page, never a 500 (PostgreSQL
cannot store a NUL at all), and nothing written."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from alerting.model.access import AccountRole
from alerting.store.tables import Account
from config.wiring import AssembledEngine
from tests.alerting.board_setup import signed_in

pytestmark = pytest.mark.both_databases


async def test_a_user_name_with_a_nul_is_a_failed_sign_in(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    r = await api.post("/console/sign-in", data={"username": "wang\x00", "password": "whatever-0001"})
    assert r.status_code == 401
    assert "控制字符" in r.text


async def test_a_display_name_with_a_control_character_is_refused_on_the_form(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    csrf = await signed_in(engine.core, api, "admin1", AccountRole.ADMIN)
    async with engine.db.session() as s:
        before = await s.scalar(select(func.count()).select_from(Account))
    r = await api.post(
        "/console/accounts",
        data={
            "csrf": csrf,
            "username": "li.duty",
            "display_name": "李\x00值班",
            "role": "duty",
            "password": "a-long-pass-0001",
        },
        follow_redirects=False,
    )
    assert r.status_code < 500
    assert "姓名不能含有控制字符" in r.text and "U+0000" in r.text
    async with engine.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Account)) == before
