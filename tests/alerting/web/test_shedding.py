"""Answers first: when the expensive reads are all taken, the next one is told to come back; answers go through."""

from __future__ import annotations

import httpx

from alerting.model.domain import ChannelKind
from alerting.web.shedding import ReadShedder
from config.wiring import AssembledEngine
from tests.alerting.board_setup import AUDITOR, DUTY, FENGHUANG, issue
from tests.alerting.web.test_sandbox_outbox import outbox


def shedder_of(api: httpx.AsyncClient) -> ReadShedder:
    transport = api._transport
    assert isinstance(transport, httpx.ASGITransport)
    shedder: ReadShedder = transport.app.state.read_shedder  # type: ignore[attr-defined]
    return shedder


async def test_a_report_gives_way_while_answers_go_through(engine: AssembledEngine, api: httpx.AsyncClient) -> None:
    alert_id = await issue(api, [FENGHUANG])
    await engine.dispatcher.drain()
    report = f"/api/v1/alerts/{alert_id}/report"
    assert (await api.get(report, headers=AUDITOR)).status_code == 200

    shedder = shedder_of(api)
    for _ in range(shedder.places):  # every place taken by reads still running
        shedder.enter("/elsewhere")
    busy = await api.get(report, headers=AUDITOR)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == str(shedder.retry_after_s)
    assert busy.headers["content-type"].startswith("application/problem+json")
    assert (await api.get("/api/v1/reviews/alerts", headers=AUDITOR)).status_code == 503
    assert (await api.get("/api/v1/audit", headers=AUDITOR)).status_code == 503

    # meanwhile a grid worker answers through the link, and the duty room answers for another
    item = next(i for i in (await outbox(api, alert_id=alert_id, channel=ChannelKind.SMS.value))["items"])
    answered = await api.post(item["ack_path"], data={})
    assert answered.status_code == 200 and "已确认收到" in answered.text
    recipients = (await api.get(f"/api/v1/alerts/{alert_id}/recipients", headers=DUTY)).json()["items"]
    other = next(r for r in recipients if r["target_id"] != item["target_id"] and r["state"] == "open")
    on_behalf = await api.post(
        f"/api/v1/alerts/{alert_id}/recipients/{other['target_id']}/answer", json={"reason": "电话确认"}, headers=DUTY
    )
    assert on_behalf.status_code == 200

    for _ in range(shedder.places):
        shedder.leave()
    again = await api.get(report, headers=AUDITOR)
    assert again.status_code == 200
    summary = again.json()["report"]["summary"]
    assert (summary["answered"], summary["answered_for"]) == (1, 1)  # neither answer was lost while it waited
