"""The directory in the console and the API: reading within scope, and importing files in two steps."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Person, Responsibility
from alerting.web.app import create_app
from alerting.web.core import Core
from config.directory.importer import FileImporter
from tests.alerting.web.test_api import make_core
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

ADMIN_KEY = {"X-API-Key": "k-admin-003"}
DUTY_KEY = {"X-API-Key": "k-duty-0001"}
AUDITOR_KEY = {"X-API-Key": "k-aud-0002"}
PEOPLE_HEADER = "编号,姓名,手机,单位代码,职责,顺位\n"
# a second township with a village and its head, so that scope has something to leave out
NINGCHANG = "代码,名称,类型,上级代码\n500238102,宁厂镇,乡镇,500238\n500238102001,宁厂村,村,500238102\n"
NINGCHANG_HEAD = PEOPLE_HEADER + "nc-head,宁厂村主任,13900003001,500238102001,村负责人,0\n"
PASSWORD = "a-long-password-1"


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    c = make_core(db, clock)
    c.directory = FileImporter(db, clock)
    for name, role, unit in (
        ("admin", AccountRole.ADMIN, None),
        ("duty", AccountRole.DUTY, None),
        ("auditor", AccountRole.AUDITOR, None),
        ("fenghuang", AccountRole.TOWNSHIP, county.township),
    ):
        await c.accounts.create(name, PASSWORD, role=role, display_name=name, unit_code=unit, actor="test")
    for kind, text in (("units", NINGCHANG), ("people", NINGCHANG_HEAD)):
        assert (await c.directory.apply(kind, f"{kind}.csv", text.encode(), actor="test")).applied
    return c


@asynccontextmanager
async def signed_in(core: Core, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    signed = await core.accounts.sign_in(username, PASSWORD)
    transport = httpx.ASGITransport(app=create_app(core))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://jy.test", cookies={"jy_session": signed.token}
    ) as client:
        yield client, signed.csrf_token


async def upload(client: httpx.AsyncClient, csrf: str, kind: str, name: str, text: str) -> httpx.Response:
    return await client.post(
        "/console/directory/import/check",
        data={"csrf": csrf, "kind": kind},
        files={"file": (name, text.encode(), "text/csv")},
    )


async def test_an_admin_sees_bad_rows_cannot_apply_them_and_applies_the_fixed_file(core: Core) -> None:
    bad = (
        PEOPLE_HEADER
        + "new-1,新网格员,13900001001,50023810100101,网格员,2\nnew-2,错手机,1390000,50023810100102,网格员,2\n"
    )
    async with signed_in(core, "admin") as (client, csrf):
        checked = await upload(client, csrf, "people", "新人员.csv", bad)
        assert checked.status_code == 422
        row = re.search(r'<td class="num">3</td><td>([^<]*)</td><td>([^<]*)</td>', checked.text)
        assert row is not None and row.group(1).startswith("phone"), checked.text
        assert "确认导入" not in checked.text
        assert 'name="token"' not in checked.text

        fixed = bad.replace("1390000,", "13900001002,")
        checked = await upload(client, csrf, "people", "新人员.csv", fixed)
        assert checked.status_code == 200
        assert "确认导入" in checked.text
        token = re.search(r'name="token" value="([^"]+)"', checked.text)
        assert token is not None
        async with core.db.session() as s:
            assert await s.get(Person, "new-1") is None  # the check wrote nothing

        applied = await client.post(
            "/console/directory/import/apply", data={"csrf": csrf, "token": token.group(1)}, follow_redirects=False
        )
        assert applied.status_code == 303
        assert applied.headers["location"] == "/console/directory/people"
        listed = await client.get("/console/directory/people", params={"q": "新网格员"})
        assert "13900001001" in listed.text

        again = await client.post("/console/directory/import/apply", data={"csrf": csrf, "token": token.group(1)})
        assert again.status_code == 400 and "重新上传" in again.text  # one confirmation, one import
    async with core.db.session() as s:
        event = (await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1))).scalar_one()
    assert (event.kind, event.actor, event.data["files"]) == ("directory.imported", "user:admin", ["新人员.csv"])
    assert event.data["people_created"] == 2


async def test_the_apply_step_needs_the_csrf_token_and_the_uploader(core: Core) -> None:
    text = PEOPLE_HEADER + "new-1,新网格员,13900001001,50023810100101,网格员,2\n"
    async with signed_in(core, "admin") as (client, csrf):
        checked = await upload(client, csrf, "people", "a.csv", text)
        token = re.search(r'name="token" value="([^"]+)"', checked.text)
        assert token is not None
        forged = await client.post("/console/directory/import/apply", data={"csrf": "wrong", "token": token.group(1)})
        assert forged.status_code == 403
    async with core.db.session() as s:
        assert await s.get(Person, "new-1") is None


async def test_the_duty_room_reads_the_directory_but_cannot_import(core: Core, county: SmallCounty) -> None:
    async with signed_in(core, "duty") as (client, csrf):
        page = await client.get("/console/directory")
        assert page.status_code == 200
        assert "巫溪县" in page.text and "凤凰镇" in page.text and "宁厂镇" in page.text
        assert "/console/directory/import" not in page.text
        assert (await client.get("/console/directory/import")).status_code == 403
        refused = await upload(client, csrf, "people", "a.csv", PEOPLE_HEADER + "x,某人,13900009999,,,\n")
        assert refused.status_code == 403
        unit = await client.get(f"/console/directory/units/{county.grids[0]}")
        assert "网格员甲" in unit.text and "+8613900000008" in unit.text  # the duty room sees numbers to call


async def test_a_township_officer_sees_only_their_subtree(core: Core, county: SmallCounty) -> None:
    async with signed_in(core, "fenghuang") as (client, _):
        home = await client.get("/console/directory")
        assert "凤凰镇" in home.text and "东坪村" in home.text
        assert "宁厂镇" not in home.text
        people = await client.get("/console/directory/people")
        assert "网格员甲" in people.text and "宁厂村主任" not in people.text
        assert "县值班室" not in people.text  # answers for the county, outside the township
        assert (await client.get("/console/directory/units/500238102")).status_code == 403
        found = await client.get("/console/directory", params={"q": "宁厂"})
        assert "宁厂村" not in found.text
        devices = await client.get("/console/directory/devices")
        assert "500238101001 预警喇叭" in devices.text
        rosters = await client.get("/console/directory/rosters")
        assert 'data-unit="500238101"' in rosters.text and 'data-unit="500238"' not in rosters.text


async def test_an_auditor_sees_phone_numbers_masked(core: Core, county: SmallCounty) -> None:
    async with signed_in(core, "auditor") as (client, _):
        page = await client.get("/console/directory/people", params={"q": "网格员甲"})
        assert "+86139****0008" in page.text and "+8613900000008" not in page.text
    assert (await (await _api(core)).get("/api/v1/people?q=网格员甲", headers=AUDITOR_KEY)).json()["items"][0][
        "phone"
    ] == "+86139****0008"


async def _api(core: Core) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(core)), base_url="http://jy.test")


async def test_the_rosters_show_who_is_on_duty_and_the_gaps(core: Core, county: SmallCounty) -> None:
    # the clock stands at 2026-07-01 10:00 in Shanghai; the roster covers 08:00–20:00 only
    roster = "单位代码,值班人员,顺位,开始,结束\n500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n"
    assert core.directory is not None
    assert (await core.directory.apply("roster", "r.csv", roster.encode(), actor="test")).applied
    async with await _api(core) as api:
        body = (await api.get("/api/v1/rosters", headers=DUTY_KEY)).json()
        uncovered = (await api.get("/api/v1/rosters?uncovered=true", headers=DUTY_KEY)).json()
    by_unit = {r["unit"]["code"]: r for r in body["items"]}
    assert body["total"] == 3  # the county and two townships
    fh = by_unit["500238101"]
    assert [s["name"] for s in fh["on_duty"]] == ["凤凰镇值班员"]
    assert [(g["starts_at"], g["ends_at"]) for g in fh["gaps"]] == [("2026-07-01T12:00:00Z", "2026-07-02T02:00:00Z")]
    assert by_unit["500238"]["has_roster"] is False and by_unit["500238"]["fallback"]["name"] == "县值班室"
    # 宁厂镇 has no roster and nobody with the township duty role: nobody to fall back to
    assert {r["unit"]["code"] for r in uncovered["items"]} == {"500238101", "500238102"}


async def test_the_api_reads_units_people_and_devices_in_scope(core: Core, county: SmallCounty) -> None:
    core.api_keys["k-town-0004"] = f"township:{county.township}"
    town = {"X-API-Key": "k-town-0004"}
    async with await _api(core) as api:
        village = (await api.get(f"/api/v1/units/{county.villages[0]}", headers=DUTY_KEY)).json()
        assert [(p["name"], p["rank"]) for p in village["people"]] == [("东坪村主任", 0), ("东坪村副主任", 1)]
        assert {d["id"] for d in village["devices"]} == {f"siren-{county.villages[0]}", f"bz-{county.villages[0]}"}
        assert [c["code"] for c in village["children"]] == list(county.grids[:2])
        assert [a["name"] for a in village["ancestors"]] == ["巫溪县", "凤凰镇"]

        page = (await api.get("/api/v1/people?limit=3&offset=3", headers=DUTY_KEY)).json()
        assert (page["total"], len(page["items"]), page["offset"]) == (11, 3, 3)
        theirs = (await api.get("/api/v1/people?limit=100", headers=town)).json()
        assert "nc-head" not in {p["id"] for p in theirs["items"]}
        outside = await api.get("/api/v1/units/500238102", headers=town)
        assert outside.status_code == 403 and outside.headers["content-type"] == "application/problem+json"
        assert (await api.get("/api/v1/devices?unit=500238102", headers=town)).status_code == 403
        assert (await api.get("/api/v1/units/999", headers=DUTY_KEY)).status_code == 404
        devices = (await api.get(f"/api/v1/devices?unit={county.villages[1]}", headers=DUTY_KEY)).json()
        assert devices["total"] == 2 and devices["items"][0]["place"] == "巫溪县 / 凤凰镇"


async def test_the_api_import_checks_dry_and_names_bad_rows_in_a_problem(core: Core) -> None:
    bad = PEOPLE_HEADER + "new-1,新网格员,13900001001,50023810100101,网格员,2\nnew-2,某人,13900001002,500238,厨师,5\n"
    files = {"file": ("p.csv", bad.encode(), "text/csv")}
    async with await _api(core) as api:
        refused = await api.post("/api/v1/directory/import?kind=people&dry_run=false", files=files, headers=DUTY_KEY)
        assert refused.status_code == 403
        rejected = await api.post("/api/v1/directory/import?kind=people&dry_run=false", files=files, headers=ADMIN_KEY)
        assert rejected.status_code == 422
        assert rejected.headers["content-type"] == "application/problem+json"
        assert [(e["row"], e["field"].split(" ")[0]) for e in rejected.json()["errors"]] == [(3, "role")]

        good = {"file": ("p.csv", bad.replace("厨师", "网格员").encode(), "text/csv")}
        dry = await api.post("/api/v1/directory/import?kind=people", files=good, headers=ADMIN_KEY)
        assert dry.status_code == 200 and dry.json()["applied"] is False
        assert dry.json()["counts"]["people_created"] == 2
        async with core.db.session() as s:
            assert await s.get(Person, "new-1") is None
        done = await api.post("/api/v1/directory/import?kind=people&dry_run=false", files=good, headers=ADMIN_KEY)
        assert done.status_code == 200 and done.json()["applied"] is True
    async with core.db.session() as s:
        assert await s.get(Person, "new-1") is not None


NEW_PRIMARY = PEOPLE_HEADER + "tw-new,凤凰镇新值班员,13900001009,500238101,乡镇值班员,0\n"


async def township_list(core: Core) -> list[tuple[str, int]]:
    async with core.db.session() as s:
        rows = await s.execute(
            select(col(Responsibility.person_id), col(Responsibility.rank))
            .where(col(Responsibility.unit_code) == "500238101")
            .order_by(col(Responsibility.rank))
        )
        return [(r.person_id, r.rank) for r in rows]


async def test_replacing_a_townships_list_is_a_choice_the_check_spells_out(core: Core) -> None:
    async with signed_in(core, "admin") as (client, csrf):
        form = await client.get("/console/directory/import")
        assert 'name="mode" value="add" checked' in form.text  # adding is the default; replacing is chosen

        added = await upload(client, csrf, "people", "凤凰镇.csv", NEW_PRIMARY)
        assert added.status_code == 422  # rank 0 is held by someone the file leaves in place
        assert "凤凰镇值班员 (tw-duty)" in added.text and "替换" in added.text
        assert 'name="mode" value="add"' in added.text  # a corrected file is checked the same way

        checked = await client.post(
            "/console/directory/import/check",
            data={"csrf": csrf, "kind": "people", "mode": "replace"},
            files={"file": ("凤凰镇.csv", NEW_PRIMARY.encode(), "text/csv")},
        )
        assert checked.status_code == 200, checked.text
        removals = re.search(r'data-testid="removals">(.*?)</section>', checked.text, re.S)
        assert removals is not None
        assert "导入后将移除 2 个负责关系" in removals.group(1)
        assert "凤凰镇 500238101: 凤凰镇值班员 (tw-duty), township_duty 乡镇值班员, rank 顺位 0" in removals.group(1)
        assert "凤凰镇备岗 (tw-backup)" in removals.group(1)
        assert await township_list(core) == [("tw-duty", 0), ("tw-backup", 1)]  # nothing written yet

        token = re.search(r'name="token" value="([^"]+)"', checked.text)
        assert token is not None
        applied = await client.post(
            "/console/directory/import/apply", data={"csrf": csrf, "token": token.group(1)}, follow_redirects=False
        )
        assert applied.status_code == 303
        notice = await client.get(applied.headers["location"])
        assert "已移除：凤凰镇 500238101: 凤凰镇值班员 (tw-duty)" in notice.text
    assert await township_list(core) == [("tw-new", 0)]


async def test_a_new_backup_is_added_without_removing_anyone(core: Core) -> None:
    backup = PEOPLE_HEADER + "tw-new,凤凰镇新备岗,13900001009,500238101,乡镇值班员,2\n"
    async with signed_in(core, "admin") as (client, csrf):
        checked = await upload(client, csrf, "people", "备岗.csv", backup)
        assert checked.status_code == 200 and 'data-testid="removals"' not in checked.text
        assert "只新增和更新，不移除任何人" in checked.text
        token = re.search(r'name="token" value="([^"]+)"', checked.text)
        assert token is not None
        await client.post("/console/directory/import/apply", data={"csrf": csrf, "token": token.group(1)})
    assert await township_list(core) == [("tw-duty", 0), ("tw-backup", 1), ("tw-new", 2)]


async def test_the_api_replaces_only_when_asked_and_names_who_it_removed(core: Core) -> None:
    files = {"file": ("p.csv", NEW_PRIMARY.encode(), "text/csv")}
    async with await _api(core) as api:
        refused = await api.post("/api/v1/directory/import?kind=people&dry_run=false", files=files, headers=ADMIN_KEY)
        assert refused.status_code == 422
        assert "tw-duty" in refused.json()["errors"][0]["message"]
        dry = await api.post("/api/v1/directory/import?kind=people&replace=true", files=files, headers=ADMIN_KEY)
        assert dry.status_code == 200, dry.text
        assert dry.json()["replace"] is True and dry.json()["applied"] is False
        assert [r.split(" (")[1].split(")")[0] for r in dry.json()["removed"]] == ["tw-duty", "tw-backup"]
        assert dry.json()["counts"]["responsibilities_removed"] == 2
        done = await api.post(
            "/api/v1/directory/import?kind=people&replace=true&dry_run=false", files=files, headers=ADMIN_KEY
        )
        assert done.status_code == 200 and done.json()["removed"] == dry.json()["removed"]
    assert await township_list(core) == [("tw-new", 0)]
