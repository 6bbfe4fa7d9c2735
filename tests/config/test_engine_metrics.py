"""`jiaoying engine run --metrics-port`: whoever keeps the engine running scrapes each engine process for what only
it knows. The story: an engine on a real mosquitto; a siren sends junk; the broker goes away and comes back. The
scrape says so at each turn, in the numbers Prometheus would store."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import MosquittoBroker, start_mosquitto
from tests.config.test_startup import GOOD_SECRET, JIAOYING, environment
from tests.fakes.server import free_port

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@asynccontextmanager
async def engine_with_metrics(tmp_path: Path, broker: MosquittoBroker, port: int) -> AsyncIterator[str]:
    env = environment(tmp_path, JIAOYING_SECRET_KEY=GOOD_SECRET, JIAOYING_MQTT_URL=broker.url)
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            JIAOYING, "engine", "run", "--poll", "0.2", "--metrics-port", str(port),
            env=env, cwd=tmp_path, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while "engine running" not in log.read_text(errors="replace"):
                assert process.returncode is None, log.read_text(errors="replace")
                await asyncio.sleep(0.2)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await process.wait()


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as client:
        page = await client.get(url)
    assert page.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page.text)
        for s in family.samples
    }


async def until(url: str, seen: Callable[[Samples], bool]) -> Samples:
    async with asyncio.timeout(30):
        while not seen(got := await scrape(url)):  # noqa: ASYNC110 -- Prometheus polls too
            await asyncio.sleep(0.2)
    return got


DEVICE = (("channel", "device"),)


def up(got: Samples) -> float:
    return got[("jiaoying_link_up", DEVICE)]


def connections(got: Samples) -> float:
    return got[("jiaoying_link_connections_total", DEVICE)]


def rejected(got: Samples, reason: str) -> float:
    return got[("jiaoying_inbound_rejected_total", (*DEVICE, ("reason", reason)))]


async def test_the_engine_reports_its_broker_link_and_what_it_refused(tmp_path: Path) -> None:
    broker = await start_mosquitto(tmp_path)
    try:
        async with engine_with_metrics(tmp_path, broker, free_port()) as url:
            got = await until(url, lambda g: up(g) == 1)
            assert connections(got) == 1
            assert rejected(got, "malformed") == rejected(got, "too_large") == 0
            assert ("jiaoying_circuit_breaker", (("channel", "sms"),)) in got  # 0: closed

            async with aiomqtt.Client("127.0.0.1", broker.port) as siren:
                ack = "jiaoying/devices/fh-siren-01/ack"
                await siren.publish(ack, b"{not json", qos=1)
                await siren.publish(ack, b'{"status": "done"}', qos=1)  # no command id
                too_big = {"command_id": "c1", "status": "done", "detail": "x" * 5000}
                await siren.publish(ack, json.dumps(too_big).encode(), qos=1)
            got = await until(url, lambda g: rejected(g, "malformed") + rejected(g, "too_large") == 3)
            assert (rejected(got, "malformed"), rejected(got, "too_large")) == (2, 1)

            await broker.stop()
            got = await until(url, lambda g: up(g) == 0)
            assert connections(got) == 1

            await broker.start()  # the same port: the engine finds it again on its own
            got = await until(url, lambda g: up(g) == 1)
            assert connections(got) == 2
    finally:
        await broker.stop()


def test_a_metrics_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = environment(tmp_path, JIAOYING_SECRET_KEY=GOOD_SECRET)
        done = subprocess.run(
            [JIAOYING, "engine", "run", "--sandbox-devices", "--metrics-port", str(port)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr
