"""Answers first: under pressure the expensive reads give way with 503 + Retry-After, never an answer.

A report or a review list costs a core for a second; answers cost milliseconds. On a two-core server a few
auditors re-opening reports during a storm would otherwise queue every grid worker's 收到 behind them. So the
routes that read a lot (reviews, reports, the audit log) share a small number of places; a request that finds
them all taken is told when to try again, and the answer paths never pass through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from starlette.requests import Request

from alerting.web.api.problems import Problem

log = structlog.get_logger()


class ReadShedder:
    def __init__(self, places: int = 8, retry_after_s: int = 5) -> None:
        # a few per core: views of one report share its one rebuild (views.report.cache), so places mostly wait
        self.places = places
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.shed = 0

    def enter(self, path: str) -> None:
        if self.in_flight >= self.places:
            self.shed += 1
            log.warning("web.read_shed", path=path, in_flight=self.in_flight, shed=self.shed)
            raise Problem(
                503,
                "busy",
                "Busy: answers come first",
                f"{self.in_flight} expensive reads are running; try again in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


async def heavy_read(request: Request) -> AsyncIterator[None]:
    """A route dependency: one of the shared places for the request's duration, or 503 at once."""
    shedder: ReadShedder = request.app.state.read_shedder
    shedder.enter(request.url.path)
    try:
        yield
    finally:
        shedder.leave()
