"""A circuit breaker per channel: stop hammering a provider that is down, try again after a pause.

While open, the dispatcher leaves that channel's deliveries queued (nothing is dropped) and /healthz
shows the channel as down. After the cooldown one round is let through; its outcome closes or reopens it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from alerting.model.clock import Clock


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, clock: Clock, *, failures_to_open: int = 5, cooldown: timedelta = timedelta(seconds=30)) -> None:
        self.clock, self.failures_to_open, self.cooldown = clock, failures_to_open, cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at: datetime | None = None
        self.last_error: str | None = None

    def allow(self) -> bool:
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            if self.clock.now() - self.opened_at < self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
        return True

    def succeeded(self) -> None:
        self.state, self.failures, self.opened_at = BreakerState.CLOSED, 0, None

    def failed(self, error: str) -> None:
        """A failure that says the provider itself is in trouble (retryable), not a bad recipient."""
        self.failures += 1
        self.last_error = error
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failures_to_open:
            self.state, self.opened_at = BreakerState.OPEN, self.clock.now()
