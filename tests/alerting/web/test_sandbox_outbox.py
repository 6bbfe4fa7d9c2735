"""The sandbox outbox (模拟发件箱): a newcomer or a load test reads the answer links the sandbox channels would
have sent and answers through /ack/ as the grid worker's phone would."""

from __future__ import annotations

import re
from typing import Any

import httpx

from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from alerting.web.core import ChannelInfo
from channels.sandbox import SandboxChannel
from config.wiring import AssembledEngine
from tests.alerting.board_setup import AUDITOR, DUTY, FENGHUANG, NINGCHANG, TOWNSHIP, issue, signed_in

OUTBOX = "/api/v1/sandbox/outbox"
ADMIN = {"X-API-Key": "k-admin-0003"}
PAGE = "/console/sandbox/outbox"


async def sent(api: httpx.AsyncClient, engine: AssembledEngine, units: list[str], **changes: Any) -> int:
    """Issue through the API as the duty room and let the dispatcher hand everything to the sandboxes."""
    alert_id = await issue(api, units, **changes)
    await engine.dispatcher.drain()
    return alert_id


async def outbox(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await api.get(OUTBOX, params=params, headers=DUTY)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def recorded(engine: AssembledEngine, alert_id: int, kind: ChannelKind | None = None) -> list[str]:
    """Delivery ids the sandbox channels took for this alert, straight from the channels."""
    return [
        r.message.delivery_id
        for k, c in engine.channels.items()
        if isinstance(c, SandboxChannel) and kind in (None, k)
        for r in c.outbox
        if r.message.alert_id == alert_id
    ]


async def test_an_answer_link_from_the_outbox_answers_as_the_grid_worker(
    api: httpx.AsyncClient, engine: AssembledEngine
) -> None:
    alert_id = await sent(api, engine, [FENGHUANG])
    body = await outbox(api, alert_id=alert_id, channel="sms")
    items = body["items"]
    assert body["total"] == len(items) == len(recorded(engine, alert_id, ChannelKind.SMS)) > 0
    g1 = next(i for i in items if i["name"] == "网格员甲")
    assert (g1["alert_id"], g1["channel"], g1["purpose"], g1["step"]) == (alert_id, "sms", "warn", 0)
    assert g1["to"] == "+86139****0008"  # masked, as on the alert page and the board
    assert g1["target_id"] and g1["recorded_at"]
    assert g1["ack_url"].startswith("https://jy.example.test/ack/")
    assert g1["ack_url"] in g1["text"]  # the link is the one inside the message
    assert g1["ack_url"].endswith(g1["ack_path"]) and g1["ack_path"].startswith("/ack/")

    # opened as the phone would: the page, then 收到
    page = await api.get(g1["ack_path"])
    assert page.status_code == 200 and "收到" in page.text
    answered = await api.post(g1["ack_path"], data={})
    assert answered.status_code == 200 and "已确认收到" in answered.text

    recipients = (await api.get(f"/api/v1/alerts/{alert_id}/recipients", headers=DUTY)).json()["items"]
    mine = next(x for x in recipients if x["target_id"] == g1["target_id"])
    assert (mine["person_id"], mine["state"], mine["answer_channel"]) == ("g1", "answered", "sms")
    assert mine["answered_by_name"] == "网格员甲"
    others = [x for x in recipients if x["target_id"] != g1["target_id"] and x["kind"] == "person"]
    assert others and all(x["state"] == "open" for x in others)  # only that recipient answered


async def test_sirens_and_broadcasts_carry_no_answer_link(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    alert_id = await sent(api, engine, [FENGHUANG])
    devices = (await outbox(api, alert_id=alert_id, channel="device"))["items"]
    assert devices and all(i["ack_url"] is None and i["ack_path"] is None for i in devices)
    assert {i["to"] for i in devices} == {"siren-500238101001", "siren-500238101002"}
    wecom = (await outbox(api, alert_id=alert_id, channel="wecom"))["items"]
    assert wecom and all(i["to"].startswith("wx") and i["ack_url"] for i in wecom)


async def test_only_duty_and_admin_keys_read_the_outbox(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    engine.core.api_keys["k-admin-0003"] = "admin"
    await sent(api, engine, [FENGHUANG])
    for refused in (AUDITOR, TOWNSHIP):
        r = await api.get(OUTBOX, headers=refused)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "ack" not in r.text
    assert (await api.get(OUTBOX)).status_code == 401
    by_admin = await api.get(OUTBOX, headers=ADMIN)
    assert by_admin.status_code == 200
    assert by_admin.json()["total"] == (await outbox(api))["total"] > 0


async def test_filters_and_pages_newest_first(
    api: httpx.AsyncClient, engine: AssembledEngine, clock: ManualClock
) -> None:
    first = await sent(api, engine, [FENGHUANG])
    clock.advance(minutes=1)
    second = await sent(api, engine, [NINGCHANG], level="yellow")  # by SMS: nobody there has WeCom
    everything = await outbox(api, limit=1000)
    items = everything["items"]
    assert everything["total"] == len(items) == len(recorded(engine, first)) + len(recorded(engine, second))
    times = [i["recorded_at"] for i in items]
    assert times == sorted(times, reverse=True)
    assert {i["alert_id"] for i in items[: len(recorded(engine, second))]} == {second}  # the later alert first

    only_second = await outbox(api, alert_id=second)
    assert only_second["total"] == len(recorded(engine, second))
    assert {i["alert_id"] for i in only_second["items"]} == {second}
    assert {i["channel"] for i in only_second["items"]} == {"sms"}
    voice = await outbox(api, channel="voice")
    assert voice["total"] == len(recorded(engine, first, ChannelKind.VOICE)) > 0
    assert {(i["alert_id"], i["channel"]) for i in voice["items"]} == {(first, "voice")}
    assert (await outbox(api, alert_id=second, channel="voice"))["total"] == 0

    pages = [await outbox(api, limit=3, offset=n) for n in range(0, len(items), 3)]
    assert all(p["total"] == len(items) and p["limit"] == 3 for p in pages)
    assert [i["delivery_id"] for p in pages for i in p["items"]] == [i["delivery_id"] for i in items]
    assert (await outbox(api, offset=len(items)))["items"] == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"alert_id": 0}, {"channel": "pigeon"}):
        r = await api.get(OUTBOX, params=bad, headers=DUTY)
        assert r.status_code == 422, bad
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_the_console_page_lists_the_links_for_the_duty_room(
    api: httpx.AsyncClient, engine: AssembledEngine
) -> None:
    alert_id = await sent(api, engine, [FENGHUANG])
    await signed_in(engine.core, api, "wang", AccountRole.DUTY)
    board = await api.get("/console/")
    assert f'href="{PAGE}"' in board.text and "模拟发件箱" in board.text
    r = await api.get(PAGE, params={"alert_id": str(alert_id), "channel": "sms"})
    assert r.status_code == 200, r.text
    links = re.findall(r'href="(/ack/[^"]+)"', r.text)
    expected = (await outbox(api, alert_id=alert_id, channel="sms"))["items"]
    assert links == [i["ack_path"] for i in expected]
    assert "网格员甲" in r.text and "+86139****0008" in r.text and "13900000008" not in r.text
    assert "北京时间" in r.text
    # a link clicked from the page answers as the phone would
    answered = await api.post(links[0], data={})
    assert answered.status_code == 200 and "已确认收到" in answered.text
    # the filter form sends its empty fields too
    assert (await api.get(PAGE, params={"alert_id": "", "channel": ""})).status_code == 200
    assert (await api.get(PAGE, params={"alert_id": "abc"})).status_code == 422
    assert (await api.get(PAGE, params={"channel": "pigeon"})).status_code == 422


async def test_the_console_page_is_refused_to_auditors_and_townships(
    api: httpx.AsyncClient, engine: AssembledEngine
) -> None:
    await sent(api, engine, [FENGHUANG])
    assert (await api.get(PAGE, follow_redirects=False)).status_code == 303  # nobody signed in: sign in first
    await signed_in(engine.core, api, "shen", AccountRole.AUDITOR)
    r = await api.get(PAGE)
    assert r.status_code == 403
    assert "/ack/" not in r.text
    assert f'href="{PAGE}"' not in (await api.get("/console/")).text
    await signed_in(engine.core, api, "feng", AccountRole.TOWNSHIP, FENGHUANG)
    assert (await api.get(PAGE)).status_code == 403


async def test_with_no_sandbox_channel_there_is_no_outbox(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    await sent(api, engine, [FENGHUANG])
    core = engine.core
    core.channels = [ChannelInfo(c.kind, "real", False) for c in core.channels]
    core.outboxes = []
    assert (await outbox(api)) == {"items": [], "total": 0, "limit": 100, "offset": 0}
    await signed_in(core, api, "wang", AccountRole.DUTY)
    assert f'href="{PAGE}"' not in (await api.get("/console/")).text
    r = await api.get(PAGE)
    assert r.status_code == 200 and "没有模拟发件箱" in r.text


async def test_the_outbox_is_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    op = doc["paths"][OUTBOX]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"alert_id", "channel", "limit", "offset"}
    assert "in this process" in op["description"] and "403" in op["responses"]
    item = doc["components"]["schemas"]["OutboxItem"]["properties"]
    assert {"delivery_id", "alert_id", "target_id", "channel", "to", "text", "ack_url", "recorded_at"} <= set(item)
    assert PAGE not in doc["paths"]
