"""Real MQTT brokers for tests: the embedded amqtt one and Debian's mosquitto, each on a free port.

    broker = await start_broker("mosquitto", tmp_path)   # or "amqtt"
    ... broker.url ...
    await broker.stop()      # and `await broker.start()` brings it back on the same port

mosquitto is skipped where it is not installed, except under CI, which installs it: there a
missing binary fails the test instead of silently testing one broker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from pathlib import Path
from typing import Protocol

import pytest

from channels.mqtt.broker import EmbeddedBroker

BROKER_KINDS = ("amqtt", "mosquitto")
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def require_mosquitto() -> str:
    """The mosquitto binary, or skip the test (fail under CI, where it must be installed)."""
    binary = mosquitto_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(
                "mosquitto is not installed, but CI installs it (apt-get install mosquitto): MQTT tests must run"
            )
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return binary


class RunningBroker(Protocol):
    kind: str
    port: int

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def wait_port(port: int) -> None:
    """Until something accepts connections on 127.0.0.1:port (at most START_TIMEOUT_S)."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class AmqttBroker:
    """EmbeddedBroker that can be stopped and started again on the same port."""

    kind = "amqtt"

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._broker: EmbeddedBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._broker is not None:
            return
        broker = EmbeddedBroker(port=self.port)
        await broker.start()
        assert broker.port is not None
        self.port = broker.port
        self._broker = broker

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.stop()


class MosquittoBroker:
    """A mosquitto process with an anonymous, in-memory listener on 127.0.0.1:port."""

    kind = "mosquitto"

    def __init__(self, binary: str, workdir: Path, port: int | None = None, *, settings: str = "") -> None:
        self.binary = binary
        self.workdir = workdir
        self.settings = settings  # more mosquitto.conf lines; none keeps mosquitto's default limits
        self.port = port or free_port()
        self.config_file = workdir / "mosquitto.conf"
        self.log_file = workdir / "mosquitto.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._process is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n{self.settings}"
        )
        with self.log_file.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                self.binary, "-c", str(self.config_file), stdout=log, stderr=log
            )
        self._process = process
        try:
            await self._wait_listening(process)
        except BaseException:
            await self.stop()
            raise

    async def _wait_listening(self, process: asyncio.subprocess.Process) -> None:
        exited = asyncio.create_task(process.wait())
        listening = asyncio.create_task(wait_port(self.port))
        try:
            done, _ = await asyncio.wait({exited, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, listening):
                task.cancel()
            await asyncio.gather(exited, listening, return_exceptions=True)
        if exited in done:
            raise RuntimeError(f"mosquitto exited with {process.returncode}: {self.log_file.read_text()[-2000:]}")
        listening.result()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def start_mosquitto(tmp_path: Path, port: int | None = None) -> MosquittoBroker:
    """A running mosquitto on a free port (skips or, under CI, fails when mosquitto is missing)."""
    binary = require_mosquitto()
    attempts = 1 if port else 3  # a free port can be taken between choosing it and mosquitto binding it
    for attempt in range(attempts):
        broker = MosquittoBroker(binary, tmp_path / "mosquitto", port)
        try:
            await broker.start()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            continue
        return broker
    raise AssertionError("unreachable")


async def start_amqtt(port: int = 0) -> AmqttBroker:
    broker = AmqttBroker(port)
    await broker.start()
    return broker


async def start_broker(kind: str, tmp_path: Path) -> RunningBroker:
    if kind == "amqtt":
        return await start_amqtt()
    if kind == "mosquitto":
        return await start_mosquitto(tmp_path)
    raise ValueError(f"unknown broker kind {kind!r}; one of {BROKER_KINDS}")
