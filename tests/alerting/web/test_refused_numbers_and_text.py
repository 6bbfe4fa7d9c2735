"""Numbers no row can have and words nobody could read are refused at the door, naming what was wrong, and
nothing of the request is written: the duty room's API clients get problem+json, the console's officer a message."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Delivery
from alerting.web.api.numbers import ROW_NUMBER_MAX
from alerting.web.core import Core
from tests.alerting.web.test_api import assert_problem, make_core, rainstorm, serve
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

ADMIN = {"X-API-Key": "k-admin-003"}
DUTY = {"X-API-Key": "k-duty-0001"}
HUGE = "9" * 5000  # more digits than Python turns into an int by default
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    return make_core(db, clock)


@pytest.fixture
async def api(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(core) as client:
        yield client


async def count(db: Database, table: type[Alert] | type[AuditEvent] | type[Delivery]) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


def named(body: dict[str, Any], field: str, location: str) -> str:
    """The message of the error that names `field` in `location`; fails if none does."""
    found = [e for e in body.get("errors", []) if e["field"] == field and e["location"] == location]
    assert found, body
    message: str = found[0]["message"]
    return message


# ---- numbers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field", "location"),
    [
        ("/api/v1/alerts/99999999999999999999999", "alert_id", "path"),
        ("/api/v1/alerts/9223372036854775808", "alert_id", "path"),
        (f"/api/v1/alerts/{ROW_NUMBER_MAX + 1}", "alert_id", "path"),
        (f"/api/v1/alerts/{HUGE}/recipients", "alert_id", "path"),
        ("/api/v1/alerts?offset=100000000000000000000", "offset", "query"),
        (f"/api/v1/alerts?offset={HUGE}", "offset", "query"),
        ("/api/v1/audit?offset=100000000000000000000", "offset", "query"),
        ("/api/v1/audit?alert_id=9223372036854775808", "alert_id", "query"),
        ("/api/v1/alerts/1/report?recipient_offset=9223372036854775808", "recipient_offset", "query"),
        ("/api/v1/sandbox/outbox?offset=9223372036854775807", "offset", "query"),
    ],
)
async def test_a_number_out_of_range_is_a_422_naming_the_parameter(
    api: httpx.AsyncClient, url: str, field: str, location: str
) -> None:
    r = await api.get(url, headers=ADMIN)
    body = assert_problem(r, 422)
    assert field in body["detail"]
    named(body, field, location)


async def test_the_largest_alert_number_is_simply_not_found(api: httpx.AsyncClient) -> None:
    r = await api.get(f"/api/v1/alerts/{ROW_NUMBER_MAX}", headers=ADMIN)
    assert assert_problem(r, 404)["detail"] == f"there is no alert {ROW_NUMBER_MAX}"
    r = await api.get("/api/v1/alerts", params={"offset": ROW_NUMBER_MAX}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["items"] == []


def _fill(path: str, parameters: list[dict[str, Any]], target: str, value: int) -> str:
    """`path` with every path parameter filled: `target` with `value`, the others with a plausible value."""
    for p in parameters:
        if p["in"] == "path":
            plain = "1" if p["schema"].get("type") == "integer" else "x"
            path = path.replace("{" + p["name"] + "}", str(value) if p["name"] == target else plain)
    return path


async def test_every_integer_in_a_path_or_query_is_bounded_and_refused_past_its_bound(api: httpx.AsyncClient) -> None:
    """Read from /openapi.json, so a route added later is held to it as well."""
    schema = (await api.get("/openapi.json")).json()
    checked: list[str] = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for p in operation.get("parameters", []):
                # Optional numbers are anyOf [integer, null]
                types = [p["schema"], *p["schema"].get("anyOf", [])]
                ints = [t for t in types if t.get("type") == "integer"]
                if p["in"] not in ("path", "query") or not ints:
                    continue
                maximum = ints[0].get("maximum")
                where = f"{method.upper()} {path} {p['in']} {p['name']}"
                assert maximum is not None and maximum <= 2**63 - 1, f"{where} has no upper bound"
                url = _fill(path, operation["parameters"], p["name"], maximum + 1)
                params = {p["name"]: maximum + 1} if p["in"] == "query" else {}
                r = await api.request(method.upper(), url, params=params, headers=ADMIN, json={})
                body = assert_problem(r, 422)
                named(body, p["name"], p["in"])
                checked.append(where)
    assert len(checked) >= 20, checked  # every list's offset and limit and every alert number, at the least


async def test_the_console_answers_a_number_no_alert_can_have_with_its_not_found_page(
    core: Core, api: httpx.AsyncClient
) -> None:
    await core.accounts.create("duty", "duty-password-1", role=AccountRole.DUTY, actor="test")
    r = await api.post("/console/sign-in", data={"username": "duty", "password": "duty-password-1"})
    assert r.status_code == 303, r.text
    # a number with more digits than any alert's matches no page at all; a shorter one past the last is no alert
    for url, says in (
        ("/console/alerts/99999999999999999999", "找不到这个页面。"),
        (f"/console/alerts/{HUGE}", "找不到这个页面。"),
        ("/console/review/9223372036854775808/report.csv", "找不到这个页面。"),
        (f"/console/alerts/{ROW_NUMBER_MAX + 1}", f"没有编号为 {ROW_NUMBER_MAX + 1} 的预警"),
        ("/console/alerts/0", "没有编号为 0 的预警"),
        ("/console/review/9999999999", "没有编号为 9999999999 的预警"),
    ):
        r = await api.get(url)
        assert r.status_code == 404, (url, r.text[:300])
        assert "text/html" in r.headers["content-type"]
        assert says in r.text, url
    r = await api.get("/console/sandbox/outbox", params={"alert_id": "999999999999"})
    assert r.status_code == 422
    assert f"预警编号应是 1 到 {ROW_NUMBER_MAX} 之间的整数" in r.text


# ---- text ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"title": "凤凰镇\x00强降雨"}, "title", "the control character U+0000 at position 4"),
        ({"title": "凤凰镇\n强降雨"}, "title", "a line break at position 4"),
        ({"text": "   "}, "text", "must not be blank"),
        ({"text": "\t\n "}, "text", "must not be blank"),
        ({"text": "预计\x1b[2J降雨"}, "text", "the control character U+001B at position 3"),
        ({"instructions": "转移\x7f"}, "instructions", "the control character U+007F at position 3"),
        ({"instructions": "  "}, "instructions", "must not be blank"),
        ({"hazard": "暴雨\x00"}, "hazard", "U+0000"),
        ({"units": ["500238101001\x00"]}, "units.0", "U+0000"),
    ],
)
async def test_an_alert_with_broken_or_blank_words_is_refused_naming_the_field_and_nothing_is_written(
    api: httpx.AsyncClient, db: Database, changes: dict[str, Any], field: str, says: str
) -> None:
    audited = await count(db, AuditEvent)
    r = await api.post("/api/v1/alerts", json=rainstorm(**changes), headers=DUTY)
    body = assert_problem(r, 422)
    assert says in named(body, field, "body")
    assert (await count(db, Alert), await count(db, AuditEvent)) == (0, audited)


async def test_a_text_in_paragraphs_is_issued_as_it_was_written(api: httpx.AsyncClient) -> None:
    text = "预计未来3小时降雨超过100毫米。\r\n\r\n沿河低洼处：\t立即转移。"
    r = await api.post("/api/v1/alerts", json=rainstorm(text=text, instructions=""), headers=DUTY)
    assert r.status_code == 201, r.text
    alert = (await api.get(r.json()["links"]["self"], headers=DUTY)).json()
    assert (alert["text"], alert["instructions"]) == (text, "")


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"title": ""}, "title", "must not be blank"),
        ({"title": "  "}, "title", "must not be blank"),
        ({"text": ""}, "text", "must not be blank"),
        ({"title": "更新\x00"}, "title", "U+0000"),
    ],
)
async def test_an_update_that_would_blank_or_break_the_warning_is_refused_and_the_alert_stays(
    api: httpx.AsyncClient, db: Database, change: dict[str, str], field: str, says: str
) -> None:
    issued = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()
    audited = await count(db, AuditEvent)
    r = await api.post(f"/api/v1/alerts/{issued['id']}/update", json=change, headers=DUTY)
    assert says in named(assert_problem(r, 422), field, "body")
    still = (await api.get(issued["links"]["self"], headers=DUTY)).json()
    assert (still["status"], still["title"]) == ("active", rainstorm()["title"])
    assert (await count(db, Alert), await count(db, AuditEvent)) == (1, audited)


async def test_a_lift_reason_with_a_control_character_is_refused_and_the_alert_stays_active(
    api: httpx.AsyncClient,
) -> None:
    issued = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()
    r = await api.post(issued["links"]["cancel"], json={"reason": "雨停\x00"}, headers=DUTY)
    assert "U+0000" in named(assert_problem(r, 422), "reason", "body")
    r = await api.post(issued["links"]["cancel"], json={"reason": "   "}, headers=DUTY)
    assert "must not be blank" in named(assert_problem(r, 422), "reason", "body")
    assert (await api.get(issued["links"]["self"], headers=DUTY)).json()["status"] == "active"


async def test_the_console_form_refuses_the_same_with_a_message_on_the_form(
    core: Core, api: httpx.AsyncClient, db: Database
) -> None:
    await core.accounts.create("duty", "duty-password-1", role=AccountRole.DUTY, actor="test")
    r = await api.post("/console/sign-in", data={"username": "duty", "password": "duty-password-1"})
    assert r.status_code == 303, r.text
    page = await api.get("/console/alerts/new")
    found = CSRF.search(page.text)
    assert found, page.text
    form = {
        "csrf": found.group(1),
        "level": "yellow",
        "hazard": "暴雨",
        "title": "东坪村暴雨\x07黄色预警",
        "text": "预计未来6小时降雨量将达50毫米以上。",
        "instructions": "加强\x00巡查。",
        "units": ["500238101001"],
    }
    for action in ("/console/alerts/preview", "/console/alerts"):
        r = await api.post(action, data=form)
        assert r.status_code == 422, r.text[:500]
        assert "标题的第 6 个字符是不可见的控制字符（U+0007），请删除后再试" in r.text
        assert "防御指引的第 3 个字符是不可见的控制字符（U+0000），请删除后再试" in r.text
    r = await api.post(
        "/console/alerts", data=form | {"title": "东坪村暴雨黄色预警", "text": "   ", "instructions": ""}
    )
    assert r.status_code == 422
    assert "请填写预警内容" in r.text
    assert await count(db, Alert) == 0


@pytest.mark.parametrize(
    ("url", "field", "location"),
    [
        ("/api/v1/units?q=%00", "q", "query"),
        ("/api/v1/units?parent=5002%00", "parent", "query"),
        ("/api/v1/units/%00", "code", "path"),
        ("/api/v1/people?q=%00", "q", "query"),
        ("/api/v1/devices?q=a%00b", "q", "query"),
        ("/api/v1/audit?actor=%00", "actor", "query"),
        ("/api/v1/accounts/%00", "username", "path"),
    ],
)
async def test_a_nul_in_a_path_or_query_is_a_422_naming_it_on_either_database(
    api: httpx.AsyncClient, url: str, field: str, location: str
) -> None:
    # PostgreSQL cannot hold U+0000 in text: before the check, each of these was a 500 there
    r = await api.get(url, headers=ADMIN)
    assert "U+0000" in named(assert_problem(r, 422), field, location)


async def test_ids_and_names_in_bodies_hold_no_control_characters(api: httpx.AsyncClient, db: Database) -> None:
    issued = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()
    r = await api.post(f"/api/v1/alerts/{issued['id']}/call-again", json={"target_ids": ["\x00"]}, headers=DUTY)
    assert "U+0000" in named(assert_problem(r, 422), "target_ids.0", "body")
    account = {"username": "ningchang", "display_name": "宁厂\x00", "role": "duty", "password": "pass-word-0001"}
    r = await api.post("/api/v1/accounts", json=account, headers=ADMIN)
    assert "U+0000" in named(assert_problem(r, 422), "display_name", "body")
    assert (await api.get("/api/v1/accounts/ningchang", headers=ADMIN)).status_code == 404


async def test_the_console_refuses_a_recipient_id_with_a_nul_as_no_such_recipient(
    core: Core, api: httpx.AsyncClient, db: Database
) -> None:
    issued = (await api.post("/api/v1/alerts", json=rainstorm(), headers=DUTY)).json()
    await core.accounts.create("duty", "duty-password-1", role=AccountRole.DUTY, actor="test")
    r = await api.post("/console/sign-in", data={"username": "duty", "password": "duty-password-1"})
    assert r.status_code == 303, r.text
    found = CSRF.search((await api.get(f"/console/alerts/{issued['id']}")).text)
    assert found
    sent = await count(db, Delivery)
    r = await api.post(f"/console/alerts/{issued['id']}/call-again", data={"csrf": found.group(1), "target_id": "\x00"})
    assert r.status_code == 404
    assert "没有编号为" in r.text and "该责任人" in r.text
    assert await count(db, Delivery) == sent
