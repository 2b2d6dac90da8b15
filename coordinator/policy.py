"""Queue policy: lease length, attempt cap and retry backoff."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class QueuePolicy:
    """Lease length, attempt cap and retry backoff."""

    lease_seconds: float = 120.0
    max_attempts: int = 3
    backoff_base: float = 10.0
    backoff_cap: float = 600.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "QueuePolicy":
        """Build from the app config."""
        return cls(float(config["LEASE_SECONDS"]), int(config["MAX_ATTEMPTS"]),
                   float(config["RETRY_BACKOFF_SECONDS"]), float(config["RETRY_BACKOFF_CAP_SECONDS"]))

    @property
    def heartbeat_interval(self) -> float:
        """How often workers should heartbeat: a quarter of the lease, at most 30 s."""
        return min(self.lease_seconds / 4.0, 30.0)

    def backoff(self, attempt: int, rand: float | None = None) -> float:
        """Delay before retry `attempt`+1: base*2^(attempt-1)*(0.5+0.5*rand), capped."""
        rand = random.random() if rand is None else rand
        exponent = min(max(attempt - 1, 0), 30)
        return min(self.backoff_cap, self.backoff_base * (2 ** exponent) * (0.5 + 0.5 * rand))
