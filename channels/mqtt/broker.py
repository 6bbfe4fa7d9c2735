"""The embedded MQTT broker (amqtt) the engine starts when JIAOYING_MQTT_URL is unset.

One county's sirens fit one small broker, so a duty room can run jiaoying without installing
mosquitto. Production and CI also run against mosquitto; nothing here is amqtt-specific
from the clients' point of view.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

import structlog
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = structlog.get_logger()

# A disconnected persistent session (the engine's) keeps its queued acks this long; long enough
# to survive any restart or upgrade, short enough that abandoned client ids do not pile up.
SESSION_EXPIRY_S = 7 * 24 * 3600


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Lets every client in without marking its session anonymous.

    amqtt's own AnonymousAuthPlugin flags each session it admits as anonymous, and amqtt
    neither queues QoS 1 messages for anonymous sessions while they are offline nor keeps
    them after disconnect. The engine's persistent session exists exactly so that siren acks
    sent during a restart are queued, so that flag must stay off. The listener is bound to
    localhost by default; put a real broker with authentication in front of field devices.
    """

    async def authenticate(self, *, session: Session) -> bool | None:
        return True


class EmbeddedBroker:
    """An amqtt broker on host:port (port 0 picks a free one). Use `async with` or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, session_expiry_s: int = SESSION_EXPIRY_S) -> None:
        self.host = host
        self._requested_port = port
        self._session_expiry_s = session_expiry_s
        self._broker: Broker | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the embedded broker is not started")
        return f"mqtt://{self.host}:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"}},
            "session_expiry_interval": self._session_expiry_s,
            # Only the auth plugin: amqtt's default packet/event loggers and $SYS publisher are noise here.
            "plugins": {f"{OpenAuthPlugin.__module__}.{OpenAuthPlugin.__qualname__}": {}},
        }

    async def start(self) -> None:
        if self._broker is not None:
            return
        _quiet_amqtt_logging()
        broker = Broker(self._config())
        await broker.start()
        self._broker = broker
        self.port = self._requested_port or _bound_port(broker)
        log.info("mqtt.embedded_broker.started", url=self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        await broker.shutdown()
        log.info("mqtt.embedded_broker.stopped", url=f"mqtt://{self.host}:{self.port}")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _bound_port(broker: Broker) -> int:
    # amqtt does not expose the listening socket; with port 0 the only place the chosen port
    # lives is the asyncio server behind the default listener.
    server = broker._servers["default"].instance
    port: int = server.sockets[0].getsockname()[1]
    return port


def _quiet_amqtt_logging() -> None:
    # amqtt logs every connection and packet at INFO; keep it to warnings unless the
    # operator configured these loggers on purpose.
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
