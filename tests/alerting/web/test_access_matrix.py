"""Who may call what, for every route the app serves, read from its route table.

Every route must have a rule below; a route added without one fails `test_every_route_has_a_rule`, so a new
page or endpoint cannot slip past these checks. For each rule the matrix tries, in-process:
nobody signed in, an auditor, a township officer (凤凰镇) reaching for 宁厂镇, and forged console posts.
"Nothing written" is checked by comparing every table's rows before and after the request.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlmodel import SQLModel, col

import alerting.store.tables  # noqa: F401  (registers the tables on the metadata)
from alerting.model.access import AccountRole, Principal
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.store.db import Database
from alerting.store.tables import Delivery, Target
from alerting.web.app import create_app
from alerting.web.console.board_pages import board_stream
from config.wiring import AssembledEngine
from tests.alerting.board_setup import DUTY, FENGHUANG, NINGCHANG, add_ningchang, alert_body
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

PROBLEM = "application/problem+json"
PASSWORD = "pass-word-0001"
NEW_PASSWORD = "another-pass-0002"
KEYS = {
    "k-duty-0001": "duty",
    "k-aud-0002": "auditor",
    "k-admin-003": "admin",
    "k-town-0004": f"township:{FENGHUANG}",
}
AUDITOR_KEY = {"X-API-Key": "k-aud-0002"}
TOWNSHIP_KEY = {"X-API-Key": "k-town-0004"}
SKIPPED = ("/static", "/docs", "/openapi.json", "/healthz", "/ack/", "/webhooks/")
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
NC_TITLE = "宁厂镇独有的山洪预警"
SHARED_TITLE = "两镇共同的暴雨预警"
NC_REASON = "宁厂镇值班员电话回复已转移"
NC_VILLAGE = "500238102001"  # 宁河村


@dataclass(frozen=True)
class Probe:
    """The values a request carries: path parameters and the units of an issue form."""

    alert_id: int
    target_id: str
    code: str
    username: str
    units: list[str]

    def url(self, path: str) -> str:
        values = {
            "alert_id": str(self.alert_id),
            "target_id": self.target_id,
            "code": self.code,
            "username": self.username,
            "fmt": "csv",
        }

        def fill(m: re.Match[str]) -> str:
            assert m.group(1) in values, f"{path}: no probe value for the path parameter {m.group(1)}"
            return values[m.group(1)]

        return PARAM.sub(fill, path)


Body = Callable[[Probe], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    body: Body | None = None  # the request's content for a POST: a valid one, so only access can refuse it
    public: str = ""  # why it is open to anyone
    anyone_signed_in: str = ""  # why an auditor or township officer may post here (their own session)
    stream: str = ""  # why the generic walk does not read it (checked on its own below)
    admin: bool = False  # for administrators only: accounts and the directory import


def _issue_json(p: Probe) -> dict[str, Any]:
    return {"json": alert_body(p.units)}


def _issue_form(p: Probe) -> dict[str, Any]:
    form = {k: v for k, v in alert_body(p.units).items() if k not in ("units", "exercise")}
    return {"data": {**form, "units": p.units, "exercise": "1", "confirm_red": "1"}}


def _people_file(p: Probe) -> dict[str, Any]:
    text = f"编号,姓名,手机,单位代码,职责,顺位\nnew-1,新网格员,13900009999,{p.units[0]},网格员,1\n"
    return {"files": {"file": ("people.csv", text.encode(), "text/csv")}}


def _json(value: dict[str, Any]) -> Body:
    return lambda p: {"json": value}


def _form(value: dict[str, str]) -> Body:
    return lambda p: {"data": dict(value)}


def _cap_message(p: Probe) -> dict[str, Any]:
    """A CAP drill message for the probe's units (POST /api/v1/cap)."""
    areas = "".join(f"<geocode><valueName>行政区划代码</valueName><value>{u}</value></geocode>" for u in p.units)
    xml = (
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
        f"<identifier>matrix-{'-'.join(p.units)}</identifier><sender>qxt</sender>"
        "<sent>2026-07-04T08:30:00+08:00</sent><status>Exercise</status><msgType>Alert</msgType><scope>Public</scope>"
        "<info><category>Met</category><event>暴雨</event><urgency>Immediate</urgency><severity>Severe</severity>"
        f"<certainty>Likely</certainty><headline>暴雨预警</headline><area><areaDesc>演练</areaDesc>{areas}</area></info>"
        "</alert>"
    )
    return {"content": xml.encode()}


def _cap_upload(p: Probe) -> dict[str, Any]:
    return {"files": {"file": ("cap.xml", _cap_message(p)["content"], "application/cap+xml")}}


def _cap_confirmed(p: Probe) -> dict[str, Any]:
    return {"data": {"message": base64.b64encode(_cap_message(p)["content"]).decode(), "confirm_red": "1"}}


NO_CONTENT: Body = lambda p: {}  # noqa: E731
SEE = Rule()
ADMIN = Rule(admin=True)
ALERT = "/console/alerts/{alert_id:alert}"
RULES: dict[tuple[str, str], Rule] = {
    # ---- the JSON API (API keys) ----
    ("POST", "/api/v1/alerts"): Rule(_issue_json),
    ("GET", "/api/v1/alerts"): SEE,
    ("GET", "/api/v1/alerts/{alert_id}"): SEE,
    ("POST", "/api/v1/alerts/{alert_id}/cancel"): Rule(_json({"reason": "雨停"})),
    ("GET", "/api/v1/alerts/{alert_id}/recipients"): SEE,
    ("POST", "/api/v1/alerts/{alert_id}/update"): Rule(_json({"level": "orange"})),
    ("GET", "/api/v1/board"): SEE,
    ("POST", "/api/v1/alerts/{alert_id}/call-again"): Rule(_json({"all_silent": True})),
    ("POST", "/api/v1/alerts/{alert_id}/recipients/{target_id}/answer"): Rule(_json({"reason": "已电话确认"})),
    ("POST", "/api/v1/alerts/{alert_id}/recipients/{target_id}/call"): Rule(_json({"outcome": "no_answer"})),
    ("GET", "/api/v1/units"): SEE,
    ("GET", "/api/v1/warning-texts"): SEE,
    ("POST", "/api/v1/alerts/preview"): Rule(_issue_json),
    ("GET", "/api/v1/units/{code}"): SEE,
    ("GET", "/api/v1/people"): SEE,
    ("GET", "/api/v1/devices"): SEE,
    ("GET", "/api/v1/rosters"): SEE,
    ("POST", "/api/v1/directory/import"): Rule(
        lambda p: {**_people_file(p), "params": {"kind": "people", "dry_run": "false"}}, admin=True
    ),
    ("GET", "/api/v1/reviews/alerts"): SEE,
    ("GET", "/api/v1/alerts/{alert_id}/report"): SEE,
    ("GET", "/api/v1/reviews/yearly"): SEE,
    ("GET", "/api/v1/audit"): SEE,
    ("GET", "/api/v1/alerts/{alert_id}/audit"): SEE,
    ("GET", "/api/v1/audit/verify"): SEE,
    ("GET", "/metrics"): SEE,
    ("GET", "/api/v1/accounts"): ADMIN,
    ("POST", "/api/v1/accounts"): Rule(
        _json({"username": "newbie", "role": "duty", "password": NEW_PASSWORD}), admin=True
    ),
    ("GET", "/api/v1/accounts/{username}"): ADMIN,
    ("POST", "/api/v1/accounts/{username}/disable"): Rule(NO_CONTENT, admin=True),
    ("POST", "/api/v1/accounts/{username}/enable"): Rule(NO_CONTENT, admin=True),
    ("POST", "/api/v1/accounts/{username}/password"): Rule(_json({"password": NEW_PASSWORD}), admin=True),
    ("GET", "/api/v1/sandbox/outbox"): SEE,  # duty and admin only: test_sandbox_outbox
    ("POST", "/api/v1/cap"): Rule(_cap_message),
    ("GET", "/api/v1/alerts/{alert_id}/cap"): SEE,
    ("GET", "/cap/feed.atom"): Rule(public="the public Atom feed of active real warnings (never a drill)"),
    ("GET", "/cap/alerts/{alert_id}"): Rule(public="an active real warning as CAP 1.2: what the public feed links"),
    # ---- the console (session cookie + CSRF) ----
    ("GET", "/"): Rule(public="only redirects to /console/"),
    ("GET", "/console/sign-in"): Rule(public="the sign-in form"),
    ("POST", "/console/sign-in"): Rule(public="signing in; checked for cross-site posts in test_console_security"),
    ("POST", "/console/sign-out"): Rule(NO_CONTENT, anyone_signed_in="ends one's own session"),
    ("GET", "/console/"): SEE,
    ("GET", "/console/events"): Rule(stream="never ends; its snapshots are read through board_stream below"),
    ("GET", "/console/alerts/new"): SEE,
    ("POST", "/console/alerts/preview"): Rule(_issue_form),
    ("POST", "/console/alerts"): Rule(_issue_form),
    ("GET", "/console/alerts/units"): SEE,
    ("GET", "/console/alerts/text"): SEE,
    ("GET", ALERT): SEE,
    ("GET", ALERT + "/call-again"): SEE,
    ("POST", ALERT + "/call-again"): Rule(lambda p: {"data": {"target_id": p.target_id}}),
    ("POST", ALERT + "/recipients/{target_id}/answer"): Rule(_form({"reason": "已电话确认"})),
    ("POST", ALERT + "/recipients/{target_id}/call"): Rule(_form({"outcome": "no_answer"})),
    ("POST", ALERT + "/cancel"): Rule(_form({"reason": "雨停"})),
    ("POST", ALERT + "/update"): Rule(_form({"level": "orange"})),
    ("GET", "/console/directory"): SEE,
    ("GET", "/console/directory/units/{code}"): SEE,
    ("GET", "/console/directory/people"): SEE,
    ("GET", "/console/directory/devices"): SEE,
    ("GET", "/console/directory/rosters"): SEE,
    ("GET", "/console/directory/import"): ADMIN,
    ("POST", "/console/directory/import/check"): Rule(
        lambda p: {**_people_file(p), "data": {"kind": "people"}}, admin=True
    ),
    ("POST", "/console/directory/import/apply"): Rule(_form({"token": "no-such-upload"}), admin=True),
    ("GET", "/console/review"): SEE,
    ("GET", "/console/review/yearly"): SEE,
    ("GET", "/console/review/yearly.csv"): SEE,
    ("GET", "/console/review/{alert_id:alert}"): SEE,
    ("GET", "/console/review/{alert_id:alert}/print"): SEE,
    ("GET", "/console/review/{alert_id:alert}/report.{fmt}"): SEE,
    ("GET", "/console/sandbox/outbox"): SEE,  # duty and admin only: test_sandbox_outbox
    ("GET", "/console/cap"): SEE,
    ("POST", "/console/cap/check"): Rule(_cap_upload),
    ("POST", "/console/cap"): Rule(_cap_confirmed),
    ("GET", "/console/accounts"): ADMIN,
    ("POST", "/console/accounts"): Rule(
        _form(
            {"username": "newbie", "display_name": "新人", "role": "duty", "unit_code": "", "password": NEW_PASSWORD}
        ),
        admin=True,
    ),
    ("GET", "/console/accounts/{username}"): ADMIN,
    ("POST", "/console/accounts/{username}/password"): Rule(_form({"password": NEW_PASSWORD}), admin=True),
    ("POST", "/console/accounts/{username}/disable"): Rule(NO_CONTENT, admin=True),
    ("POST", "/console/accounts/{username}/enable"): Rule(NO_CONTENT, admin=True),
    ("GET", "/console/password"): SEE,
    ("POST", "/console/password"): Rule(
        _form({"current": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD}),
        anyone_signed_in="changes one's own password",
    ),
}


def served_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, through included routers, minus those with their own authentication."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, APIRoute]]:
        for r in routes:
            if isinstance(r, APIRoute):
                yield prefix + r.path, r
            elif hasattr(r, "original_router"):  # FastAPI's included router keeps its routes behind this
                yield from walk(r.original_router.routes, prefix + r.include_context.prefix)

    for path, route in walk(list(app.routes), ""):
        if path.startswith(SKIPPED):
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, path


def rules() -> Iterator[tuple[str, str, Rule]]:
    for (method, path), rule in RULES.items():
        yield method, path, rule


def is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"  # /metrics takes an API key, like the API


def unsafe(method: str) -> bool:
    return method in ("POST", "PUT", "PATCH", "DELETE")


# ---- the world the matrix runs in -------------------------------------------------------------------


@dataclass
class World:
    engine: AssembledEngine
    fenghuang: Probe  # a 凤凰镇 alert and recipient: what a refused caller would change if let through
    ningchang: Probe  # an alert only on 宁厂镇, one of its recipients, and the township's code
    shared: Probe  # an alert on both townships; the target is a 宁厂镇 recipient
    markers: list[str] = field(default_factory=list)  # text that must never reach 凤凰镇's officer
    nc_alert: int = 0

    @property
    def app(self) -> FastAPI:
        return create_app(self.engine.core)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://jy.test")

    async def session(self, username: str) -> tuple[httpx.AsyncClient, str]:
        signed = await self.engine.core.accounts.sign_in(username, PASSWORD)
        client = self.client()
        client.cookies.set("jy_session", signed.token)
        return client, signed.csrf_token


async def _targets(db: Database, alert_id: int) -> list[tuple[str, str]]:
    async with db.session() as s:
        rows = await s.execute(
            select(col(Target.id), col(Target.unit_code))
            .where(col(Target.alert_id) == alert_id)
            .order_by(col(Target.id))
        )
        return [(t, u) for t, u in rows]


async def _deliveries(db: Database, target_ids: list[str]) -> list[str]:
    async with db.session() as s:
        rows = await s.execute(select(col(Delivery.id)).where(col(Delivery.target_id).in_(target_ids)))
        return list(rows.scalars())


@pytest.fixture
async def world(db: Database, clock: ManualClock, county: SmallCounty) -> AsyncIterator[World]:
    await add_ningchang(db)
    engine = sandbox_engine(db, clock)
    engine.core.api_keys.update(KEYS)
    await engine.start(loops=False)
    core = engine.core
    for name, role, unit in (
        ("admin", AccountRole.ADMIN, None),
        ("duty", AccountRole.DUTY, None),
        ("auditor", AccountRole.AUDITOR, None),
        ("fenghuang", AccountRole.TOWNSHIP, FENGHUANG),
        ("ningchang", AccountRole.TOWNSHIP, NINGCHANG),
    ):
        await core.accounts.create(name, PASSWORD, role=role, display_name=name, unit_code=unit, actor="test")
    transport = httpx.ASGITransport(app=create_app(core))
    async with httpx.AsyncClient(transport=transport, base_url="http://jy.test") as api:

        async def issue(units: list[str], title: str) -> int:
            r = await api.post("/api/v1/alerts", json=alert_body(units, title=title), headers=DUTY)
            assert r.status_code == 201, r.text
            alert_id: int = r.json()["id"]
            return alert_id

        fh_alert = await issue([FENGHUANG], "凤凰镇山洪预警")
        nc_alert = await issue([NINGCHANG], NC_TITLE)
        shared = await issue([FENGHUANG, NINGCHANG], SHARED_TITLE)
    await engine.dispatcher.drain()
    fh_target = next(t for t, u in await _targets(db, fh_alert) if u.startswith(FENGHUANG))
    nc_targets = [t for t, _ in await _targets(db, nc_alert)]
    shared_nc = [t for t, u in await _targets(db, shared) if u.startswith(NINGCHANG)]
    assert nc_targets and shared_nc
    # someone in 宁厂镇 answered the shared alert through their duty officer, with a reason 凤凰镇 must not read
    await core.acks.answer_on_behalf(
        shared, shared_nc[0], by=Actor.officer("user:duty"), reason=NC_REASON, at=clock.now()
    )
    markers = [NC_TITLE, NC_REASON, "宁河村", "宁厂镇值班员", "13900000101", "13900000102", "****0101", "****0102"]
    markers += nc_targets + shared_nc + await _deliveries(db, nc_targets + shared_nc)
    w = World(
        engine,
        fenghuang=Probe(fh_alert, fh_target, FENGHUANG, "duty", [FENGHUANG]),
        ningchang=Probe(nc_alert, nc_targets[0], NINGCHANG, "ningchang", [NINGCHANG]),
        shared=Probe(shared, shared_nc[0], NINGCHANG, "ningchang", [NINGCHANG]),
        markers=markers,
        nc_alert=nc_alert,
    )
    yield w
    await engine.stop()


async def snapshot(db: Database) -> dict[str, list[str]]:
    """Every row of every table, to tell that a refused request wrote nothing (not even an audit event)."""
    out: dict[str, list[str]] = {}
    async with db.session() as s:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await s.execute(select(table))).all()
            out[table.name] = sorted(repr(tuple(r)) for r in rows)
    return out


def changed(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    return [name for name in before if before[name] != after.get(name)]


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    rule: Rule,
    probe: Probe,
    *,
    headers: dict[str, str] | None = None,
    csrf: str | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    kwargs: dict[str, Any] = rule.body(probe) if (unsafe(method) and rule.body) else {}
    if not is_api(path) and unsafe(method) and csrf is not None:
        kwargs["data"] = {**kwargs.get("data", {}), "csrf": csrf}
    if params:
        kwargs["params"] = {**kwargs.get("params", {}), **params}
    return await client.request(method, probe.url(path), headers=headers, follow_redirects=False, **kwargs)


def leaks(w: World, r: httpx.Response) -> list[str]:
    """What of 宁厂镇 a response shows: marker text, or the 宁厂镇-only alert by its number."""
    text = r.text
    found = [m for m in w.markers if m in text]
    if r.is_success and re.search(rf"/(alerts|review)/{w.nc_alert}(?!\d)", text):
        found.append(f"a link to alert {w.nc_alert}")
    if r.headers.get("content-type", "").startswith("application/json"):

        def walk(v: Any) -> Iterator[str]:
            if isinstance(v, dict):
                if v.get("alert_id") == w.nc_alert or (v.get("id") == w.nc_alert and "level" in v):
                    yield f"alert {w.nc_alert} in {json.dumps(v, ensure_ascii=False)[:200]}"
                for x in v.values():
                    yield from walk(x)
            elif isinstance(v, list):
                for x in v:
                    yield from walk(x)

        found += list(walk(r.json()))
    return found


# ---- the tests ---------------------------------------------------------------------------------------


async def test_every_route_has_a_rule(world: World) -> None:
    served = set(served_routes(world.app))
    assert served, "the route walk found nothing: FastAPI's route table changed shape"
    missing = sorted(served - set(RULES))
    stale = sorted(set(RULES) - served)
    assert not missing, f"routes without an access rule in test_access_matrix.RULES: {missing}"
    assert not stale, f"rules for routes the app no longer serves: {stale}"
    for method, path, rule in rules():
        if unsafe(method) and not rule.public:
            assert rule.body is not None, f"{method} {path}: say what a valid request carries"


async def test_nobody_signed_in_gets_nothing_and_changes_nothing(world: World) -> None:
    db = world.engine.core.db
    async with world.client() as client:
        for method, path, rule in rules():
            if rule.public:
                continue
            before = await snapshot(db)
            r = await send(client, method, path, rule, world.fenghuang, csrf="forged")
            where = f"{method} {path} -> {r.status_code}"
            if is_api(path):
                assert r.status_code == 401, where
                assert r.headers["content-type"].startswith(PROBLEM), where
                assert r.headers.get("www-authenticate") == "Bearer", where
            elif method == "GET":
                assert r.status_code == 303, where
                assert r.headers["location"].startswith("/console/sign-in?next="), where
            else:
                assert r.status_code in (303, 401, 403), where
                if r.status_code == 303:
                    assert r.headers["location"].startswith("/console/sign-in"), where
            assert changed(before, await snapshot(db)) == [], where
        # a wrong key is the same as none
        r = await client.get("/api/v1/alerts", headers={"X-API-Key": "k-duty-0002"})
        assert r.status_code == 401
        r = await client.get("/api/v1/alerts", headers={"Authorization": "Bearer not-a-key"})
        assert r.status_code == 401
        # the live stream refuses a browser without a session rather than redirecting its EventSource
        r = await client.get("/console/events", headers={"Accept": "text/event-stream"})
        assert r.status_code == 401


async def test_an_auditor_changes_nothing(world: World) -> None:
    db = world.engine.core.db
    browser, csrf = await world.session("auditor")
    tried = 0
    async with browser, world.client() as api:
        for method, path, rule in rules():
            if not unsafe(method) or rule.public or rule.anyone_signed_in:
                continue
            before = await snapshot(db)
            if is_api(path):
                r = await send(api, method, path, rule, world.fenghuang, headers=AUDITOR_KEY)
            else:
                r = await send(browser, method, path, rule, world.fenghuang, csrf=csrf)
            where = f"{method} {path} -> {r.status_code} {r.text[:200]}"
            assert r.status_code == 403, where
            if is_api(path):
                assert r.headers["content-type"].startswith(PROBLEM), where
            assert changed(before, await snapshot(db)) == [], where
            tried += 1
        assert tried >= 20
        # what an auditor may do: change their own password, and sign out
        r = await browser.post(
            "/console/password", data={"csrf": csrf, "current": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD}
        )
        assert r.status_code == 303
    signed = await world.engine.core.accounts.sign_in("auditor", NEW_PASSWORD)
    async with world.client() as browser:
        browser.cookies.set("jy_session", signed.token)
        r = await browser.post("/console/sign-out", data={"csrf": signed.csrf_token}, follow_redirects=False)
        assert r.status_code == 303
    assert await world.engine.core.accounts.session(signed.token) is None


@pytest.mark.parametrize("role", ["duty", "auditor", "fenghuang"])
async def test_only_an_administrator_manages_accounts_and_imports(world: World, role: str) -> None:
    """The duty room, an auditor and a township officer may neither read the account list nor change it."""
    db = world.engine.core.db
    browser, csrf = await world.session(role)
    key = {"duty": DUTY, "auditor": AUDITOR_KEY, "fenghuang": TOWNSHIP_KEY}[role]
    tried = 0
    async with browser, world.client() as api:
        for method, path, rule in rules():
            if not rule.admin:
                continue
            before = await snapshot(db)
            if is_api(path):
                r = await send(api, method, path, rule, world.fenghuang, headers=key)
            else:
                r = await send(browser, method, path, rule, world.fenghuang, csrf=csrf)
            where = f"{role}: {method} {path} -> {r.status_code} {r.text[:200]}"
            assert r.status_code == 403, where
            assert "pass-word" not in r.text and "newbie" not in r.text, where
            assert changed(before, await snapshot(db)) == [], where
            tried += 1
    assert tried == sum(1 for _, _, rule in rules() if rule.admin)


async def test_a_township_officer_finds_nothing_outside_their_subtree(world: World) -> None:
    """凤凰镇's officer, by key and by session, reaching for an alert, a recipient, a unit only in 宁厂镇."""
    db = world.engine.core.db
    browser, csrf = await world.session("fenghuang")
    nc = world.ningchang
    probes = [
        {"unit": NINGCHANG, "parent": NINGCHANG, "alert_id": str(nc.alert_id), "units": NC_VILLAGE, "q": "宁河"},
        {"unit": "宁河", "units": NINGCHANG, "hazard": "山洪", "level": "red"},  # a name typed, not a code
    ]
    async with browser, world.client() as api:
        for method, path, rule in rules():
            if rule.public or rule.stream or (unsafe(method) and rule.anyone_signed_in):
                continue  # their own session and password are theirs to change
            client, headers = (api, TOWNSHIP_KEY) if is_api(path) else (browser, None)
            takes_ids = PARAM.search(path) is not None
            before = await snapshot(db)
            r = await send(client, method, path, rule, nc, headers=headers, csrf=csrf)
            where = f"{method} {nc.url(path)} -> {r.status_code} {r.text[:300]}"
            if unsafe(method):
                assert r.status_code in (403, 404), where
                assert changed(before, await snapshot(db)) == [], where
                continue
            if takes_ids:
                assert r.status_code in (403, 404), where
            assert not leaks(world, r), f"{where}: {leaks(world, r)}"
            for probing in probes:  # the same page asked about 宁厂镇 through its query parameters
                r = await send(client, method, path, rule, nc, headers=headers, params=probing)
                where = f"{method} {nc.url(path)}?{probing} -> {r.status_code}"
                assert r.status_code < 500, where
                assert not leaks(world, r), f"{where}: {leaks(world, r)}"
        # the issue form's own buttons (reload the template, search, back to edit) must not name 宁厂镇's units
        for do in ("template", "find", "edit"):
            form = {"csrf": csrf, "do": do, "units": NC_VILLAGE, "hazard": "山洪", "level": "red", "q": "宁"}
            r = await browser.post("/console/alerts/preview", data=form)
            assert r.status_code < 500, r.text
            assert not leaks(world, r), f"preview do={do}: {leaks(world, r)}"


async def test_a_township_officer_sees_only_their_part_of_a_shared_alert(world: World) -> None:
    """An alert on both townships: 凤凰镇's officer sees it, but only 凤凰镇's recipients and counts."""
    shared = replace(world.shared, target_id=world.fenghuang.target_id)
    browser, _ = await world.session("fenghuang")
    seen = 0
    async with browser, world.client() as api:
        for method, path, rule in rules():
            if unsafe(method) or rule.public or rule.stream or "{alert_id" not in path:
                continue
            client, headers = (api, TOWNSHIP_KEY) if is_api(path) else (browser, None)
            r = await send(client, method, path, rule, shared, headers=headers)
            where = f"GET {shared.url(path)} -> {r.status_code} {r.text[:300]}"
            assert r.status_code == 200, where
            assert not leaks(world, r), f"{where}: {leaks(world, r)}"
            seen += 1
        assert seen >= 8
        fenghuang_targets = [
            t for t, u in await _targets(world.engine.core.db, shared.alert_id) if u.startswith(FENGHUANG)
        ]
        r = await api.get(f"/api/v1/alerts/{shared.alert_id}/recipients", headers=TOWNSHIP_KEY)
        assert r.json()["total"] == len(fenghuang_targets)
        assert {i["unit_code"][:9] for i in r.json()["items"]} == {FENGHUANG}
        r = await api.get(f"/api/v1/alerts/{shared.alert_id}", headers=TOWNSHIP_KEY)
        assert r.json()["progress"]["total"] == len(fenghuang_targets)
        r = await api.get("/api/v1/board", headers=TOWNSHIP_KEY)
        mine = next(a for a in r.json()["alerts"] if a["id"] == shared.alert_id)
        assert [t["code"] for t in mine["townships"]] == [FENGHUANG], mine["townships"]
        # acting on 宁厂镇's part of it, or on the whole of it, is refused and writes nothing
        db = world.engine.core.db
        nc_target, at = world.shared.target_id, f"/alerts/{shared.alert_id}"
        browser, csrf = await world.session("fenghuang")
        attempts: list[tuple[httpx.AsyncClient, str, dict[str, Any]]] = [
            (api, f"/api/v1{at}/recipients/{nc_target}/answer", {"json": {"reason": "代答"}}),
            (api, f"/api/v1{at}/call-again", {"json": {"target_ids": [nc_target]}}),
            (api, f"/api/v1{at}/cancel", {"json": {"reason": "雨停"}}),
            (api, f"/api/v1{at}/update", {"json": {"level": "blue"}}),
            (browser, f"/console{at}/recipients/{nc_target}/answer", {"data": {"csrf": csrf, "reason": "代答"}}),
            (browser, f"/console{at}/call-again", {"data": {"csrf": csrf, "target_id": nc_target}}),
            (browser, f"/console{at}/cancel", {"data": {"csrf": csrf, "reason": "雨停"}}),
            (browser, f"/console{at}/update", {"data": {"csrf": csrf, "level": "blue"}}),
        ]
        async with browser:
            for client, url, kwargs in attempts:
                before = await snapshot(db)
                headers = TOWNSHIP_KEY if client is api else None
                r = await client.post(url, headers=headers, follow_redirects=False, **kwargs)
                assert r.status_code in (403, 404), f"{url} -> {r.status_code} {r.text[:200]}"
                assert changed(before, await snapshot(db)) == [], url
        # the county sees both townships' answers: the markers are really there to be leaked
        r = await api.get(f"/api/v1/alerts/{shared.alert_id}/audit", headers=DUTY)
        assert NC_REASON in r.text
        r = await api.get("/api/v1/board", headers=DUTY)
        assert NC_TITLE in r.text


async def test_the_live_stream_keeps_to_the_viewers_subtree(world: World) -> None:
    core = world.engine.core
    session = await core.accounts.session((await core.accounts.sign_in("fenghuang", PASSWORD)).token)
    assert session is not None
    principal: Principal = session[0]

    async def alive() -> bool:
        return True

    stream = board_stream(core, principal, alive, poll_s=0)
    first = await anext(stream)
    await stream.aclose()
    text = first.model_dump_json()
    assert SHARED_TITLE in text
    assert not [m for m in world.markers if m in text]
    assert world.nc_alert not in [a.id for a in first.alerts]


async def test_console_posts_need_the_sessions_csrf_token_and_this_site(world: World) -> None:
    """As an admin, who may do everything: a missing or wrong token, or another site's Origin, is refused."""
    db = world.engine.core.db
    browser, csrf = await world.session("admin")
    async with browser:
        for method, path, rule in rules():
            if is_api(path) or not unsafe(method) or rule.public:
                continue
            for label, token, headers in (
                ("no token", None, None),
                ("wrong token", "not-the-token", None),
                ("other site", csrf, {"Origin": "https://evil.example"}),
                ("other site by fetch metadata", csrf, {"Sec-Fetch-Site": "cross-site"}),
            ):
                before = await snapshot(db)
                r = await send(browser, method, path, rule, world.fenghuang, csrf=token, headers=headers)
                where = f"{method} {path} with {label} -> {r.status_code} {r.text[:200]}"
                assert r.status_code == 403, where
                assert changed(before, await snapshot(db)) == [], where
        # the same token from this site goes through (the refusals above were for the token, not the role)
        r = await browser.post(
            ALERT.replace("{alert_id:alert}", str(world.fenghuang.alert_id)) + "/call-again",
            data={"csrf": csrf, "target_id": world.fenghuang.target_id},
        )
        assert r.status_code == 303, r.text
