"""Simulated village sirens for the demo and the tests: they hear commands, play them once, and ack.

A fleet shares one MQTT connection (a county's worth of sirens would otherwise be hundreds of
clients in one process). A single SimulatedSiren has its own connection and last will, so a
power cut can be shown: the broker, not the siren, tells the engine it went offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import uuid
from collections.abc import Iterable
from typing import Any

import aiomqtt
import structlog

from alerting.model.clock import Clock, SystemClock
from channels.mqtt.devices import Backoff, DeviceTopics, make_client, parse_mqtt_url, tls_context_for

log = structlog.get_logger()

SOUNDING_ACTIONS = frozenset({"sound", "test", "play"})


class SimulatedSirenFleet:
    """Sirens `device_ids` on one connection. Devices in `silent` hear commands but never answer (broken sirens)."""

    def __init__(
        self,
        url: str,
        device_ids: Iterable[str],
        *,
        topic_prefix: str = "jiaoying",
        silent: frozenset[str] = frozenset(),
        seed: int = 0,
        delay_s: tuple[float, float] = (0.05, 0.3),
        client_id: str | None = None,
        connect_timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or SystemClock()  # the demo's drill clock, so acks carry drill time
        self.connect_timeout = connect_timeout
        self.endpoint = parse_mqtt_url(url)
        self.topics = DeviceTopics(topic_prefix)
        self.device_ids = tuple(device_ids)
        self.silent = frozenset(silent)
        self.delay_s = delay_s
        self.client_id = client_id or f"jiaoying-sim-{uuid.uuid4().hex[:12]}"
        # how many distinct commands each siren actually played; a resend must not add to it
        self.played: dict[str, int] = dict.fromkeys(self.device_ids, 0)
        # every command each siren heard, resends and silent sirens included
        self.heard: dict[str, list[dict[str, Any]]] = {d: [] for d in self.device_ids}
        # (device_id, command_id, status) in the order the acks went out
        self.acks_sent: list[tuple[str, str, str]] = []
        self._state: dict[str, dict[str, str]] = {d: {} for d in self.device_ids}
        self._rng = random.Random(seed)  # noqa: S311 -- seeded on purpose: the same run every time
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._off = False

    @property
    def connected(self) -> bool:
        """Listening for commands (and every siren announced online)."""
        return self._ready.is_set()

    def _will(self) -> aiomqtt.Will | None:
        return None  # one connection cannot carry a will per siren

    async def start(self) -> None:
        """Connect, listen for commands and announce every siren online (retained)."""
        self._off = False
        self._task = asyncio.create_task(self._run(), name=f"sirens-{self.client_id}")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            await self._shutdown()
            raise

    async def stop(self, *, announce_offline: bool = True) -> None:
        """Switch off cleanly: say offline (retained) and DISCONNECT, so no last will fires."""
        client = self._client if self._ready.is_set() else None
        if announce_offline and client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                for device_id in self.device_ids:
                    await self._publish_status(client, device_id, online=False)
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._off = True
        for answer in self._answers:
            answer.cancel()
        await asyncio.gather(*self._answers, return_exceptions=True)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        tls_context = await tls_context_for(self.endpoint)
        backoff = Backoff(first=0.2, cap=5.0)
        while not self._off:
            client = make_client(
                self.endpoint, identifier=self.client_id, clean_session=True, will=self._will(), tls_context=tls_context
            )
            try:
                async with client:
                    # Listen before saying online: the engine may send the moment it sees us.
                    await client.subscribe(self.topics.all("command"), qos=1)
                    for device_id in self.device_ids:
                        await self._publish_status(client, device_id, online=True)
                    self._client = client
                    self._ready.set()
                    backoff.reset()
                    async for msg in client.messages:
                        self._on_message(msg)
            except aiomqtt.MqttError as exc:
                if not self._off:
                    log.warning("sim.sirens.connection_lost", client_id=self.client_id, error=str(exc))
            finally:
                self._client = None
                self._ready.clear()
            if not self._off:
                await asyncio.sleep(backoff.next_delay())

    def _on_message(self, msg: aiomqtt.Message) -> None:
        parsed = self.topics.parse(str(msg.topic))
        if parsed is None or parsed[1] != "command" or parsed[0] not in self._state:
            return
        device_id = parsed[0]
        try:
            command = json.loads(msg.payload if isinstance(msg.payload, bytes) else str(msg.payload))
            command_id = command["command_id"]
            action = command["action"]
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("sim.sirens.malformed_command", device_id=device_id, error=str(exc))
            return
        self.heard[device_id].append(command)
        if device_id in self.silent:
            return
        task = asyncio.create_task(self._answer(device_id, str(command_id), str(action)))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, device_id: str, command_id: str, action: str) -> None:
        state = self._state[device_id]
        if command_id in state:
            # A resend of something already heard: say where it stands again, do not play it again.
            await asyncio.sleep(self._delay())
            await self._ack(device_id, command_id, state[command_id], "duplicate command; not replayed")
            return
        state[command_id] = "received"
        await asyncio.sleep(self._delay())
        await self._ack(device_id, command_id, "received")
        await asyncio.sleep(self._delay())
        if action in SOUNDING_ACTIONS:
            self.played[device_id] += 1
            state[command_id] = "sounding"
        else:
            state[command_id] = "done"
        await self._ack(device_id, command_id, state[command_id])

    def _delay(self) -> float:
        return self._rng.uniform(*self.delay_s)

    async def _ack(self, device_id: str, command_id: str, status: str, detail: str | None = None) -> None:
        client = self._client
        if client is None:
            log.warning("sim.sirens.ack_dropped", device_id=device_id, command_id=command_id, reason="offline")
            return
        payload = {"command_id": command_id, "status": status, "at": self.clock.now().isoformat(), "detail": detail}
        try:
            await client.publish(self.topics.ack(device_id), json.dumps(payload).encode(), qos=1)
        except aiomqtt.MqttError as exc:
            log.warning("sim.sirens.ack_dropped", device_id=device_id, command_id=command_id, reason=str(exc))
            return
        self.acks_sent.append((device_id, command_id, status))

    async def _publish_status(self, client: aiomqtt.Client, device_id: str, *, online: bool) -> None:
        payload = json.dumps({"online": online, "at": self.clock.now().isoformat(), "simulated": True}).encode()
        await client.publish(self.topics.status(device_id), payload, qos=1, retain=True)


class SimulatedSiren(SimulatedSirenFleet):
    """One siren on its own connection, with a last will that marks it offline (retained) if it dies."""

    def __init__(
        self,
        url: str,
        device_id: str,
        *,
        topic_prefix: str = "jiaoying",
        silent: bool = False,
        seed: int = 0,
        delay_s: tuple[float, float] = (0.05, 0.3),
    ) -> None:
        super().__init__(
            url,
            [device_id],
            topic_prefix=topic_prefix,
            silent=frozenset({device_id}) if silent else frozenset(),
            seed=seed,
            delay_s=delay_s,
            client_id=f"jiaoying-siren-{device_id}-{uuid.uuid4().hex[:6]}",
        )
        self.device_id = device_id

    def _will(self) -> aiomqtt.Will:
        # No "at": the will was written at connect time, the engine stamps when it arrives.
        payload = json.dumps({"online": False, "reason": "connection lost", "simulated": True}).encode()
        return aiomqtt.Will(self.topics.status(self.device_id), payload, qos=1, retain=True)

    async def cut_power(self) -> None:
        """Die without DISCONNECT, as a siren does when its power or uplink fails; the broker sends the will."""
        self._off = True
        client = self._client
        if client is not None:
            # aiomqtt has no way to drop a connection uncleanly; shutting the socket under paho
            # is what a power cut looks like from the broker's side.
            sock = client._client.socket()
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)
        if self._task is not None:
            # Let the listener notice the dead socket on its own; cancelling it first would make
            # the client try a polite DISCONNECT on the way out.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(self._task)
        await self._shutdown()
