"""The group-committing writer: many small writes, one transaction every few milliseconds.

Each send's hand-over, each outcome and each provider report is a tiny write. Committing each one alone would
make the database's commit rate the ceiling on sending (SQLite fsyncs the WAL per commit; PostgreSQL waits for
the WAL flush). The writer queues jobs, runs whatever has gathered in one transaction, and answers each caller
only after that transaction committed, so "written" still means durable. A job that fails is run again alone so
that it fails by itself and never takes the jobs batched with it down too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger()

T = TypeVar("T")
Job = Callable[[AsyncSession], Awaitable[T]]


@dataclass
class _Queued(Generic[T]):
    job: Job[T]
    done: asyncio.Future[T] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupWriter:
    def __init__(
        self,
        open_session: Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]],
        *,
        max_batch: int = 500,
        gather_s: float = 0.002,
    ) -> None:
        self._open_session = open_session
        self.max_batch, self.gather_s = max_batch, gather_s
        self._queue: asyncio.Queue[_Queued[Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # transactions committed, for benchmarks and tests
        self.jobs = 0

    async def run(self, job: Job[T]) -> T:
        """Run `job` inside a shared transaction; returns once that transaction has committed."""
        queued: _Queued[T] = _Queued(job)
        self._ensure_started().put_nowait(queued)
        return await queued.done

    def _ensure_started(self) -> asyncio.Queue[_Queued[Any]]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._loop(self._queue), name="group-writer")
        assert self._queue is not None
        return self._queue

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, queue: asyncio.Queue[_Queued[Any]]) -> None:
        while True:
            batch = [await queue.get()]
            # a short gather lets concurrent senders share the commit; never longer than a few milliseconds
            if queue.empty() and self.gather_s:
                await asyncio.sleep(self.gather_s)
            while not queue.empty() and len(batch) < self.max_batch:
                batch.append(queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Queued[Any]]) -> None:
        results: list[Any] = []
        try:
            async with self._open_session() as s:
                for q in batch:
                    results.append(await q.job(s))
        except asyncio.CancelledError:
            for q in batch:
                q.done.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].done.done():
                    batch[0].done.set_exception(exc)
                return
            log.warning("writer.batch_failed_retrying_alone", jobs=len(batch), error=repr(exc))
            for q in batch:
                await self._commit([q])
            return
        self.commits += 1
        self.jobs += len(batch)
        for q, r in zip(batch, results, strict=True):
            if not q.done.done():
                q.done.set_result(r)


K = TypeVar("K")
R = TypeVar("R")


class Coalesced(Generic[K, R]):
    """Many callers' keys, one set-based job: whatever is waiting when the writer gets to it goes in together.

    `apply(session, keys)` returns a result per key; each caller gets its own once the shared commit is done.
    """

    def __init__(self, writer: GroupWriter, apply: Callable[[AsyncSession, list[K]], Awaitable[dict[K, R]]]) -> None:
        self.writer, self.apply = writer, apply
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []
        self._scheduled = False

    async def __call__(self, key: K) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, done))
        if not self._scheduled:
            self._scheduled = True
            await self._flush()  # this caller carries the batch; the others only wait for their result
        return await done

    async def _flush(self) -> None:
        taken: list[tuple[K, asyncio.Future[R]]] | None = None

        async def job(s: AsyncSession) -> dict[K, R]:
            nonlocal taken
            if taken is None:  # the first run takes the batch; a retry alone runs the same keys again
                taken, self._waiting, self._scheduled = self._waiting, [], False
            return await self.apply(s, [k for k, _ in taken])

        try:
            results = await self.writer.run(job)
        except BaseException as exc:
            if taken is None:  # never ran (the writer was stopped): nobody waiting may be left hanging
                taken, self._waiting, self._scheduled = self._waiting, [], False
            for _, done in taken:
                if done.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()  # shutting down: the waiters are cancelled too, not handed an error to read
                else:
                    done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        assert taken is not None
        for key, done in taken:
            if not done.done():
                done.set_result(results[key])
