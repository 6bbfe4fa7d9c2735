"""A token bucket per provider account: the core paces sends, adapters never sleep to stay under a limit."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    # `clock` lets a test move time instead of sleeping; `acquire` still sleeps on the loop, so keep the default there
    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate, self.capacity, self._clock = per_second, float(burst), clock
        self._tokens, self._stamp = float(burst), clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:  # waiters are served in order, so nobody starves
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1

    def pause(self, seconds: float) -> None:
        """The provider asked us to slow down: no token for anyone until `seconds` from now."""
        self._refill()
        self._tokens = min(self._tokens, 1 - seconds * self.rate)

    def try_acquire(self) -> float:
        """Take a token if there is one and return 0; otherwise take nothing and return the seconds to wait."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def wait(self) -> float:
        """The seconds until a token is there (0: now), taking nothing."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def charge(self) -> None:
        """Take a token for something already done, into debt if none is left: the debt is waited off later."""
        self._refill()
        self._tokens -= 1


class PerClient:
    """A token bucket per client address, for what a script could hammer (signing in runs argon2 and audits)."""

    def __init__(
        self, per_minute: float, burst: int, keep: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second, self.burst, self.keep, self._clock = per_minute / 60, burst, keep, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, client: str) -> TokenBucket:
        bucket = self._buckets.pop(client, None) or TokenBucket(self.per_second, self.burst, self._clock)
        self._buckets[client] = bucket  # most recent last; the oldest are forgotten beyond `keep`
        while len(self._buckets) > self.keep:
            self._buckets.popitem(last=False)
        return bucket

    def try_acquire(self, client: str) -> float:
        """0 if this client may go ahead now, else the seconds it should wait."""
        return self._bucket(client).try_acquire()

    def wait(self, client: str) -> float:
        """The seconds this client should wait (0: none), counting nothing."""
        return self._bucket(client).wait()

    def charge(self, client: str) -> None:
        """Count something this client did after it was let through, even past its burst (see TokenBucket.charge)."""
        self._bucket(client).charge()
