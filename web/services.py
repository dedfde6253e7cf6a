"""The per-app objects every view needs (settings, job store, intake, runner, metrics), kept in `app.extensions`."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import current_app

from web.cleanup import Cleaner
from web.config import Config
from web.intake import Intake
from web.jobs import JobStore
from web.metrics import Metrics
from web.options import HealthLog
from web.owner_ids import OwnerIds
from web.runner import Runner
from web.sessions import SessionBook
from web.shares import StreamSlots
from web.signins import SignInGuard

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


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions[EXTENSION_KEY]
