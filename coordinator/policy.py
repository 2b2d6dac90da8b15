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
    start_lease_seconds: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "QueuePolicy":
        """Build from the app config."""
        return cls(float(config["LEASE_SECONDS"]), int(config["MAX_ATTEMPTS"]),
                   float(config["RETRY_BACKOFF_SECONDS"]), float(config["RETRY_BACKOFF_CAP_SECONDS"]),
                   float(config.get("START_LEASE_SECONDS", 30.0)))

    @property
    def claim_lease_seconds(self) -> float:
        """The lease a claim grants: short until the first heartbeat confirms the start."""
        return min(self.lease_seconds, self.start_lease_seconds)

    @property
    def heartbeat_interval(self) -> float:
        """How often workers should heartbeat: well within both the start lease and the lease."""
        return min(self.lease_seconds / 4.0, self.start_lease_seconds / 3.0, 30.0)

    def backoff(self, attempt: int, rand: float | None = None) -> float:
        """Delay before retry `attempt`+1: base*2^(attempt-1)*(0.5+0.5*rand), capped."""
        rand = random.random() if rand is None else rand
        exponent = min(max(attempt - 1, 0), 30)
        return min(self.backoff_cap, self.backoff_base * (2 ** exponent) * (0.5 + 0.5 * rand))
