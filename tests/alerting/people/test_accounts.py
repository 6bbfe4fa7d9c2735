"""Console accounts: passwords, locks and sessions in AccountService, and the admin's pages and API around them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlmodel import col, select

from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.people.accounts import AccountError, AccountService, SignInFailed
from alerting.store.db import Database
from alerting.store.tables import Account, AuditEvent
from alerting.web.api.auth import key_label
from alerting.web.core import Core
from tests.alerting.web.test_api import DUTY, assert_problem, make_core, serve
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

ADMIN_KEY = {"X-API-Key": "k-admin-003"}
PASSWORDS = {"boss": "boss-pass-0001", "duty1": "duty-pass-0001", "town1": "town-pass-0001"}


@pytest.fixture
async def accounts(db: Database, clock: ManualClock, county: SmallCounty) -> AccountService:
    service = AccountService(db, clock)
    await service.create("boss", PASSWORDS["boss"], role=AccountRole.ADMIN, display_name="管理员", actor="cli:test")
    await service.create("duty1", PASSWORDS["duty1"], role=AccountRole.DUTY, display_name="王值班", actor="cli:test")
    return service


async def audit_kinds(db: Database, subject: str) -> list[tuple[str, str, str | None]]:
    async with db.session() as s:
        rows = (await s.execute(select(AuditEvent).where(col(AuditEvent.subject) == subject))).scalars()
        return [(e.kind, e.actor, e.data.get("reason")) for e in rows]


# --- AccountService -------------------------------------------------------------------------------------------


async def test_only_an_argon2_hash_of_the_password_is_stored(accounts: AccountService, db: Database) -> None:
    async with db.session() as s:
        stored = await s.get(Account, "duty1")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORDS["duty1"] not in stored.password_hash
    signed = await accounts.sign_in("duty1", PASSWORDS["duty1"])
    assert signed.principal.actor == "user:duty1"
    with pytest.raises(AccountError, match="password"):
        await accounts.create("short", "123456789", role=AccountRole.DUTY, actor="cli:test")


async def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(
    accounts: AccountService, clock: ManualClock, db: Database
) -> None:
    for _ in range(5):
        with pytest.raises(SignInFailed):
            await accounts.sign_in("duty1", "wrong-password-x")
    with pytest.raises(SignInFailed):  # the right password does not help while locked
        await accounts.sign_in("duty1", PASSWORDS["duty1"])
    clock.advance(minutes=14, seconds=59)
    with pytest.raises(SignInFailed):
        await accounts.sign_in("duty1", PASSWORDS["duty1"])
    clock.advance(seconds=1)
    assert (await accounts.sign_in("duty1", PASSWORDS["duty1"])).principal.role is AccountRole.DUTY
    reasons = [r for k, _, r in await audit_kinds(db, "user:duty1") if k == "account.sign_in_failed"]
    assert reasons == ["password"] * 5 + ["locked"] * 2


async def test_disabling_an_account_ends_its_session_at_once(accounts: AccountService) -> None:
    signed = await accounts.sign_in("duty1", PASSWORDS["duty1"])
    assert await accounts.session(signed.token) is not None
    await accounts.set_active("duty1", False, actor="user:boss")
    assert await accounts.session(signed.token) is None
    with pytest.raises(SignInFailed):
        await accounts.sign_in("duty1", PASSWORDS["duty1"])
    await accounts.set_active("duty1", True, actor="user:boss")
    assert await accounts.session(signed.token) is None  # re-enabling does not revive an ended session
    assert await accounts.sign_in("duty1", PASSWORDS["duty1"])


async def test_a_session_lasts_twelve_hours(accounts: AccountService, clock: ManualClock) -> None:
    signed = await accounts.sign_in("duty1", PASSWORDS["duty1"])
    clock.advance(hours=11, minutes=59)
    assert await accounts.session(signed.token) is not None
    clock.advance(minutes=1)
    assert await accounts.session(signed.token) is None


async def test_changing_ones_own_password_needs_the_current_one(accounts: AccountService, db: Database) -> None:
    signed = await accounts.sign_in("duty1", PASSWORDS["duty1"])
    with pytest.raises(AccountError, match="current"):
        await accounts.change_own_password("duty1", "not-the-password", "new-pass-00001")
    assert await accounts.session(signed.token) is not None  # a wrong attempt changes nothing
    await accounts.change_own_password("duty1", PASSWORDS["duty1"], "new-pass-00001")
    assert await accounts.session(signed.token) is None
    with pytest.raises(SignInFailed):
        await accounts.sign_in("duty1", PASSWORDS["duty1"])
    assert await accounts.sign_in("duty1", "new-pass-00001")
    kinds = [(k, a) for k, a, _ in await audit_kinds(db, "user:duty1")]
    assert ("account.password_change_refused", "user:duty1") in kinds
    assert ("account.password_set", "user:duty1") in kinds


async def test_guessing_the_current_password_through_a_session_locks_the_account(
    accounts: AccountService, clock: ManualClock
) -> None:
    signed = await accounts.sign_in("duty1", PASSWORDS["duty1"])
    for _ in range(5):
        with pytest.raises(AccountError, match="current"):
            await accounts.change_own_password("duty1", "a-wrong-guess", "new-pass-00001")
    assert await accounts.session(signed.token) is None  # the stolen session is over
    with pytest.raises(AccountError, match="locked"):
        await accounts.change_own_password("duty1", PASSWORDS["duty1"], "new-pass-00001")
    with pytest.raises(SignInFailed):
        await accounts.sign_in("duty1", PASSWORDS["duty1"])
    clock.advance(minutes=15)
    assert await accounts.sign_in("duty1", PASSWORDS["duty1"])


async def test_an_admin_cannot_disable_their_own_account(accounts: AccountService) -> None:
    with pytest.raises(AccountError, match="own account"):
        await accounts.set_active("boss", False, actor="user:boss")


# --- console pages -------------------------------------------------------------------------------------------


@pytest.fixture
async def core(db: Database, clock: ManualClock, accounts: AccountService) -> Core:
    return make_core(db, clock)


@pytest.fixture
async def web(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(core) as client:
        yield client


async def signed_in(web: httpx.AsyncClient, username: str, password: str | None = None) -> str:
    """Sign the client in and return the page's CSRF token."""
    web.cookies.clear()
    r = await web.post("/console/sign-in", data={"username": username, "password": password or PASSWORDS[username]})
    assert r.status_code == 303, r.text
    page = await web.get("/console/password")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def test_only_an_admin_opens_the_account_pages(web: httpx.AsyncClient, core: Core) -> None:
    await signed_in(web, "duty1")
    for url in ("/console/accounts", "/console/accounts/boss"):
        r = await web.get(url)
        assert r.status_code == 403
        assert "只有管理员可以管理账号" in r.text
    await signed_in(web, "boss")
    r = await web.get("/console/accounts")
    assert r.status_code == 200
    assert "王值班" in r.text and "县值班员" in r.text
    row = re.search(r'<tr data-username="duty1">(.*?)</tr>', r.text, re.S)
    assert row and "2026-07-01 10:00:00" in row.group(1)  # duty1's sign-in above, shown in Beijing time
    assert "凤凰镇（500238101）" in r.text  # the township choice for a new township officer


async def test_a_form_without_the_csrf_field_is_refused(web: httpx.AsyncClient, core: Core) -> None:
    await signed_in(web, "boss")
    form = {"username": "sneaky", "role": "admin", "password": "sneaky-pass-01"}
    r = await web.post("/console/accounts", data=form)
    assert r.status_code == 403
    assert "安全校验未通过" in r.text
    r = await web.post("/console/accounts/duty1/disable", data={"csrf": "forged"})
    assert r.status_code == 403
    names = [a.username for a in await core.accounts.list()]
    assert "sneaky" not in names
    assert next(a for a in await core.accounts.list() if a.username == "duty1").active


async def test_adding_an_account_names_each_bad_field(web: httpx.AsyncClient, core: Core) -> None:
    csrf = await signed_in(web, "boss")
    bad = {"csrf": csrf, "username": "duty1", "role": "township", "unit_code": "", "password": "short"}
    r = await web.post("/console/accounts", data=bad)
    assert r.status_code == 400
    assert "用户名 duty1 已被使用" in r.text
    assert "乡镇值班员必须选择所属乡镇（街道）" in r.text
    assert "密码至少 10 个字符，现在是 5 个" in r.text
    r = await web.post("/console/accounts", data=bad | {"username": "x y", "unit_code": "500238999"})
    assert "用户名为 2 到 64 个英文字母" in r.text
    assert "没有编码为 500238999 的乡镇（街道）" in r.text
    assert len(await core.accounts.list()) == 2  # nothing half-written

    good = {"csrf": csrf, "username": "town1", "display_name": "凤凰镇张三", "role": "township"}
    r = await web.post("/console/accounts", data=good | {"unit_code": "500238101", "password": PASSWORDS["town1"]})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/accounts/town1"
    page = await web.get("/console/accounts/town1")
    assert "已添加账号 town1" in page.text
    assert "乡镇值班员" in page.text and "凤凰镇（500238101）" in page.text
    assert ("account.created", "user:boss", None) in await audit_kinds(core.db, "user:town1")
    await signed_in(web, "town1")
    assert "凤凰镇张三 · 乡镇值班员（500238101）" in (await web.get("/console/password")).text


async def test_reset_disable_and_enable_from_the_account_page(web: httpx.AsyncClient, core: Core) -> None:
    duty = await core.accounts.sign_in("duty1", PASSWORDS["duty1"])
    csrf = await signed_in(web, "boss")
    r = await web.post("/console/accounts/duty1/password", data={"csrf": csrf, "password": "tooshort"})
    assert r.status_code == 400
    assert "密码至少 10 个字符" in r.text
    r = await web.post("/console/accounts/duty1/password", data={"csrf": csrf, "password": "fresh-pass-0001"})
    assert r.status_code == 303
    assert await core.accounts.session(duty.token) is None  # a reset signs the old sessions out
    duty = await core.accounts.sign_in("duty1", "fresh-pass-0001")

    r = await web.post("/console/accounts/duty1/disable", data={"csrf": csrf})
    assert r.status_code == 303
    assert await core.accounts.session(duty.token) is None
    page = await web.get("/console/accounts/duty1")
    assert "已停用" in page.text and "启用账号" in page.text
    r = await web.post("/console/accounts/duty1/enable", data={"csrf": csrf})
    assert r.status_code == 303
    assert "正常" in (await web.get("/console/accounts/duty1")).text
    r = await web.post("/console/accounts/boss/disable", data={"csrf": csrf})
    assert r.status_code == 400
    assert "不能停用自己" in r.text

    kinds = [(k, a) for k, a, _ in await audit_kinds(core.db, "user:duty1")]
    for kind in ("account.password_set", "account.disabled", "account.enabled"):
        assert (kind, "user:boss") in kinds
    history = (await web.get("/console/accounts/duty1")).text
    assert "停用" in history and "设置密码" in history and "登录" in history


async def test_anyone_signed_in_changes_their_own_password(web: httpx.AsyncClient, core: Core) -> None:
    csrf = await signed_in(web, "duty1")
    r = await web.post("/console/password", data={"csrf": csrf, "current": "wrong-one-000", "new": "x", "again": "y"})
    assert r.status_code == 400
    assert "密码至少 10 个字符" in r.text
    form = {"csrf": csrf, "current": "wrong-one-000", "new": "next-pass-0001", "again": "next-pass-0002"}
    r = await web.post("/console/password", data=form)
    assert "两次输入的新密码不一致" in r.text
    r = await web.post("/console/password", data=form | {"again": "next-pass-0001"})
    assert r.status_code == 400
    assert "当前密码不对" in r.text
    r = await web.post("/console/password", data=form | {"again": "next-pass-0001", "current": PASSWORDS["duty1"]})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/sign-in"
    assert (await web.get("/console/password")).status_code == 303  # signed out everywhere
    await signed_in(web, "duty1", "next-pass-0001")


# --- JSON API ------------------------------------------------------------------------------------------------


async def test_the_accounts_api_is_for_admin_keys(web: httpx.AsyncClient, core: Core) -> None:
    assert_problem(await web.get("/api/v1/accounts", headers=DUTY), 403)
    assert_problem(await web.get("/api/v1/accounts"), 401)
    r = await web.get("/api/v1/accounts?limit=1&offset=1", headers=ADMIN_KEY)
    assert r.status_code == 200
    body = r.json()
    assert (body["total"], [a["username"] for a in body["items"]]) == (2, ["duty1"])
    assert body["items"][0]["role_label"] == "县值班员"

    new = {"username": "town1", "display_name": "凤凰镇张三", "role": "township", "password": PASSWORDS["town1"]}
    problem = assert_problem(await web.post("/api/v1/accounts", json=new, headers=ADMIN_KEY), 422)
    assert problem["errors"][0]["field"] == "unit_code"
    short = assert_problem(await web.post("/api/v1/accounts", json=new | {"password": "short"}, headers=ADMIN_KEY), 422)
    assert short["errors"][0]["field"] == "password"
    r = await web.post("/api/v1/accounts", json=new | {"unit_code": "500238101"}, headers=ADMIN_KEY)
    assert r.status_code == 201, r.text
    assert (r.json()["unit_name"], r.json()["active"], r.headers["location"]) == (
        "凤凰镇",
        True,
        "/api/v1/accounts/town1",
    )
    assert "password" not in r.text and "hash" not in r.text
    assert_problem(await web.post("/api/v1/accounts", json=new | {"unit_code": "500238101"}, headers=ADMIN_KEY), 409)

    signed = await core.accounts.sign_in("town1", PASSWORDS["town1"])
    r = await web.post("/api/v1/accounts/town1/disable", headers=ADMIN_KEY)
    assert (r.status_code, r.json()["active"]) == (200, False)
    assert await core.accounts.session(signed.token) is None
    r = await web.post("/api/v1/accounts/town1/enable", headers=ADMIN_KEY)
    assert r.json()["active"] is True
    r = await web.post("/api/v1/accounts/town1/password", json={"password": "town-pass-0002"}, headers=ADMIN_KEY)
    assert r.status_code == 204
    assert await core.accounts.sign_in("town1", "town-pass-0002")
    assert_problem(await web.post("/api/v1/accounts/nobody/disable", headers=ADMIN_KEY), 404)
    assert_problem(await web.post("/api/v1/accounts/town1/disable", headers=DUTY), 403)

    kinds = [(k, a) for k, a, _ in await audit_kinds(core.db, "user:town1")]
    for kind in ("account.created", "account.disabled", "account.enabled", "account.password_set"):
        assert (kind, f"api:admin:{key_label('k-admin-003')}") in kinds
