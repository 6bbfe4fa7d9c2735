"""When to try a failed send again."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 2.0
    cap_s: float = 300.0
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds before attempt `attempt + 1`; a provider's Retry-After wins when it asks for longer."""
        backoff: float = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        backoff *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(backoff, retry_after or 0.0)

    def throttle_delay(self, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait when the provider only asked us to slow down: its Retry-After, else a few seconds."""
        wait = retry_after if retry_after and retry_after > 0 else self.base_s
        return min(self.cap_s, wait) * (1 + (rng or random).uniform(0, self.jitter))
