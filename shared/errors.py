"""The JSON error body every dubfleet HTTP error uses: {"error": code, "message": text}."""
from __future__ import annotations

from typing import Any


def error_payload(error: str, message: str, **extra: Any) -> dict[str, Any]:
    """Return the standard error body; `extra` keys are added for machine use."""
    return {"error": error, "message": message, **extra}
