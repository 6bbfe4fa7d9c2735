"""The async engine, sessions, and upgrading the schema with alembic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Result, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

from alerting.store.tables import core_table
from alerting.store.writer import GroupWriter

MIGRATIONS = Path(__file__).parent / "migrations"
_holding_turn: ContextVar[bool] = ContextVar("holding_sqlite_turn", default=False)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine with the settings every backend needs; SQLite gets WAL and a busy timeout."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """The engine and a session factory; the one object the core passes around to reach the store."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.engine = create_engine(url, **kwargs)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        # SQLite has one writer at a time and its busy handler waits by sleeping, which turns contention
        # between this process's loops into long stalls; queueing them here keeps every transaction short.
        self._sqlite_turn = asyncio.Lock() if self.is_sqlite else None
        # outcomes, hand-overs and provider reports: small writes that share commits
        self.writer = GroupWriter(self.writing)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed on success and rolled back on any error."""
        if self._sqlite_turn is None or _holding_turn.get():
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._sqlite_turn:
            token = _holding_turn.set(True)  # a session opened inside this one must not wait for it
            try:
                async with self._sessions() as session, session.begin():
                    yield session
            finally:
                _holding_turn.reset(token)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for what a screen shows, which writes nothing. On SQLite it does not queue for this
        process's write turn: in WAL mode a reader sees the last commit and neither waits for a writer nor holds
        one up, and a board read queued behind a burst of provider reports showed answers seconds late. BEGIN
        makes its statements one snapshot (the driver would otherwise run each on its own)."""
        if self._sqlite_turn is None or _holding_turn.get() or self.engine.url.database in (None, "", ":memory:"):
            async with self.session() as s:
                yield s
            return
        async with self._sessions() as session, session.begin():
            await (await session.connection()).exec_driver_sql("BEGIN")
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A session for work that reads and then writes what it read (a hand-over checks the alert is still
        active, then marks the delivery handed). PostgreSQL's jobs lock the rows they read; on SQLite the driver
        would open the transaction only at the first write, so another writer (another process, or this
        process's other event loop) could commit in between. BEGIN IMMEDIATE takes SQLite's one write lock
        first, so the reads see every commit before and none after."""
        async with self.session() as s:
            if self.is_sqlite:
                await (await s.connection()).exec_driver_sql("BEGIN IMMEDIATE")
            yield s

    async def upgrade(self) -> None:
        await asyncio.to_thread(upgrade, self.url)

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema up to date. Blocking: call it from a thread when a loop is running."""
    command.upgrade(alembic_config(url), revision)


INSERT_BATCH = 5000  # rows per INSERT: a large plan goes in as several statements rather than one of every row


async def insert_rows(session: AsyncSession, model: type[SQLModel], rows: Sequence[dict[str, Any]]) -> None:
    """Plain rows through Core inserts: the ORM's bulk path costs more than the database does for these.

    Every row must name the same columns: one insert takes its columns from its first row, so a later row with
    more would lose them without a word, and one with fewer is refused; either way it is refused here, naming it."""
    table = core_table(model)
    if rows:
        columns = rows[0].keys()
        for n, row in enumerate(rows):
            if row.keys() != columns:
                differ = sorted(set(row) ^ set(columns))
                raise ValueError(f"{table.name} row {n} does not name the columns the first row does: {differ}")
    conn = await session.connection()
    for i in range(0, len(rows), INSERT_BATCH):
        await conn.execute(insert(table), rows[i : i + INSERT_BATCH])


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched (the async session types its result as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount
