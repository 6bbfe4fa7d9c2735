"""The engine's loops on an event loop of their own, beside the web server's.

In one loop a storm's web load (board reads, reports, hundreds of answers a second) delayed deadlines by
tens of seconds: the escalation's short transactions queued behind the board's and the loop was busy. On
its own loop, with its own store connection (and, on SQLite, its own turn at the file), a deadline waits
for nothing the web does. The two meet only in the database and in `wake`, which crosses threads safely.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import structlog

from config.wiring import AssembledEngine

log = structlog.get_logger()

STOP_TIMEOUT_S = 30.0


class EngineThread:
    def __init__(self, engine: AssembledEngine, *, poll_s: float = 1.0) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="jiaoying-engine", daemon=True)

    async def start(self) -> None:
        """Start the loops; returns once the engine resumed what was in flight, or raises why it could not."""
        self._thread.start()
        await asyncio.wrap_future(self._started)

    def wake(self) -> None:
        """Something is due now (an alert issued, an answer asking for help): from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.engine.wake)

    async def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.error("engine.stop_timed_out", seconds=STOP_TIMEOUT_S)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to start(), or logged when it comes later
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                log.exception("engine.thread_failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.engine.start(poll_s=self.poll_s)
            self._started.set_result(None)
            await self._stop.wait()
        finally:
            await self.engine.stop()
