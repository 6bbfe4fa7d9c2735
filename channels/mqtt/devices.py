"""Village sirens and loudspeakers over MQTT: commands out, acks and online status back.

Topics, under a configurable prefix (default "jiaoying"), all QoS 1:
  {prefix}/devices/{device_id}/command   engine -> device
  {prefix}/devices/{device_id}/ack       device -> engine: received | sounding | done | failed
  {prefix}/devices/{device_id}/status    device -> engine, retained; the device's last will sets online false

The engine keeps a persistent session (clean_session=False) so acks sent while it restarts are
queued by the broker and handed over when it comes back. The session is the client id's, so the id
must be the same for a process and its restarts, and different for processes alive at the same time:
a broker drops the older of two clients with one id. `engine_client_id` names it from the engine's
node slot (alerting.liveness). Every engine subscribed gets every ack; the core records each once.
With a shared subscription group (MQTT 5 brokers: mosquitto 2, EMQX) the connection speaks MQTT 5
and takes acks on `$share/<group>/...`, so each ack goes to one engine of the group and the load is
split; statuses are still heard by every engine, as a shared subscription gets no retained messages.

Each connection first takes in, then asks. When the broker kept our session, what it queued is read
before anything is subscribed, so its ~300 retained statuses do not land on top of a full queue; once
the line has been quiet for a moment the filters are subscribed again, which re-reads every retained
status. Without a session they are subscribed at once. Then the core hears `DevicesReconnected`: a
command whose ack has not come by now lost it on the way and is sent again (alerting.answer.reconnect).
`wait_caught_up` is how the engine holds its deadlines after a start until all of that is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerting.answer.events import DeviceReport, DevicesReconnected, DeviceStatus, EventSink, InboundEvent
from alerting.deliver.link import LinkHealth
from alerting.deliver.port import ChannelLimits, DeliveryError, OutboundMessage, Receipt, Webhook
from alerting.model.clock import Clock, SystemClock, reported_time
from alerting.model.domain import ChannelKind, Level, Purpose

log = structlog.get_logger()

ACK_STATUSES = frozenset({"received", "sounding", "done", "failed"})

# How a siren sounds for each level: the louder the warning, the more urgent the pattern and
# the longer it runs before the device reads the text out.
PATTERNS: Mapping[Level, str] = {
    Level.RED: "rapid",
    Level.ORANGE: "pulsed",
    Level.YELLOW: "slow",
    Level.BLUE: "chime",
}
DURATIONS_S: Mapping[Level, int] = {Level.RED: 180, Level.ORANGE: 120, Level.YELLOW: 60, Level.BLUE: 30}
LIFT_PATTERN = "all_clear"

# A broker takes thousands of QoS 1 publishes a second and a county has hundreds of sirens,
# so these rarely bind; they keep a burst from piling up unacknowledged publishes.
DEFAULT_LIMITS = ChannelLimits(concurrency=100, per_second=500.0, burst=200)

# Acks handled at once on one connection; a broker's in-flight window (mosquitto: 20) usually binds first.
READ_AHEAD = 200

# Caught up: nothing arrived from the broker for QUIET_S, or CATCH_UP_S passed (acks of a fan-out still going on
# never leave the line quiet).
QUIET_S = 0.5
CATCH_UP_S = 20.0

# MQTT 5 keeps a session only as long as the client asks: a day, as deploy/mosquitto.conf keeps 3.1.1 ones
SESSION_EXPIRY_S = 86_400


# ---- addressing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS, default port 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        raise ValueError(f"not an MQTT broker URL (want mqtt://host:port): {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return MqttEndpoint(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def valid_device_id(device_id: str) -> bool:
    # A device id is one topic level: no separators, no wildcards.
    return device_id != "" and not any(c in device_id for c in "/+#\0")


@dataclass(frozen=True)
class DeviceTopics:
    prefix: str = "jiaoying"

    def command(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/command"

    def ack(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/ack"

    def status(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/status"

    def all(self, kind: str) -> str:
        """The filter matching `kind` (command, ack, status) for every device."""
        return f"{self.prefix}/devices/+/{kind}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(device_id, kind) for a device topic under this prefix, else None."""
        head = f"{self.prefix}/devices/"
        if not topic.startswith(head):
            return None
        device_id, sep, kind = topic[len(head) :].partition("/")
        if not sep or "/" in kind or not valid_device_id(device_id):
            return None
        return device_id, kind


def make_client(
    endpoint: MqttEndpoint,
    *,
    identifier: str | None,
    clean_session: bool,
    will: aiomqtt.Will | None = None,
    tls_context: ssl.SSLContext | None = None,
    keepalive: int = 30,
    max_inflight: int = 20,
    mqtt5: bool = False,
) -> aiomqtt.Client:
    """A client speaking MQTT 3.1.1, or with `mqtt5` MQTT 5, where a kept session has to ask for an expiry
    (SESSION_EXPIRY_S) instead of only not being clean."""
    connect = None
    if mqtt5:
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        connect.SessionExpiryInterval = 0 if clean_session else SESSION_EXPIRY_S
    client = aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=identifier,
        will=will,
        tls_context=tls_context,
        keepalive=keepalive,
        timeout=10,
        max_inflight_messages=max_inflight,
        protocol=aiomqtt.ProtocolVersion.V5 if mqtt5 else aiomqtt.ProtocolVersion.V311,
        clean_session=None if mqtt5 else clean_session,
        clean_start=clean_session if mqtt5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=connect,
    )
    # aiomqtt warns once more than 10 calls wait for the broker; a wave of siren commands is
    # expected to have many more in flight.
    client.pending_calls_threshold = 1000
    return client


async def tls_context_for(endpoint: MqttEndpoint) -> ssl.SSLContext | None:
    # Loading the CA bundle reads files; keep it off the event loop.
    return await asyncio.to_thread(ssl.create_default_context) if endpoint.tls else None


class Backoff:
    """Capped exponential backoff with jitter, so a fleet of clients does not reconnect in step."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first
        self._rng = random.Random()  # noqa: S311 -- jitter, not secrets

    def reset(self) -> None:
        self._next = self.first

    def next_delay(self) -> float:
        delay = self._next * self._rng.uniform(0.8, 1.2)
        self._next = min(self._next * 2, self.cap)
        return min(delay, self.cap)


def _watch_session_present(client: aiomqtt.Client) -> dict[str, bool]:
    """Whether the broker's CONNACK said it kept our session: aiomqtt drops the flag, so it is caught on the
    way to aiomqtt's own handler. The dict is filled in by the time `async with client` has entered."""
    seen: dict[str, bool] = {}
    # paho types the handler as any of its callback API versions; aiomqtt's is version 2's
    on_connect = cast(Callable[..., None] | None, client._client.on_connect)

    def record(
        paho: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        seen["present"] = flags.session_present
        if on_connect is not None:
            on_connect(paho, userdata, flags, reason_code, properties)

    client._client.on_connect = record
    return seen


def engine_client_id(slot_name: str) -> str:
    """The client id of the engine process holding `slot_name` ("<node>-<slot>")."""
    return f"jiaoying-{slot_name}"


# ---- payloads -----------------------------------------------------------------------------


def command_payload(message: OutboundMessage, issued_at: datetime) -> dict[str, Any]:
    """The command a device gets for one delivery; the delivery id is the command id, so resends dedup."""
    if message.purpose is Purpose.WARN:
        action, pattern, duration_s = "sound", PATTERNS[message.level], DURATIONS_S[message.level]
    elif message.purpose is Purpose.LIFT:
        action, pattern, duration_s = "stop", LIFT_PATTERN, 0
    else:
        raise DeliveryError(f"a device cannot carry a {message.purpose} message", retryable=False, code="unsupported")
    return {
        "command_id": message.delivery_id,
        "alert_id": message.alert_id,
        "action": action,
        "pattern": pattern,
        "text": message.spoken_text,
        "duration_s": duration_s,
        "issued_at": issued_at.isoformat(),
        "exercise": message.exercise,
    }


# An ack or a status is a few hundred bytes; a device sending more is broken or hostile, and is not read.
MAX_PAYLOAD_BYTES = 4096


def parse_ack(device_id: str, payload: bytes, received_at: datetime) -> DeviceReport:
    """A device's ack; ValueError says what is wrong with it."""
    data = _json_object(payload)
    command_id = data.get("command_id")
    status = data.get("status")
    if not isinstance(command_id, str) or not command_id:
        raise ValueError("ack without a command_id")
    if status not in ACK_STATUSES:
        raise ValueError(f"ack status {status!r} is not one of {sorted(ACK_STATUSES)}")
    detail = data.get("detail")
    return DeviceReport(
        device_id=device_id,
        command_id=command_id,
        status=status,
        at=reported_time(data.get("at"), received_at),
        detail=None if detail is None else str(detail),
    )


def parse_status(device_id: str, payload: bytes, received_at: datetime) -> DeviceStatus:
    data = _json_object(payload)
    online = data.get("online")
    if not isinstance(online, bool):
        raise ValueError("status without a boolean 'online'")
    return DeviceStatus(device_id=device_id, online=online, at=reported_time(data.get("at"), received_at))


def _json_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    data = json.loads(payload)  # ValueError (JSONDecodeError, UnicodeDecodeError) on garbage
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return data


# ---- the channel --------------------------------------------------------------------------


class MqttDeviceChannel:
    """The Channel for DEVICE deliveries: publishes siren commands and reports the devices' acks and status."""

    kind = ChannelKind.DEVICE
    provider = "mqtt"
    sandbox = False
    webhooks: tuple[Webhook, ...] = ()

    def __init__(
        self,
        url: str,
        *,
        topic_prefix: str = "jiaoying",
        client_id: str | None = None,
        limits: ChannelLimits = DEFAULT_LIMITS,
        clock: Clock | None = None,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        backoff: Backoff | None = None,
        shared_group: str | None = None,
    ) -> None:
        if shared_group is not None and not valid_device_id(shared_group):
            raise ValueError(f"MQTT shared subscription group {shared_group!r} must be one topic level, no wildcards")
        self.url = url
        # MQTT 5 only: the engines of one group share the acks, each handled by one of them
        self.shared_group = shared_group
        self.endpoint = parse_mqtt_url(url)
        self.topics = DeviceTopics(topic_prefix)
        # None until named: the engine names it from its slot before starting it. A channel started unnamed
        # gets a random id and a clean session, since nothing could ever pick that session up again.
        self.client_id = client_id
        self.limits = limits
        self._clock: Clock = clock or SystemClock()
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._backoff = backoff or Backoff()
        self._events: EventSink | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self.link = LinkHealth()  # for /metrics: the line to the broker and what was refused on it
        self._caught_up = asyncio.Event()
        self._last_heard = 0.0  # loop time of the last message from the broker
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(channel="device", provider="mqtt", broker=f"{self.endpoint.host}:{self.endpoint.port}")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, events: EventSink) -> None:
        """Connect and subscribe; returns once subscribed, or after connect_timeout while retrying in the background."""
        if self._task is not None:
            raise RuntimeError("the MQTT device channel is already started")
        self._events = events
        self._task = asyncio.create_task(self._run(), name="mqtt-device-listener")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.wait_connected()
        except TimeoutError:
            self._log.warning("mqtt.not_connected_yet", waited_s=self._connect_timeout)

    async def wait_connected(self) -> None:
        """Until connected and subscribed; bound it with asyncio.timeout."""
        await self._connected.wait()

    async def wait_caught_up(self) -> None:
        """Until a connection has taken in what the broker kept for us and the core has asked again the devices
        whose acks were lost (set once, by the first connection that gets that far); bound it with asyncio.timeout.
        """
        await self._caught_up.wait()

    async def send(self, message: OutboundMessage) -> Receipt:
        device_id = message.address.device_id
        if device_id is None or not valid_device_id(device_id):
            raise DeliveryError(f"not a device address: {device_id!r}", retryable=False, code="bad_address")
        command = command_payload(message, self._clock.now())
        client = self._client
        if client is None:
            raise DeliveryError("not connected to the MQTT broker", retryable=True, code="not_connected")
        topic = self.topics.command(device_id)
        try:
            await client.publish(
                topic, json.dumps(command, ensure_ascii=False).encode(), qos=1, timeout=self._publish_timeout
            )
        except aiomqtt.MqttError as exc:
            # The broker may have taken it after all; the resend carries the same command_id and the device dedups.
            raise DeliveryError(f"MQTT publish to {topic} failed: {exc}", retryable=True, code="publish") from exc
        self._log.info(
            "mqtt.command_sent",
            device_id=device_id,
            delivery_id=message.delivery_id,
            alert_id=message.alert_id,
            action=command["action"],
        )
        return Receipt(provider="mqtt", provider_id=message.delivery_id, detail={"topic": topic})

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # Cancelling leaves the client's context, which sends DISCONNECT: a clean goodbye keeps
        # the session (and its subscriptions) on the broker without triggering anything.
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._log.info("mqtt.closed")

    # -- listener ---------------------------------------------------------------------------

    async def _run(self) -> None:
        tls_context = await tls_context_for(self.endpoint)
        persistent = self.client_id is not None
        client_id = self.client_id or f"jiaoying-{uuid.uuid4().hex[:12]}"
        while True:
            client = make_client(
                self.endpoint,
                identifier=client_id,
                clean_session=not persistent,
                tls_context=tls_context,
                max_inflight=self.limits.concurrency,  # paho would otherwise hold back sends beyond 20
                mqtt5=self.shared_group is not None,
            )
            # PUBACK an ack only after the core has taken it: if the engine dies in between,
            # the broker hands the ack over again on reconnect instead of losing it.
            client._client.manual_ack_set(True)
            session = _watch_session_present(client)
            try:
                async with client:
                    connected_at = self._clock.now()
                    # Read before the SUBACK arrives: amqtt hands a persistent session its queued
                    # acks first and waits for their PUBACKs before it answers the SUBSCRIBE.
                    self._last_heard = asyncio.get_running_loop().time()
                    reader = asyncio.create_task(self._read(client))
                    try:
                        kept = persistent and session.get("present", False)
                        if not kept:
                            await self._subscribe(client)
                        self._client = client
                        self._connected.set()
                        self.link.came_up()
                        self._backoff.reset()
                        self._log.info("mqtt.connected", client_id=client_id, persistent=persistent, session_kept=kept)
                        await self._catch_up(client, reader, connected_at, kept=kept)
                        await reader
                    finally:
                        reader.cancel()
                        await asyncio.gather(reader, return_exceptions=True)
            except aiomqtt.MqttError as exc:
                self._log.warning("mqtt.connection_lost", error=str(exc))
            except Exception:
                # Whatever broke this connection, the sirens still need a listener: start over.
                self._log.exception("mqtt.listener_failed")
            finally:
                self._client = None
                self._connected.clear()
                self.link.went_down()
            await asyncio.sleep(self._backoff.next_delay())

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        acks = self.topics.all("ack")
        if self.shared_group is not None:
            # one engine of the group gets each ack; statuses stay for every engine, since a shared
            # subscription is never handed the retained ones
            acks = f"$share/{self.shared_group}/{acks}"
        await client.subscribe([(acks, 1), (self.topics.all("status"), 1)])

    async def _catch_up(
        self, client: aiomqtt.Client, reader: asyncio.Task[None], connected_at: datetime, *, kept: bool
    ) -> None:
        """Take in what the broker kept, re-read the retained statuses, then let the core ask again whoever's
        ack is missing. Returns early if the connection dies meanwhile (the reader then ends)."""
        if not await self._until_quiet(reader):
            return
        if kept:
            # subscribing again replaces the session's subscriptions and hands over every retained status anew
            await self._subscribe(client)
            if not await self._until_quiet(reader):
                return
        assert self._events is not None
        try:
            await self._events(DevicesReconnected(connected_at=connected_at, session_kept=kept))
        except Exception:
            self._log.exception("mqtt.reconcile_failed")  # the plan's own resends and deadlines still run
        self._caught_up.set()
        self._log.info("mqtt.caught_up", waited_s=round((self._clock.now() - connected_at).total_seconds(), 3))

    async def _until_quiet(self, reader: asyncio.Task[None]) -> bool:
        """Until nothing has come for QUIET_S (at most CATCH_UP_S); False if the connection ended meanwhile."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CATCH_UP_S
        while not reader.done():
            now = loop.time()
            quiet_at = self._last_heard + QUIET_S
            if now >= quiet_at or now >= give_up:
                return True
            await asyncio.wait([reader], timeout=min(quiet_at, give_up) - now)
        return False

    async def _read(self, client: aiomqtt.Client) -> None:
        """Handle messages side by side, so a burst of acks shares the writer's commits, and PUBACK each only
        once it is handled, in the order received (MQTT 3.1.1 section 4.6 asks for that order). The broker's
        in-flight window holds back what we have not acknowledged, so this never runs more than it allows."""
        handled: asyncio.Queue[tuple[aiomqtt.Message, asyncio.Task[None]]] = asyncio.Queue(READ_AHEAD)

        async def acknowledge_in_order() -> None:
            while True:
                msg, task = await handled.get()
                await asyncio.wait([task])  # _handle logs its own failures; an ack it could not take is not lost
                if not task.cancelled():
                    client._client.ack(msg.mid, msg.qos)

        acker = asyncio.create_task(acknowledge_in_order(), name="mqtt-puback")
        running: set[asyncio.Task[None]] = set()
        try:
            async for msg in client.messages:
                self._last_heard = asyncio.get_running_loop().time()
                task = asyncio.create_task(self._handle(msg))
                running.add(task)
                task.add_done_callback(running.discard)
                await handled.put((msg, task))
        finally:
            # what is not acknowledged yet comes again from the broker after a reconnect, and is taken once
            acker.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(acker, *running, return_exceptions=True)

    async def _handle(self, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        parsed = self.topics.parse(topic)
        if parsed is None:
            return  # amqtt replays retained messages of other clients' filters; not ours to read
        device_id, kind = parsed
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        now = self._clock.now()
        event: InboundEvent
        try:
            if kind == "ack":
                event = parse_ack(device_id, payload, now)
            elif kind == "status":
                if not payload:
                    return  # an empty retained message only clears the topic
                event = parse_status(device_id, payload, now)
            else:
                return
        except ValueError as exc:
            self.link.refused("too_large" if len(payload) > MAX_PAYLOAD_BYTES else "malformed")
            self._log.warning(
                "mqtt.malformed_payload", topic=topic, error=str(exc), payload=payload[:200].decode(errors="replace")
            )
            return
        assert self._events is not None
        try:
            await self._events(event)
        except Exception:
            # The core failed on one event; the listener must keep serving the others.
            self._log.exception("mqtt.event_sink_failed", topic=topic, device_id=device_id)
