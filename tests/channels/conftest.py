"""Fixtures for channel tests: real brokers on free ports, stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.brokers import BROKER_KINDS, RunningBroker, start_broker


@pytest.fixture(params=BROKER_KINDS)
async def mqtt_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningBroker]:
    """Every MQTT test runs on the embedded amqtt broker and on mosquitto."""
    broker = await start_broker(request.param, tmp_path)
    try:
        yield broker
    finally:
        await broker.stop()
