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
    # Inputs up to this size travel inside the claim reply (-1: none); such a claim counts as
    # started at once, since no download call will confirm it.
    inline_input_bytes: int = -1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "QueuePolicy":
        """Build from the app config."""
        return cls(float(config["LEASE_SECONDS"]), int(config["MAX_ATTEMPTS"]),
                   float(config["RETRY_BACKOFF_SECONDS"]), float(config["RETRY_BACKOFF_CAP_SECONDS"]),
                   float(config.get("START_LEASE_SECONDS", 30.0)), _inline_bytes(config))

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


def _inline_bytes(config: Mapping[str, Any]) -> int:
    """INLINE_INPUT_KB in bytes; -1 when off or when inputs live in object storage (workers
    fetch those from presigned URLs)."""
    kib = int(config.get("INLINE_INPUT_KB", 0) or 0)
    direct = str(config.get("STORAGE_URL") or "").lower().startswith("s3://")
    return -1 if kib <= 0 or direct else kib * 1024
