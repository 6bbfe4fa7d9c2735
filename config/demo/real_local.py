"""`jiaoying demo --real-local`: the drill with every channel a real adapter talking to a local fake provider.

The fakes are the ones the tests use (the package tests.fakes: Twilio, WeCom, the broadcast gateway, an
SMTP server), so this needs the source checkout installed editable with its development extras
(`pip install -e '.[dev]'`, which puts tests.fakes on the path), or to be run from the checkout itself.
Without them it stops with one line naming what is missing. The recipients are played on the wire: a driver reads
what each fake provider received and answers the way a person would — a key press on the call,
the 收到 button on the WeCom card, the link in the SMS — by the same seeded plan as the sandbox demo,
through the engine's real HTTP endpoints and with the providers' real signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import structlog

from alerting.deliver.port import WebhookRequest
from alerting.model.domain import ChannelKind, Purpose
from alerting.store.db import Database
from alerting.store.tables import Delivery, Person, Target
from channels.sim.simulation import AnswerSimulator, Decision
from config.settings import Settings

log = structlog.get_logger()

GATEWAY_SECRET = "demo-gateway-secret"  # noqa: S105 (a local fake's key)
LINK = re.compile(r"https?://[^\s\"'<>，。]+/ack/[\w-]+")
INSTALL = "pip install -e '.[dev]' in the source checkout"


class FakesMissing(LookupError):
    """The provider fakes, or something they need, cannot be imported. A LookupError, so `jiaoying demo`
    says it in one line and exits 2."""


def import_fakes() -> Any:
    """The provider fakes, imported only when --real-local asks for them: they are test code with test-only
    dependencies, and everything else runs without them."""
    try:
        import tests.fakes.broadcast as broadcast
        import tests.fakes.server as server
        import tests.fakes.smtp as smtp
        import tests.fakes.twilio as twilio
        import tests.fakes.wecom as wecom
    except ImportError as exc:
        if exc.name is None:
            raise FakesMissing(f"--real-local cannot import the provider fakes (tests.fakes): {exc}") from exc
        if exc.name == "tests" or exc.name.startswith("tests."):
            raise FakesMissing(
                f"--real-local needs the provider fakes (the package tests.fakes), which come with the source "
                f"checkout: {INSTALL}"
            ) from exc
        raise FakesMissing(
            f"--real-local needs {exc.name.partition('.')[0]}, which the provider fakes (tests.fakes) import: "
            f"install the development extras, {INSTALL}"
        ) from exc
    return broadcast, server, smtp, twilio, wecom


@dataclass
class LocalProviders:
    twilio: Any
    wecom: Any
    gateway: Any
    smtp: Any
    overrides: dict[str, Any]
    serve_app: Any
    public_port: int

    def settings(self, base: Settings) -> Settings:
        return base.model_copy(update=self.overrides)


@asynccontextmanager
async def local_providers(wecom_members: Iterable[str]) -> AsyncIterator[LocalProviders]:
    """Start the fake providers on loopback ports and say how to point the engine at them."""
    broadcast, server, smtp, twilio, wecom = import_fakes()
    public_port = server.free_port()  # where the engine will serve the callbacks the fakes make
    public_url = f"http://127.0.0.1:{public_port}"
    fake_twilio = twilio.FakeTwilio()
    fake_wecom = wecom.FakeWeCom(members=set(wecom_members))
    gateway = broadcast.FakeBroadcastGateway(GATEWAY_SECRET)
    async with AsyncExitStack() as stack:
        mail = await stack.enter_async_context(smtp.FakeSmtpServer())
        twilio_url = await stack.enter_async_context(server.serve_app(fake_twilio.app))
        wecom_url = await stack.enter_async_context(server.serve_app(fake_wecom.app))
        gateway_url = await stack.enter_async_context(server.serve_app(gateway.app))
        overrides: dict[str, Any] = {
            "public_url": public_url,
            "twilio_account_sid": fake_twilio.account_sid,
            "twilio_auth_token": fake_twilio.auth_token,
            "twilio_from_number": "+15005550006",
            "twilio_base_url": twilio_url,
            # local fakes take any pace; a real account's limits would stretch the drill past its windows
            "twilio_sms_per_second": 500.0,
            "twilio_calls_per_second": 500.0,
            "wecom_corp_id": fake_wecom.corp_id,
            "wecom_secret": fake_wecom.secret,
            "wecom_agent_id": fake_wecom.agent_id,
            "wecom_token": fake_wecom.token,
            "wecom_aes_key": fake_wecom.aes_key,
            "wecom_base_url": wecom_url,
            "wecom_per_second": 500.0,
            "smtp_host": "127.0.0.1",
            "smtp_port": mail.port,
            "smtp_from": "duty@example.org",
            "smtp_starttls": False,
            "broadcast_url": gateway_url,
            "broadcast_secret": GATEWAY_SECRET,
            "broadcast_per_second": 500.0,
        }
        yield LocalProviders(fake_twilio, fake_wecom, gateway, mail, overrides, server.serve_app, public_port)


@dataclass
class WireRecipients:
    """Plays every recipient on the wire, by the simulator's plan."""

    providers: LocalProviders
    db: Database
    simulator: AnswerSimulator
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10))
    seen: set[str] = field(default_factory=set)
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            try:
                await self._scan()
            except Exception as exc:  # a bad scan must not stop the players; it is reported at the end
                log.exception("demo.wire_scan_failed")
                self.failures.append(repr(exc))
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.http.aclose()

    async def _scan(self) -> None:
        """Everything the fakes received since the last look, handled concurrently as people would."""
        p = self.providers
        work: list[Awaitable[None]] = []
        for sms in p.twilio.created("Messages"):
            if self._new(sms.sid):
                work.append(self._deliver(p.twilio.message_status(sms.sid, "delivered")))
                work.append(
                    self._consider(
                        _delivery_of(sms.field("StatusCallback")), ChannelKind.SMS, link=_link(sms.field("Body"))
                    )
                )
        for call in p.twilio.created("Calls"):
            if self._new(call.sid):
                work.append(
                    self._consider(_delivery_of(call.field("StatusCallback")), ChannelKind.VOICE, call_sid=call.sid)
                )
        for body in list(p.wecom.sent):
            card = body.get("template_card") or body.get("textcard") or {}
            key = next((b.get("key", "") for b in card.get("button_list", [])), "")
            delivery_id = key.partition(":")[2] or None
            # the card's own link (card text may be cut short for the screen; the action URL never is)
            link = (card.get("card_action") or {}).get("url") or card.get("url")
            if delivery_id and self._new(f"wecom:{delivery_id}"):
                work.append(self._consider(delivery_id, ChannelKind.WECOM, link=link, userid=body.get("touser")))
        for request_id in list(p.gateway.broadcasts):
            if self._new(f"broadcast:{request_id}"):
                work.append(self._consider(request_id, ChannelKind.BROADCAST))
        await asyncio.gather(*work)

    def _new(self, key: str | None) -> bool:
        if key is None or key in self.seen:
            return False
        self.seen.add(key)
        return True

    async def _consider(self, delivery_id: str | None, channel: ChannelKind, **how: Any) -> None:
        if delivery_id is None:
            return
        decision = await self._decide(delivery_id, channel)
        if decision is not None and self.simulator.claim(decision):
            self.simulator.later(decision.delay_s, lambda: self._answer(delivery_id, channel, decision, how))

    async def _decide(self, delivery_id: str, channel: ChannelKind) -> Decision | None:
        async with self.db.session() as s:
            d = await s.get(Delivery, delivery_id)
            if d is None:
                return None
            target = await s.get(Target, d.target_id)
            assert target is not None
            about: str | None = None
            if target.person_id != d.person_id:  # the same words the composer put in the message
                person = await s.get(Person, target.person_id) if target.person_id else None
                about = person.name if person else target.device_id
        return self.simulator.decide(
            alert_id=d.alert_id,
            delivery_id=d.id,
            purpose=Purpose(d.purpose),
            channel=ChannelKind(d.channel) if d.channel != ChannelKind.MANUAL.value else channel,
            person_id=d.person_id,
            step=d.step,
            about=about,
        )

    async def _answer(self, delivery_id: str, channel: ChannelKind, decision: Decision, how: dict[str, Any]) -> None:
        p = self.providers
        if channel is ChannelKind.BROADCAST:
            await self._deliver(p.gateway.playback_callback(delivery_id, "played"))
        elif decision.feedback and how.get("link"):  # a task is reported on the page: households, people moved
            await self._page(how["link"], {k: str(v) for k, v in decision.feedback.items()})
        elif channel is ChannelKind.VOICE:
            await self._deliver(p.twilio.key_press(how["call_sid"], "1"))
        elif channel is ChannelKind.WECOM and how.get("userid"):
            query, body = p.wecom.button_click(delivery_id, userid=how["userid"])
            await self._deliver(p.wecom.webhook_request("POST", query, body, self._public))
        elif how.get("link"):
            await self._page(how["link"], {})
        self.answered += 1

    @property
    def _public(self) -> str:
        return str(self.providers.overrides["public_url"])

    async def _deliver(self, request: WebhookRequest) -> None:
        response = await self.http.request(
            request.method, request.url, content=request.body, headers=dict(request.headers)
        )
        if response.status_code >= 400:
            self.failures.append(f"{request.url.split('?')[0]} answered {response.status_code}")

    async def _page(self, link: str, form: dict[str, str]) -> None:
        await self.http.get(link)  # the person opens the link, reads, then presses 收到
        response = await self.http.post(link, data=form)
        if response.status_code >= 400:
            self.failures.append(f"answer page answered {response.status_code} for {link.rsplit('/', 1)[-1][:8]}…")


def _delivery_of(callback_url: str | None) -> str | None:
    if not callback_url:
        return None
    found = parse_qs(urlsplit(callback_url).query).get("d")
    return found[0] if found else None


def _link(text: str | None) -> str | None:
    match = LINK.search(text or "")
    return match.group(0) if match else None


@asynccontextmanager
async def wire_recipients(
    providers: LocalProviders, db: Database, simulator: AnswerSimulator
) -> AsyncIterator[WireRecipients]:
    players = WireRecipients(providers, db, simulator)
    task = asyncio.create_task(players.run(), name="wire-recipients")
    try:
        yield players
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await players.close()
