"""Fixtures for the board and action tests: a sandbox engine on 凤凰镇 and 宁厂镇 with the API keys of
board_setup, and an API client on it. A module defining its own `engine` or `api` uses its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from alerting.model.clock import ManualClock
from alerting.store.db import Database
from config.wiring import AssembledEngine
from tests.alerting.board_setup import KEYS, add_ningchang, api_client
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine


@pytest.fixture
async def engine(db: Database, clock: ManualClock, county: SmallCounty) -> AsyncIterator[AssembledEngine]:
    await add_ningchang(db)
    e = sandbox_engine(db, clock)
    e.core.api_keys.update(KEYS)
    await e.start(loops=False)
    yield e
    await e.stop()


@pytest.fixture
async def api(engine: AssembledEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(engine.core) as client:
        yield client
