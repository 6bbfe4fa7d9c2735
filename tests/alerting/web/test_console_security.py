"""The console's session and page hygiene: cookie flags, fixation, sign-out and disabling that end a session on
the server, the sign-in's `next` and the actions' `back` staying on this site, input shown escaped, CSP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import insert, select
from sqlmodel import col

from alerting.model.domain import UnitKind
from alerting.store.tables import Delivery, OrgUnit, Target
from alerting.web.console.board_pages import board_stream
from tests.alerting.board_setup import DUTY, FENGHUANG, alert_body
from tests.alerting.web import test_access_matrix as matrix
from tests.alerting.web.test_access_matrix import PASSWORD, RULES, World, is_api

world = matrix.world  # the same accounts, keys and alerts as the access matrix

SCRIPT = "<script>alert(1)</script>"
UNIT_SCRIPT = "<script>alert(2)</script>村"
EVIL_UNIT = "500238101009"


def cookie_of(r: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in r.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


async def sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    return await client.post(
        "/console/sign-in", data={"username": username, "password": password, **extra}, follow_redirects=False
    )


@pytest.fixture
async def https_client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://jy.test") as client:
        yield client


async def test_the_session_cookie_is_httponly_strict_and_secure_over_https(
    world: World, https_client: httpx.AsyncClient
) -> None:
    async with world.client() as plain:
        r = await sign_in(plain, "duty")
    assert r.status_code == 303
    morsel = cookie_of(r)["jy_session"]
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain http in this test: a Secure cookie would never come back
    r = await sign_in(https_client, "duty")
    morsel = cookie_of(r)["jy_session"]
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"].lower() == "strict"


async def test_every_sign_in_gets_a_new_token_and_a_planted_one_is_worthless(world: World) -> None:
    async with world.client() as browser:
        browser.cookies.set("jy_session", "planted-by-an-attacker")
        first = cookie_of(await sign_in(browser, "duty"))["jy_session"].value
        second = cookie_of(await sign_in(browser, "duty"))["jy_session"].value
    assert first != "planted-by-an-attacker" and first != second
    async with world.client() as attacker:
        attacker.cookies.set("jy_session", "planted-by-an-attacker")
        r = await attacker.get("/console/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")


async def test_sign_out_ends_the_session_on_the_server(world: World) -> None:
    browser, csrf = await world.session("duty")
    token = browser.cookies["jy_session"]
    async with browser:
        r = await browser.post("/console/sign-out", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303
    async with world.client() as replay:  # the old cookie, kept by someone, sent again
        replay.cookies.set("jy_session", token)
        r = await replay.get("/console/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
        r = await replay.get("/console/events", headers={"Accept": "text/event-stream"})
        assert r.status_code == 401


async def test_a_disabled_accounts_live_session_stops_at_once(world: World) -> None:
    duty, _ = await world.session("duty")
    admin, csrf = await world.session("admin")
    async with duty, admin:
        assert (await duty.get("/console/")).status_code == 200
        r = await admin.post("/console/accounts/duty/disable", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303
        r = await duty.get("/console/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
        r = await admin.post("/console/accounts/duty/enable", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303
        # enabling again does not revive the old session: signing in is needed
        r = await duty.get("/console/", follow_redirects=False)
        assert r.status_code == 303


OFF_SITE = [
    "//evil.example",
    "//evil.example/console/",
    "/\\evil.example",
    "/console/\\..\\\\evil.example",
    "https://evil.example/console/",
    "http:evil.example",
    "javascript:alert(1)",
    "/console/\r\nLocation: https://evil.example",
    " //evil.example",
    "\t/console/",
]


def stays_here(location: str) -> bool:
    parts = urlsplit(location)
    return not parts.scheme and not parts.netloc and location.startswith("/") and not location.startswith("//")


async def test_next_and_back_never_lead_off_site(world: World) -> None:
    async with world.client() as browser:
        for target in OFF_SITE:
            page = await browser.get("/console/sign-in", params={"next": target})
            kept = re.search(r'name="next" value="([^"]*)"', page.text)
            assert kept and stays_here(kept.group(1)), (target, kept)
            r = await sign_in(browser, "duty", next=target)
            assert r.status_code == 303 and stays_here(r.headers["location"]), (target, r.headers["location"])
        # a page of ours is where it leads
        r = await sign_in(browser, "duty", next="/console/review?level=red")
        assert r.headers["location"] == "/console/review?level=red"
    duty, csrf = await world.session("duty")
    async with duty:
        alert_id, target_id = world.fenghuang.alert_id, world.fenghuang.target_id
        for back in OFF_SITE:
            r = await duty.post(
                f"/console/alerts/{alert_id}/call-again",
                data={"csrf": csrf, "target_id": target_id, "back": back},
                follow_redirects=False,
            )
            assert r.status_code == 303 and stays_here(r.headers["location"]), (back, r.headers["location"])


async def _evil_unit(world: World) -> None:
    async with world.engine.core.db.session() as s:
        await s.execute(
            insert(OrgUnit),
            [
                {
                    "code": EVIL_UNIT,
                    "name": UNIT_SCRIPT,
                    "kind": UnitKind.VILLAGE,
                    "parent_code": FENGHUANG,
                    "path": f"/500238/{FENGHUANG}/{EVIL_UNIT}/",
                }
            ],
        )


async def _answer_link(world: World, alert_id: int) -> str:
    core = world.engine.core
    async with core.db.session() as s:
        delivery_id = await s.scalar(
            select(col(Delivery.id))
            .join(Target, col(Target.id) == col(Delivery.target_id))
            .where(col(Delivery.alert_id) == alert_id, col(Target.kind) == "person")
            .limit(1)
        )
    assert delivery_id
    return f"/ack/{core.signer.sign(delivery_id, core.clock.now())}"


async def test_what_people_typed_is_shown_escaped(world: World) -> None:
    """A title, a unit name and search text carrying <script> come back as text on every page showing them."""
    await _evil_unit(world)
    async with world.client() as api:
        body = alert_body([FENGHUANG], title=f"山洪{SCRIPT}", text=f"正文{SCRIPT}", instructions=f"指引{SCRIPT}")
        r = await api.post("/api/v1/alerts", json=body, headers=DUTY)
        assert r.status_code == 201, r.text
        alert_id = r.json()["id"]
    await world.engine.dispatcher.drain()
    duty, _ = await world.session("duty")
    auditor, _ = await world.session("auditor")
    admin, _ = await world.session("admin")
    q = {"q": SCRIPT}
    pages = [
        (duty, "/console/", None),
        (duty, f"/console/alerts/{alert_id}", None),
        (duty, f"/console/alerts/{alert_id}", q),
        (auditor, f"/console/review/{alert_id}", None),
        (auditor, f"/console/review/{alert_id}/print", None),
        (auditor, "/console/review", None),
        (auditor, "/console/review", {"unit": SCRIPT, "hazard": SCRIPT}),
        (duty, "/console/directory", q),
        (duty, "/console/directory", {"q": "alert(2)"}),
        (duty, f"/console/directory/units/{EVIL_UNIT}", None),
        (duty, f"/console/directory/units/{FENGHUANG}", None),
        (duty, "/console/directory/units/<script>alert(1)</script>", None),
        (duty, "/console/directory/people", {"q": SCRIPT, "unit": SCRIPT}),
        (duty, "/console/directory/devices", q),
        (duty, "/console/alerts/new", {"q": SCRIPT, "title": SCRIPT, "units": EVIL_UNIT}),
        (duty, "/console/alerts/new", {"q": "alert(2)"}),
        (admin, "/console/accounts/<script>alert(1)</script>", None),
        (duty, f"/console/no-such-page{SCRIPT}", None),
    ]
    async with duty, auditor, admin:
        shown = 0
        for client, url, params in pages:
            r = await client.get(url, params=params)
            where = f"{url} {params} -> {r.status_code}"
            assert r.status_code < 500, where
            assert r.headers["content-type"].startswith("text/html"), where
            assert "<script>alert(" not in r.text, where
            shown += "&lt;script&gt;alert(" in r.text
        assert shown >= 12  # most pages do show the text, escaped; not merely leave it out
        async with world.client() as phone:
            r = await phone.get(await _answer_link(world, alert_id))
        assert r.status_code == 200
        assert "<script>alert(" not in r.text and "&lt;script&gt;alert(1)" in r.text


async def test_console_pages_carry_a_content_security_policy(world: World) -> None:
    """Every console page, error pages too: scripts only from this site, no framing."""
    admin, _ = await world.session("admin")
    checked = 0
    async with admin:
        urls = [world.fenghuang.url(path) for method, path in RULES if method == "GET" and not is_api(path)]
        urls += ["/console/sign-in", "/console/no-such-page", f"/console/alerts/{10**6}"]
        for url in urls:
            if url == "/console/events":
                continue
            r = await admin.get(url, follow_redirects=True)
            if not r.headers.get("content-type", "").startswith("text/html"):
                continue
            csp = r.headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp or "default-src 'none'" in csp, (url, csp)
            assert "unsafe-inline" not in csp.split("script-src")[-1].split(";")[0], (url, csp)
            assert "frame-ancestors 'none'" in csp, (url, csp)
            assert r.headers.get("x-content-type-options") == "nosniff", url
            checked += 1
    assert checked >= 20


async def test_signing_in_from_another_site_is_refused(world: World) -> None:
    """A form on another site must not sign a browser in (to an account the attacker chose)."""
    async with world.client() as browser:
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            r = await browser.post("/console/sign-in", data={"username": "duty", "password": PASSWORD}, headers=headers)
            assert r.status_code == 403, headers
            assert "jy_session" not in cookie_of(r)
        r = await browser.post(
            "/console/sign-in",
            data={"username": "duty", "password": PASSWORD},
            headers={"Origin": "http://jy.test"},
            follow_redirects=False,
        )
        assert r.status_code == 303


async def test_a_planted_notice_cookie_is_shown_as_text(world: World) -> None:
    duty, _ = await world.session("duty")
    async with duty:
        duty.cookies.set("jy_notice", SCRIPT)
        r = await duty.get("/console/")
    assert "<script>alert(" not in r.text and "&lt;script&gt;alert(1)" in r.text


async def test_the_live_board_stops_for_a_disabled_account(world: World) -> None:
    core = world.engine.core
    signed = await core.accounts.sign_in("duty", PASSWORD)

    async def still_signed_in() -> bool:
        return await core.accounts.session(signed.token) is not None

    stream = board_stream(core, signed.principal, still_signed_in, poll_s=0.01)
    first = await anext(stream)
    assert first.alerts
    await core.accounts.set_active("duty", False, actor="user:admin")
    async with world.client() as api:  # the board changes: a new alert
        r = await api.post("/api/v1/alerts", json=alert_body([FENGHUANG], title="停用之后的预警"), headers=DUTY)
        assert r.status_code == 201
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), timeout=10)
