"""Village sirens over MQTT, on the embedded amqtt broker and on mosquitto.

The story: the county sends a red 山洪 warning; the engine publishes a command to each village
siren; the sirens answer over MQTT and the engine hands their answers to the core.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest

from alerting.answer.events import DeviceReport, DeviceStatus, InboundEvent
from alerting.deliver.port import Address, DeliveryError, OutboundMessage
from alerting.model.domain import ChannelKind, Level, Purpose
from channels.mqtt.devices import Backoff, MqttDeviceChannel, parse_mqtt_url
from channels.sim.devices import SimulatedSiren, SimulatedSirenFleet
from tests.brokers import RunningBroker

pytestmark = pytest.mark.timeout(60)

WAIT_S = 5.0
_ids = itertools.count(1)


class Inbox:
    """What the core would receive from the channel."""

    def __init__(self) -> None:
        self.events: list[InboundEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: InboundEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[InboundEvent], bool]) -> InboundEvent:
        async with asyncio.timeout(WAIT_S):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def report(self, device_id: str, command_id: str, status: str) -> DeviceReport:
        event = await self.wait_for(
            lambda e: (
                isinstance(e, DeviceReport) and (e.device_id, e.command_id, e.status) == (device_id, command_id, status)
            )
        )
        assert isinstance(event, DeviceReport)
        return event

    async def status(self, device_id: str, *, online: bool) -> DeviceStatus:
        event = await self.wait_for(
            lambda e: isinstance(e, DeviceStatus) and e.device_id == device_id and e.online is online
        )
        assert isinstance(event, DeviceStatus)
        return event

    def reports(self, device_id: str) -> list[DeviceReport]:
        return [e for e in self.events if isinstance(e, DeviceReport) and e.device_id == device_id]


def siren_message(
    device_id: str,
    *,
    delivery_id: str | None = None,
    level: Level = Level.RED,
    purpose: Purpose = Purpose.WARN,
    attempt: int = 1,
) -> OutboundMessage:
    text = "【巫溪县应急管理局】红色山洪预警：凤凰镇未来3小时有强降雨，请立即转移到安置点。"
    return OutboundMessage(
        delivery_id=delivery_id or f"dlv-{next(_ids):05d}",
        alert_id=17,
        channel=ChannelKind.DEVICE,
        purpose=purpose,
        address=Address(device_id=device_id, device_kind="siren"),
        level=level,
        hazard="山洪",
        exercise=False,
        title="红色山洪预警",
        text=text,
        short_text=text,
        spoken_text="红色山洪预警。凤凰镇未来三小时有强降雨，请立即转移到安置点。",
        ack_url=None,
        attempt=attempt,
    )


@asynccontextmanager
async def engine_channel(
    broker: RunningBroker, inbox: Inbox, *, client_id: str = "jiaoying-engine-test", **kwargs: Any
) -> AsyncIterator[MqttDeviceChannel]:
    channel = MqttDeviceChannel(broker.url, client_id=client_id, **kwargs)
    await channel.start(inbox)
    try:
        assert channel.connected
        yield channel
    finally:
        await channel.close()


@asynccontextmanager
async def running(fleet: SimulatedSirenFleet) -> AsyncIterator[SimulatedSirenFleet]:
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        # The simulators and the channel expose plain state, not events; a short poll is enough.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_red_warning_sounds_the_village_siren_and_its_acks_come_back(mqtt_broker: RunningBroker) -> None:
    inbox = Inbox()
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01", "fh-siren-02"], seed=7)
    async with engine_channel(mqtt_broker, inbox) as channel, running(fleet):
        await inbox.status("fh-siren-01", online=True)
        warning = siren_message("fh-siren-01")

        receipt = await channel.send(warning)

        assert (receipt.provider, receipt.provider_id) == ("mqtt", warning.delivery_id)
        received = await inbox.report("fh-siren-01", warning.delivery_id, "received")
        sounding = await inbox.report("fh-siren-01", warning.delivery_id, "sounding")
        assert received.at <= sounding.at
        command = fleet.heard["fh-siren-01"][0]
        assert command["command_id"] == warning.delivery_id
        assert command["alert_id"] == 17
        assert command["action"] == "sound"
        assert command["pattern"] == "rapid"
        assert command["duration_s"] == 180
        assert command["text"] == warning.spoken_text
        assert command["issued_at"].endswith("+00:00")
        assert fleet.played == {"fh-siren-01": 1, "fh-siren-02": 0}

        lift = siren_message("fh-siren-01", purpose=Purpose.LIFT)
        await channel.send(lift)

        await inbox.report("fh-siren-01", lift.delivery_id, "done")
        assert fleet.heard["fh-siren-01"][1]["action"] == "stop"
        assert fleet.played["fh-siren-01"] == 1


async def test_engine_started_later_sees_the_retained_online_status(mqtt_broker: RunningBroker) -> None:
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01", "fh-siren-02"])
    inbox = Inbox()
    async with running(fleet), engine_channel(mqtt_broker, inbox):
        for device_id in fleet.device_ids:
            status = await inbox.status(device_id, online=True)
            assert status.at.tzinfo is not None


async def test_siren_that_loses_power_is_reported_offline_by_its_last_will(mqtt_broker: RunningBroker) -> None:
    inbox = Inbox()
    siren = SimulatedSiren(mqtt_broker.url, "hx-siren-03")
    async with engine_channel(mqtt_broker, inbox):
        await siren.start()
        await inbox.status("hx-siren-03", online=True)

        await siren.cut_power()

        await inbox.status("hx-siren-03", online=False)

    # The will was retained: a duty room that connects afterwards also sees the siren offline.
    late = Inbox()
    async with engine_channel(mqtt_broker, late, client_id="jiaoying-engine-late"):
        await late.status("hx-siren-03", online=False)
        assert not any(isinstance(e, DeviceStatus) and e.online for e in late.events)


async def test_broken_siren_hears_the_command_but_never_answers(mqtt_broker: RunningBroker) -> None:
    inbox = Inbox()
    prefix = "cq/500238/jiaoying"  # a prefix with levels of its own must work too
    fleet = SimulatedSirenFleet(
        mqtt_broker.url, ["ok-siren", "broken-siren"], topic_prefix=prefix, silent=frozenset({"broken-siren"})
    )
    async with engine_channel(mqtt_broker, inbox, topic_prefix=prefix) as channel, running(fleet):
        to_broken = siren_message("broken-siren")
        to_ok = siren_message("ok-siren")

        await channel.send(to_broken)
        await channel.send(to_ok)

        await inbox.report("ok-siren", to_ok.delivery_id, "sounding")
        await asyncio.sleep(2 * fleet.delay_s[1])  # longer than the broken siren would take if it worked
        assert [c["command_id"] for c in fleet.heard["broken-siren"]] == [to_broken.delivery_id]
        assert inbox.reports("broken-siren") == []
        assert fleet.played["broken-siren"] == 0


async def test_resent_command_is_acked_again_but_not_played_twice(mqtt_broker: RunningBroker) -> None:
    inbox = Inbox()
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01"], seed=3)
    async with engine_channel(mqtt_broker, inbox) as channel, running(fleet):
        first = siren_message("fh-siren-01")
        await channel.send(first)
        await inbox.report("fh-siren-01", first.delivery_id, "sounding")

        resend = siren_message("fh-siren-01", delivery_id=first.delivery_id, attempt=2)
        receipt = await channel.send(resend)

        assert receipt.provider_id == first.delivery_id
        await eventually(lambda: len(inbox.reports("fh-siren-01")) == 3)
        again = inbox.reports("fh-siren-01")[-1]
        assert (again.command_id, again.status) == (first.delivery_id, "sounding")
        assert "duplicate" in (again.detail or "")
        assert len(fleet.heard["fh-siren-01"]) == 2
        assert fleet.played["fh-siren-01"] == 1


async def test_acks_sent_while_the_engine_restarts_are_delivered_when_it_is_back(mqtt_broker: RunningBroker) -> None:
    # Checked on amqtt 0.12.1: it queues QoS 1 messages for offline persistent sessions unless the
    # session is flagged anonymous, which EmbeddedBroker's auth plugin avoids; so both brokers run this.
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01"], delay_s=(0.3, 0.4))
    before = Inbox()
    async with running(fleet):
        async with engine_channel(mqtt_broker, before) as channel:
            warning = siren_message("fh-siren-01")
            await channel.send(warning)
        # The engine is down; the siren answers into the void.
        await eventually(lambda: len(fleet.acks_sent) == 2)
        assert [s for _, _, s in fleet.acks_sent] == ["received", "sounding"]
        assert before.reports("fh-siren-01") == []

        after = Inbox()
        async with engine_channel(mqtt_broker, after):
            await after.report("fh-siren-01", warning.delivery_id, "received")
            await after.report("fh-siren-01", warning.delivery_id, "sounding")


async def test_ack_the_engine_had_not_finished_taking_is_handed_over_again(mqtt_broker: RunningBroker) -> None:
    if mqtt_broker.kind == "amqtt":
        # amqtt 0.12.1 forgets an unacknowledged QoS 1 delivery as soon as the connection closes
        # (mqtt/protocol/handler.py drops it from inflight_out in a `finally`), so it never resends
        # it on reconnect as MQTT 3.1.1 section 4.4 asks. mosquitto does.
        pytest.skip("amqtt does not redeliver in-flight QoS 1 messages to a reconnecting persistent session")
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01"])
    taking = asyncio.Event()

    async def core_that_stops_midway(event: InboundEvent) -> None:
        if isinstance(event, DeviceReport):
            taking.set()
            await asyncio.Event().wait()  # the engine is stopped before recording it

    async with running(fleet):
        channel = MqttDeviceChannel(mqtt_broker.url, client_id="jiaoying-engine-test")
        await channel.start(core_that_stops_midway)
        try:
            warning = siren_message("fh-siren-01")
            await channel.send(warning)
            async with asyncio.timeout(WAIT_S):
                await taking.wait()
        finally:
            await channel.close()

        after = Inbox()
        async with engine_channel(mqtt_broker, after):
            await after.report("fh-siren-01", warning.delivery_id, "received")
            await after.report("fh-siren-01", warning.delivery_id, "sounding")


async def test_malformed_acks_are_skipped_and_later_acks_still_arrive(mqtt_broker: RunningBroker) -> None:
    inbox = Inbox()
    endpoint = parse_mqtt_url(mqtt_broker.url)
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01"])
    async with engine_channel(mqtt_broker, inbox) as channel, running(fleet):
        async with aiomqtt.Client(endpoint.host, endpoint.port) as rogue:
            topic = "jiaoying/devices/fh-siren-01/ack"
            huge = json.dumps({"command_id": "huge", "status": "done", "detail": "x" * 8_000_000}).encode()
            junk_list = (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"status": "sounding"}', b'{"command_id": "x"}', huge)
            for junk in junk_list:
                await rogue.publish(topic, junk, qos=1)
            await rogue.publish("jiaoying/devices/fh-siren-01/status", b'{"online": "yes"}', qos=1)
            await rogue.publish(topic, json.dumps({"command_id": "manual-1", "status": "done"}).encode(), qos=1)

            await inbox.report("fh-siren-01", "manual-1", "done")

        warning = siren_message("fh-siren-01")
        await channel.send(warning)
        await inbox.report("fh-siren-01", warning.delivery_id, "sounding")
        assert [r.command_id for r in inbox.reports("fh-siren-01")].count("x") == 0
        assert "huge" not in [r.command_id for r in inbox.reports("fh-siren-01")]  # 8 MB is not an ack


async def test_channel_reconnects_after_the_broker_comes_back(mqtt_broker: RunningBroker) -> None:
    inbox = Inbox()
    fleet = SimulatedSirenFleet(mqtt_broker.url, ["fh-siren-01"])
    async with engine_channel(mqtt_broker, inbox, backoff=Backoff(first=0.1, cap=0.5)) as channel, running(fleet):
        await mqtt_broker.stop()
        await eventually(lambda: not channel.connected)

        with pytest.raises(DeliveryError) as failed:
            await channel.send(siren_message("fh-siren-01"))
        assert failed.value.retryable

        await mqtt_broker.start()
        async with asyncio.timeout(WAIT_S):
            await channel.wait_connected()
        await eventually(lambda: fleet.connected)  # the sirens are back too

        warning = siren_message("fh-siren-01")
        await channel.send(warning)
        await inbox.report("fh-siren-01", warning.delivery_id, "sounding")


async def test_send_refuses_what_no_retry_can_fix_and_asks_for_retry_when_offline() -> None:
    channel = MqttDeviceChannel("mqtt://127.0.0.1:1")  # never started: not connected

    with pytest.raises(DeliveryError) as no_device:
        await channel.send(siren_message("a/b"))
    assert not no_device.value.retryable

    with pytest.raises(DeliveryError) as task:
        await channel.send(siren_message("fh-siren-01", purpose=Purpose.TASK))
    assert not task.value.retryable

    with pytest.raises(DeliveryError) as offline:
        await channel.send(siren_message("fh-siren-01"))
    assert offline.value.retryable


def test_broker_urls() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == parse_mqtt_url("tcp://127.0.0.1:1884")
    secure = parse_mqtt_url("mqtts://duty:s%40cret@mqtt.example.cn")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "duty", "s@cret")
    with pytest.raises(ValueError, match="mqtt://"):
        parse_mqtt_url("http://127.0.0.1")
