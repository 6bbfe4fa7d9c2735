"""A red alert on the small county over every real adapter, against local fakes of every provider.

Everything crosses a real wire: the engine's HTTP server receives the providers' callbacks on
/webhooks, Twilio/WeCom/the broadcast gateway are local HTTP fakes speaking their wire format,
mail goes to aiosmtpd, sirens answer over MQTT. Answers come back by SMS reply, key press, WeCom
button, siren ack, broadcast playback and the answer page; a silent grid worker is escalated until
the village head answers for them; the audit holds every step with the provider's ids.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.deliver.port import WebhookRequest
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Target
from alerting.views.report.build import build_report
from alerting.web.app import create_app
from channels.sim.devices import SimulatedSirenFleet
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from escalation.policy.rules import default_policy
from tests.brokers import mosquitto_binary, start_broker
from tests.conftest import SmallCounty
from tests.fakes.broadcast import FakeBroadcastGateway
from tests.fakes.server import free_port, serve_app
from tests.fakes.smtp import FakeSmtpServer
from tests.fakes.twilio import FakeTwilio
from tests.fakes.wecom import FakeWeCom

FROM = "+15005550006"
GW_SECRET = "gateway-shared-secret"


class World:
    def __init__(
        self,
        engine: AssembledEngine,
        public: str,
        twilio: FakeTwilio,
        wecom: FakeWeCom,
        gateway: FakeBroadcastGateway,
        smtp: FakeSmtpServer,
    ) -> None:
        self.engine, self.public, self.twilio, self.wecom, self.gateway, self.smtp = (
            engine,
            public,
            twilio,
            wecom,
            gateway,
            smtp,
        )
        self.http = httpx.AsyncClient(timeout=10)

    async def deliver(self, request: WebhookRequest) -> httpx.Response:
        """What the provider does: an HTTP request to the URL it was given, with its signature."""
        return await self.http.request(request.method, request.url, content=request.body, headers=dict(request.headers))

    def sms_to(self, phone: str) -> list[str]:
        return [r.field("Body") or "" for r in self.twilio.created("Messages") if r.field("To") == phone]

    def calls_to(self, phone: str) -> list[str]:
        return [r.sid or "" for r in self.twilio.created("Calls") if r.field("To") == phone]


@pytest.fixture
async def world(db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path) -> AsyncIterator[World]:
    twilio = FakeTwilio()
    wecom = FakeWeCom(members={f"wx{n}" for n in range(1, 11)})
    gateway = FakeBroadcastGateway(GW_SECRET)
    async with AsyncExitStack() as stack:
        smtp = await stack.enter_async_context(FakeSmtpServer())
        twilio_url = await stack.enter_async_context(serve_app(twilio.app))
        wecom_url = await stack.enter_async_context(serve_app(wecom.app))
        gateway_url = await stack.enter_async_context(serve_app(gateway.app))
        broker = await start_broker("mosquitto" if mosquitto_binary() else "amqtt", tmp_path)
        stack.push_async_callback(broker.stop)
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        settings = Settings(
            database_url=db.url,
            public_url=public,
            secret_key="e2e-secret",
            mqtt_url=broker.url,
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=twilio.auth_token,
            twilio_from_number=FROM,
            twilio_base_url=twilio_url,
            wecom_corp_id=wecom.corp_id,
            wecom_secret=wecom.secret,
            wecom_agent_id=wecom.agent_id,
            wecom_token=wecom.token,
            wecom_aes_key=wecom.aes_key,
            wecom_base_url=wecom_url,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_from="duty@example.org",
            smtp_starttls=False,
            broadcast_url=gateway_url,
            broadcast_secret=GW_SECRET,
        )
        # the county's red policy, with email added to the first wave for those who have an address
        policy = default_policy()
        red = policy.levels[Level.RED]
        red.person_steps[0].channels.append(ChannelKind.EMAIL)
        engine = build_engine(settings, clock=clock, policy=policy)
        await engine.start(loops=False)
        stack.push_async_callback(engine.stop)
        await stack.enter_async_context(serve_app(create_app(engine.core), port=port))
        fleet = SimulatedSirenFleet(broker.url, ["siren-500238101001", "siren-500238101002"], clock=clock)
        await fleet.start()
        stack.push_async_callback(fleet.stop)
        w = World(engine, public, twilio, wecom, gateway, smtp)
        stack.push_async_callback(w.http.aclose)
        yield w


async def targets(engine: AssembledEngine) -> dict[str, Target]:
    async with engine.db.session() as s:
        rows = (await s.execute(select(Target))).scalars()
        return {t.person_id or t.device_id or "": t for t in rows}


async def test_red_alert_goes_out_everywhere_and_every_answer_path_closes_the_loop(
    world: World, clock: ManualClock
) -> None:
    engine = world.engine
    issued = await engine.alerts.trigger(
        AlertRequest(
            level=Level.RED,
            hazard="山洪",
            title="凤凰镇山洪红色预警",
            text="沿河区域山洪风险极高。",
            instructions="立即转移沿河群众。",
            units=["500238101"],
        ),
        actor="duty:e2e",
    )
    await engine.settle()

    # the first wave reached every provider over its real protocol
    assert len(world.twilio.created("Messages")) == 6 and len(world.twilio.created("Calls")) == 6
    assert len(world.wecom.cards()) == 5  # g2 has no WeCom account
    assert len(world.gateway.broadcasts) == 2
    assert [m.rcpt_tos for m in world.smtp.received] == [("tw-duty@example.org",)]

    # sirens confirm over MQTT by themselves
    async def sirens_answered() -> bool:
        t = await targets(engine)
        return all(t[f"siren-{v}"].state == TargetState.ANSWERED.value for v in ("500238101001", "500238101002"))

    async with asyncio.timeout(10):  # the siren acks arrive over MQTT in their own time
        while not await sirens_answered():  # noqa: ASYNC110 (the store has no event to wait on)
            await asyncio.sleep(0.05)

    # the broadcast gateway confirms playback
    for request_id in list(world.gateway.broadcasts):
        assert (await world.deliver(world.gateway.playback_callback(request_id, "played"))).status_code == 200

    # g1 replies 收到 by SMS; its delivery report comes in too
    g1_sms = next(r for r in world.twilio.created("Messages") if r.field("To") == "+8613900000008")
    assert (await world.deliver(world.twilio.message_status(g1_sms.sid or "", "delivered"))).status_code == 200
    assert (await world.deliver(world.twilio.inbound_sms(world.public, "+8613900000008", "收到"))).status_code == 200
    # the township duty officer presses 1 on the call
    tw_call = world.calls_to("+8613900000003")[0]
    assert (await world.deliver(world.twilio.key_press(tw_call, "1"))).status_code == 200
    # the head of 东坪村 presses 收到 on the WeCom card
    card = next(c for c, body in zip(world.wecom.cards(), world.wecom.sent, strict=True) if body["touser"] == "wx5")
    delivery_id = card["button_list"][0]["key"].split(":", 1)[1]
    query, body = world.wecom.button_click(delivery_id, userid="wx5")
    assert (await world.deliver(world.wecom.webhook_request("POST", query, body, world.public))).status_code == 200
    # the head of 西坪村 opens the link in the SMS and answers on the page
    link = re.search(r"https?://\S+/ack/[\w-]+", world.sms_to("+8613900000007")[0])
    assert link is not None
    page = await world.http.get(link.group(0))
    assert page.status_code == 200 and "收到" in page.text
    assert (await world.http.post(link.group(0), data={"moved": "12"})).status_code == 200
    # g2 answers with key 1 as well; g3 stays silent
    g2_call = world.calls_to("+8613900000009")[0]
    await world.deliver(world.twilio.key_press(g2_call, "1"))

    states = {k: t.state for k, t in (await targets(engine)).items()}
    assert states["g3"] == TargetState.OPEN.value
    assert {k for k, v in states.items() if v == TargetState.ANSWERED.value} == {
        "g1",
        "g2",
        "tw-duty",
        "v1-head",
        "v2-head",
        "siren-500238101001",
        "siren-500238101002",
        "bz-500238101001",
        "bz-500238101002",
    }

    # g3 is escalated: a redial after five minutes, then (no backup on that grid) the village head
    clock.advance(minutes=5)
    await engine.settle()
    assert len(world.calls_to("+8613900000010")) == 2
    clock.advance(minutes=5)
    await engine.settle()
    escalation_call = world.calls_to("+8613900000007")[-1]
    assert "网格员丙" in (world.twilio.by_sid(escalation_call).field("Twiml") or "")
    await world.deliver(world.twilio.key_press(escalation_call, "1"))

    final = await targets(engine)
    assert final["g3"].state == TargetState.ANSWERED_FOR.value and final["g3"].answered_by == "v2-head"
    assert (await engine.alerts.get(issued.alert_id)).status == "closed"

    # the audit holds every send with the provider's own id, and every escalation step
    async with engine.db.session() as s:
        events = list(
            (await s.execute(select(AuditEvent).where(col(AuditEvent.alert_id) == issued.alert_id))).scalars()
        )
    sent = [e.data for e in events if e.kind == "delivery.sent"]
    providers = {d["provider"] for d in sent}
    assert {"twilio", "wecom", "broadcast", "mqtt", "smtp"} <= providers
    assert all(d["provider_id"] for d in sent)
    assert not any(d["sandbox"] for d in sent)
    g3 = final["g3"].id
    chain = [
        (e.kind, e.data.get("step"), e.data.get("contacts"))
        for e in events
        if e.subject == g3 and e.kind.startswith(("target.escalated", "escalation."))
    ]
    # the redial; no backup for that grid, so straight on to the village head
    assert chain == [
        ("target.escalated", 1, ["g3"]),
        ("escalation.nobody", 2, []),
        ("target.escalated", 3, ["v2-head"]),
    ]
    report = await build_report(engine.db, issued.alert_id, now=clock.now())
    assert report.summary.silent == 0 and not report.sandbox
