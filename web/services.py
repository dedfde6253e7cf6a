"""The per-app objects every view needs (settings, job store, intake, runner, metrics), kept in `app.extensions`."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import current_app

from web.jobs.cleanup import Cleaner
from web.jobs.damage import DamageFinder
from web.config import Config
from web.jobs.intake import Intake
from web.jobs.store import JobStore
from web.jobs.metrics import Metrics
from web.guards.health import HealthLog
from web.guards.owner_ids import OwnerIds
from web.jobs.runner import Runner
from web.guards.sessions import SessionBook
from web.guards.shares import StreamSlots
from web.guards.signins import SignInGuard

EXTENSION_KEY = "sr_web"


@dataclass
class Services:
    config: Config
    store: JobStore
    runner: Runner
    intake: Intake
    metrics: Metrics
    cleaner: Cleaner
    # Each open /events stream holds a server thread; this bounds how many can (SR_MAX_EVENT_STREAMS),
    # and how many one owner can (SR_OWNER_SHARE).
    event_streams: StreamSlots
    # Each waiting POST /upload holds one too (SR_MAX_SYNC_WAITS).
    sync_waits: threading.BoundedSemaphore
    health_log: HealthLog
    sessions: SessionBook
    sign_ins: SignInGuard
    owner_ids: OwnerIds
    damage: DamageFinder  # POST /api/damage's searches


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions[EXTENSION_KEY]
