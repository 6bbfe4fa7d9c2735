"""A token bucket per provider account: the core paces sends, adapters never sleep to stay under a limit."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate, self.capacity = per_second, float(burst)
        self._tokens, self._stamp = float(burst), time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:  # waiters are served in order, so nobody starves
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1

    def try_acquire(self) -> float:
        """Take a token if there is one and return 0; otherwise take nothing and return the seconds to wait."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate
