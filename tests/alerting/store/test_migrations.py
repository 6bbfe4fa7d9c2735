"""The migrations build exactly the schema the tables declare, so nothing drifts between them."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import alerting.store.tables  # noqa: F401  (registers the tables)
from alerting.store.db import Database

pytestmark = pytest.mark.both_databases


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_upgraded_database_matches_the_declared_tables(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []
