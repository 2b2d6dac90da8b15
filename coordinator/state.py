"""Per-app runtime objects shared by the views, the reaper and the CLI."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from .gate import CostlyViews, KeyGate
from .metrics import Metrics
from .notify import AppEvents, ClaimNotifier
from .policy import QueuePolicy
from .webhooks import WebhookDispatcher
from .workers import WorkerRegistry

EXTENSION_KEY = "dubfleet"


@dataclass
class CoordinatorState:
    """Everything the coordinator keeps in memory besides the database."""

    storage: Any  # storage.Storage (files under DATA_DIR) or s3storage.S3Storage (direct transfers)
    policy: QueuePolicy
    notifier: ClaimNotifier
    events: AppEvents
    workers: WorkerRegistry
    callbacks: WebhookDispatcher | None  # records webhook deliveries (coordinator.webhooks)
    gate: KeyGate
    costly: CostlyViews
    metrics: Metrics


def get_state(app: Flask | None = None) -> CoordinatorState:
    """The state of `app` (default: the current app)."""
    return (app or current_app).extensions[EXTENSION_KEY]
