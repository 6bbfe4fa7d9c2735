"""Two engines on one mosquitto broker, both on the same machine: each keeps its own MQTT session, both hear every
siren ack, and the store records each ack once. A restarted engine gets its old client id back, and with it the
acks the broker kept for it while it was down.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.answer.events import DeviceReport, InboundEvent
from alerting.answer.inbound import Inbound
from alerting.deliver.port import Channel
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, TargetState
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, AuditEvent, Delivery, InboundSeen, Target
from channels.mqtt.devices import MqttDeviceChannel
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from tests.brokers import MosquittoBroker, start_mosquitto
from tests.conftest import SmallCounty
from tests.harness import RED as HARNESS_RED

pytestmark = pytest.mark.timeout(60)

SIREN = "siren-500238101001"
RED = HARNESS_RED.model_copy(update={"units": ["500238101001"]})  # one village, one siren


class CountedInbound(Inbound):
    """The engine's own inbound, counting the device acks it was handed."""

    def __init__(self, inner: Inbound) -> None:
        super().__init__(inner.db, inner.acks)
        self.acks_heard: Counter[tuple[str, str]] = Counter()

    async def __call__(self, event: InboundEvent) -> None:
        await super().__call__(event)
        if isinstance(event, DeviceReport):  # counted once handled, so the test reads what it wrote
            self.acks_heard[(event.command_id, event.status)] += 1


def engine_on(
    db: Database, clock: ManualClock, broker: MosquittoBroker, shared_group: str | None = None
) -> tuple[AssembledEngine, Counter[tuple[str, str]]]:
    """An engine on its own connections, as another process would have, and the acks it will hear."""
    settings = Settings(
        database_url=db.url,
        public_url="https://jy.example.test",
        secret_key="test-secret",
        mqtt_url=broker.url,
        node="duty-host",
        mqtt_shared_group=shared_group,
    )
    others: dict[ChannelKind, Channel] = {k: SandboxChannel(k) for k in ChannelKind if k is not ChannelKind.DEVICE}
    engine = build_engine(settings, clock=clock, channels=others)
    counted = CountedInbound(engine.inbound)
    engine.inbound = counted
    return engine, counted.acks_heard


def device_channel(engine: AssembledEngine) -> MqttDeviceChannel:
    channel = engine.channels[ChannelKind.DEVICE]
    assert isinstance(channel, MqttDeviceChannel)
    return channel


@asynccontextmanager
async def siren(broker: MosquittoBroker) -> AsyncIterator[tuple[aiomqtt.Client, list[dict[str, object]]]]:
    """A siren that only listens; the test decides what it answers."""
    commands: list[dict[str, object]] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-siren") as client:
        await client.subscribe(f"jiaoying/devices/{SIREN}/command", qos=1)

        async def listen() -> None:
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                commands.append(json.loads(msg.payload))

        task = asyncio.create_task(listen())
        try:
            yield client, commands
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def answer(client: aiomqtt.Client, command_id: str, status: str) -> None:
    payload = {"command_id": command_id, "status": status, "at": "2026-07-01T02:00:30+00:00"}
    await client.publish(f"jiaoying/devices/{SIREN}/ack", json.dumps(payload).encode(), qos=1)


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not condition():  # noqa: ASYNC110 (the counters have no event to wait on)
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within 10 s: {what}")


async def siren_records(db: Database, delivery_id: str) -> tuple[list[Acknowledgement], list[AuditEvent], int]:
    async with db.session() as s:
        acks = list(
            (await s.execute(select(Acknowledgement).where(col(Acknowledgement.delivery_id) == delivery_id))).scalars()
        )
        events = list(
            (
                await s.execute(
                    select(AuditEvent)
                    .where(col(AuditEvent.kind).in_(["target.answered", "ack.repeated"]))
                    .order_by(col(AuditEvent.seq))
                )
            ).scalars()
        )
        # the answers taken in, by key (provider reports keep keys of their own, "report:...")
        seen = len(
            list((await s.execute(select(InboundSeen).where(col(InboundSeen.key).startswith("device:")))).scalars())
        )
    return acks, [e for e in events if e.data.get("delivery") == delivery_id], seen


async def test_two_engines_on_one_broker_keep_their_sessions_and_record_each_siren_ack_once(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path
) -> None:
    broker = await start_mosquitto(tmp_path)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(broker.stop)
        first, first_heard = engine_on(db, clock, broker)
        second, second_heard = engine_on(db, clock, broker)
        await first.start(loops=False)
        stack.push_async_callback(first.stop)
        await second.start(loops=False)
        stack.push_async_callback(second.stop)
        assert device_channel(first).client_id == "jiaoying-duty-host-0"
        assert device_channel(second).client_id == "jiaoying-duty-host-1"
        client, commands = await stack.enter_async_context(siren(broker))

        await first.alerts.trigger(RED, actor="duty:test")
        await first.dispatcher.drain()
        await until(lambda: len(commands) == 1, "the siren hears its command")
        command_id = str(commands[0]["command_id"])

        await answer(client, command_id, "sounding")
        await until(
            lambda: first_heard[(command_id, "sounding")] == 1 and second_heard[(command_id, "sounding")] == 1,
            "both engines hear the ack",
        )
        acks, events, _ = await siren_records(db, command_id)
        assert [(a.counted, a.feedback) for a in acks] == [(True, {"device_status": "sounding"})]
        assert [e.kind for e in events] == ["target.answered"]
        async with db.session() as s:
            target = await s.scalar(select(Target).join(Delivery).where(col(Delivery.id) == command_id))
        assert target is not None and target.state == TargetState.ANSWERED.value
        assert device_channel(first).connected and device_channel(second).connected  # nobody was pushed off

        # the first engine restarts; the siren's next word arrives while it is down
        await first.stop()
        await answer(client, command_id, "done")
        await until(lambda: second_heard[(command_id, "done")] == 1, "the running engine hears the ack")
        restarted, restarted_heard = engine_on(db, clock, broker)
        await restarted.start(loops=False)
        stack.push_async_callback(restarted.stop)
        assert device_channel(restarted).client_id == "jiaoying-duty-host-0"  # its old session, kept by the broker
        await until(lambda: restarted_heard[(command_id, "done")] == 1, "the restarted engine gets the queued ack")

        acks, events, seen = await siren_records(db, command_id)
        assert [a.feedback for a in acks] == [{"device_status": "sounding"}, {"device_status": "done"}]
        assert [e.kind for e in events] == ["target.answered", "ack.repeated"]
        assert seen == 2
    log = broker.log_file.read_text()
    assert "already connected" not in log, log[-2000:]


async def test_engines_in_a_shared_group_split_the_siren_acks_and_record_each_once(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path
) -> None:
    """With an MQTT 5 shared subscription each ack reaches one engine of the group, not every engine: the two
    engines' counts add up to what the sirens sent, both take a share, and each answer is recorded once."""
    broker = await start_mosquitto(tmp_path)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(broker.stop)
        engines = [engine_on(db, clock, broker, shared_group="duty-room") for _ in range(2)]
        for engine, _ in engines:
            await engine.start(loops=False)
            stack.push_async_callback(engine.stop)
        (first, first_heard), (second, second_heard) = engines
        sirens = await stack.enter_async_context(aiomqtt.Client("127.0.0.1", broker.port, identifier="test-sirens"))
        await sirens.subscribe("jiaoying/devices/+/command", qos=1)
        commands: dict[str, str] = {}  # command_id -> device

        async def listen() -> None:
            async for msg in sirens.messages:
                assert isinstance(msg.payload, bytes)
                commands[json.loads(msg.payload)["command_id"]] = str(msg.topic).split("/")[2]

        listener = asyncio.create_task(listen())
        stack.callback(listener.cancel)
        issued = await first.alerts.trigger(HARNESS_RED, actor="duty:test")
        await first.dispatcher.drain()
        async with db.session() as s:
            sent = list(
                (
                    await s.execute(
                        select(col(Delivery.id)).where(
                            col(Delivery.alert_id) == issued.alert_id, col(Delivery.channel) == ChannelKind.DEVICE.value
                        )
                    )
                ).scalars()
            )
        await until(lambda: set(commands) == set(sent), f"the {len(sent)} sirens hear their commands")

        published = 0
        for command_id, device in commands.items():
            for status in ("received", "sounding", "done"):
                for _ in range(3):  # a siren that says it again, as a flaky uplink makes them do
                    payload = {"command_id": command_id, "status": status, "at": "2026-07-01T02:00:30+00:00"}
                    await sirens.publish(f"jiaoying/devices/{device}/ack", json.dumps(payload).encode(), qos=1)
                    published += 1
        await until(
            lambda: first_heard.total() + second_heard.total() >= published, f"the {published} acks are handled"
        )
        await asyncio.sleep(0.5)  # an ack handed to both engines would show up now
        assert first_heard.total() + second_heard.total() == published  # each ack went to one engine
        assert first_heard.total() > 0 and second_heard.total() > 0, (first_heard, second_heard)
        for command_id in commands:
            acks, events, _ = await siren_records(db, command_id)
            assert [a.feedback for a in acks] == [{"device_status": "sounding"}, {"device_status": "done"}]
            assert [e.kind for e in events] == ["target.answered", "ack.repeated"]
        assert device_channel(first).connected and device_channel(second).connected

        # one engine restarts while sirens speak: whether the broker holds its share for it or hands it to the
        # other, every ack is handled once, by one of them
        await first.stop()
        for command_id, device in commands.items():
            payload = {"command_id": command_id, "status": "done", "at": "2026-07-01T02:01:00+00:00"}
            await sirens.publish(f"jiaoying/devices/{device}/ack", json.dumps(payload).encode(), qos=1)
        restarted, restarted_heard = engine_on(db, clock, broker, shared_group="duty-room")
        await restarted.start(loops=False)
        stack.push_async_callback(restarted.stop)
        late = len(commands)
        await until(
            lambda: first_heard.total() + second_heard.total() + restarted_heard.total() >= published + late,
            "the acks sent during the restart are handled",
        )
        await asyncio.sleep(0.5)
        assert first_heard.total() + second_heard.total() + restarted_heard.total() == published + late
