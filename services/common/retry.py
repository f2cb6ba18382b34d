"""The one retry policy: bounded exponential backoff, with optional jitter.

The orchestrator's calls to its backends, the refiner's calls to Triton and `genir up`'s restarts of
a crashed service all wait `backoff(n)` seconds before retry n (0-based).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int | None = 5        # total attempts, first one included; None: the caller's deadline bounds them
    initial_backoff: float = 0.2    # seconds before the first retry
    max_backoff: float = 3.0
    multiplier: float = 2.0
    jitter: bool = True             # equal jitter: spreads the retries of many callers apart

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """cap = min(max, initial * multiplier^retry); with jitter, uniform in [cap/2, cap]."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** retry)
        return (rng or random).uniform(0.5 * cap, cap) if self.jitter else cap

    def allows(self, attempts_made: int) -> bool:
        """Whether another attempt may follow `attempts_made` attempts (deadlines aside)."""
        return self.attempts is None or attempts_made < self.attempts
