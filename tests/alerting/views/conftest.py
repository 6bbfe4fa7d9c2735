"""Fixtures of the board tests."""

from __future__ import annotations

from datetime import datetime

import pytest

from alerting.model.access import Principal
from alerting.store.db import Database
from alerting.views import board as board_module
from alerting.views import board_hub as board_hub_module
from alerting.views.board import Board


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The scope of every full board read the hub makes."""
    done: list[str | None] = []
    real_read = board_module.read_board

    async def counted(db: Database, principal: Principal, *, now: datetime) -> Board:
        done.append(principal.unit_path)
        return await real_read(db, principal, now=now)

    monkeypatch.setattr(board_hub_module, "read_board", counted)
    return done
