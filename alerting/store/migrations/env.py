"""Alembic environment: runs migrations over the project's async engine."""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import alerting.store.tables  # noqa: F401  (registers the tables on the metadata)
from alerting.store.db import create_engine

target_metadata = SQLModel.metadata

# Every command upgrades the schema first; alembic's INFO lines ("Context impl SQLiteImpl", "Will assume
# non-transactional DDL") would then open every command's output. Real problems still come through as warnings.
logging.getLogger("alembic").setLevel(logging.WARNING)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
