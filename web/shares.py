"""Per-owner shares: the most of the queue and of the progress streams one owner may hold, so that others are still served.

Uploads and streams without an owner cookie (an API client that keeps no cookies) count as one owner."""

from __future__ import annotations

import math
import threading
from enum import Enum

from web.jobs import QUEUED, JobStore


def share_of(total: int, share: float) -> int:
    """How many of `total` places one owner may hold: `share` of them, and always at least one."""
    return max(1, math.floor(total * share))


def queue_share_refusal(store: JobStore, owner: str | None, queue_size: int, share: float) -> str | None:
    """The person's message when `owner` holds its share of the queue already, else None."""
    limit = share_of(queue_size, share)
    waiting = sum(1 for job in store.in_state(QUEUED) if job.owner == owner)
    if waiting < limit:
        return None
    return (f"you have {waiting} photos waiting already, as many as one person may queue here; "
            "send more when some of them are done")


class Refusal(Enum):
    """Why a stream slot was not given: every slot is taken, or the owner's share of them."""

    ALL = "all"
    SHARE = "share"


class StreamSlots:
    """The open /events streams: at most `total` at once, at most share_of(total, share) per owner."""

    def __init__(self, total: int, share: float):
        self.total = total
        self.per_owner = share_of(total, share) if total else 0
        self._open: dict[str | None, int] = {}
        self._lock = threading.Lock()

    def take(self, owner: str | None) -> Refusal | None:
        """Takes a slot for `owner` (None), or says why not."""
        with self._lock:
            if sum(self._open.values()) >= self.total:
                return Refusal.ALL
            if self._open.get(owner, 0) >= self.per_owner:
                return Refusal.SHARE
            self._open[owner] = self._open.get(owner, 0) + 1
            return None

    def give_back(self, owner: str | None) -> None:
        with self._lock:
            left = self._open.get(owner, 0) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)
