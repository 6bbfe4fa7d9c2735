"""Clocks. Everything that depends on time takes one, so tests and the demo can move it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for this many seconds of this clock's time."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ScaledClock:
    """Clock time runs `speed` times faster than the wall: the demo's five-minute windows pass in seconds."""

    def __init__(self, speed: float, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = start or datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """A clock that moves only when told to; sleepers wake when time passes their deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 7, 1, 2, 0, tzinfo=UTC)
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**kwargs)
        self._changed.set()
        self._changed = asyncio.Event()
        return self._now

    async def sleep(self, seconds: float) -> None:
        until = self._now + timedelta(seconds=seconds)
        while self._now < until:
            await self._changed.wait()


def utc(dt: datetime) -> datetime:
    """Treat a naive datetime as UTC; convert aware ones."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def local_text(dt: datetime | None) -> str:
    """How a time is shown to people: Asia/Shanghai, to the second."""
    if dt is None:
        return ""
    return utc(dt).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def reported_time(raw: object, received_at: datetime) -> datetime:
    """The time a device or gateway says something happened: ISO 8601 with its zone, or Unix seconds (an int or
    a float; milliseconds are recognised by their size). Trusted only when it is not in the future, since field
    clocks drift and nothing can happen after we heard of it; anything else is the time we received it."""
    at: datetime | None = None
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            parsed = None
        at = parsed if parsed is not None and parsed.tzinfo is not None else None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = raw / 1000 if raw > 10**11 else raw  # 10**11 s is the year 5138; as ms it is 1973
        try:
            at = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            at = None
    return min(at, received_at) if at is not None else received_at
