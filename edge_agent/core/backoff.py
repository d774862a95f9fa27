"""Reconnect delays: exponential with full jitter (AWS architecture blog's variant)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next()`` gives the delay before the next attempt; ``reset()`` after a success.

    Full jitter: a uniform draw in [base/2, min(cap, base * 2**attempt)], so a
    fleet that lost its broker at the same moment does not come back in step.
    """

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return self.rng.uniform(min(self.base / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempt = 0
