"""What the board and action tests share: two townships, a sandbox engine, API keys and signed-in browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import insert

from alerting.model.access import AccountRole
from alerting.model.domain import Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import OrgUnit, Person, Responsibility
from alerting.web.app import create_app
from alerting.web.core import Core

FENGHUANG = "500238101"
NINGCHANG = "500238102"
DUTY = {"X-API-Key": "k-duty-0001"}
AUDITOR = {"X-API-Key": "k-aud-0002"}
TOWNSHIP = {"X-API-Key": "k-town-0004"}  # 凤凰镇's key
KEYS = {"k-duty-0001": "duty", "k-aud-0002": "auditor", "k-town-0004": f"township:{FENGHUANG}"}


async def add_ningchang(db: Database) -> None:
    """宁厂镇 beside the small county's 凤凰镇: one village with its head and a grid worker."""
    units: list[dict[str, Any]] = [
        {
            "code": NINGCHANG,
            "name": "宁厂镇",
            "kind": UnitKind.TOWNSHIP,
            "parent_code": "500238",
            "path": "/500238/500238102/",
        },
        {
            "code": "500238102001",
            "name": "宁河村",
            "kind": UnitKind.VILLAGE,
            "parent_code": NINGCHANG,
            "path": "/500238/500238102/500238102001/",
        },
    ]
    people = [
        {"id": "nc-duty", "name": "宁厂镇值班员", "phone": "+8613900000101", "active": True},
        {"id": "nc-head", "name": "宁河村主任", "phone": "+8613900000102", "active": True},
    ]
    duties = [
        {"unit_code": NINGCHANG, "person_id": "nc-duty", "role": Role.TOWNSHIP_DUTY.value, "rank": 0},
        {"unit_code": "500238102001", "person_id": "nc-head", "role": Role.VILLAGE_HEAD.value, "rank": 0},
    ]
    async with db.session() as s:
        await s.execute(insert(OrgUnit), units)
        await s.execute(insert(Person), people)
        await s.execute(insert(Responsibility), duties)


def alert_body(units: list[str], **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "level": "red",
        "hazard": "山洪",
        "title": "山洪预警",
        "text": "上游强降雨，河水暴涨。",
        "instructions": "立即转移沿河群众。",
        "units": units,
        "exercise": True,
    }
    return body | changes


@asynccontextmanager
async def api_client(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(core))
    async with httpx.AsyncClient(transport=transport, base_url="http://jy.test") as client:
        yield client


async def signed_in(
    core: Core, client: httpx.AsyncClient, name: str, role: AccountRole, unit: str | None = None
) -> str:
    """Make an account, put its session cookie in this client, and return the session's CSRF token."""
    await core.accounts.create(name, "pass-word-0001", role=role, display_name=name, unit_code=unit, actor="test")
    done = await core.accounts.sign_in(name, "pass-word-0001")
    client.cookies.set("jy_session", done.token)
    return done.csrf_token


async def issue(api: httpx.AsyncClient, units: list[str], **changes: Any) -> int:
    """Issue an alert through the API as the duty room; its id."""
    r = await api.post("/api/v1/alerts", json=alert_body(units, **changes), headers=DUTY)
    assert r.status_code == 201, r.text
    alert_id: int = r.json()["id"]
    return alert_id
