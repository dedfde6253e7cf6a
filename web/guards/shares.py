"""Fair shares: the most of the queue and of the progress streams one owner, and one client address, may hold, so that others are still served.

Uploads and streams without an owner cookie (an API client that keeps no cookies) count as one owner; every
one of them also counts for its address, so that made-up owners from one address share that address's part."""

from __future__ import annotations

import math
import threading
from collections import Counter
from enum import Enum

from web.jobs.store import QUEUED, JobStore


def share_of(total: int, share: float) -> int:
    """How many of `total` places one owner (or address) may hold: `share` of them, and always at least one."""
    return max(1, math.floor(total * share))


def queue_share_refusal(store: JobStore, owner: str | None, address: str, queue_size: int,
                        share: float) -> str | None:
    """The person's message when `owner` or `address` holds its share of the queue already, else None."""
    limit = share_of(queue_size, share)
    queued = store.in_state(QUEUED)
    mine = sum(1 for job in queued if job.owner == owner)
    if mine >= limit:
        return (f"you have {mine} photos waiting already, as many as one person may queue here; "
                "send more when some of them are done")
    from_address = sum(1 for job in queued if job.client_address == address)
    if from_address >= limit:
        return (f"{from_address} photos sent from your network are waiting already, as many as one network may "
                "queue here; send more when some of them are done")
    return None


class StreamLimit(Enum):
    """Why a stream slot was not given: every slot is taken, or the owner's or the address's share of them."""

    ALL = "all"
    SHARE = "share"
    ADDRESS = "address"


class StreamSlots:
    """The open /events streams: at most `total` at once, at most share_of(total, share) per owner and per
    client address."""

    def __init__(self, total: int, share: float):
        self.total = total
        self.per_owner = share_of(total, share) if total else 0
        self._owners: Counter[str | None] = Counter()
        self._addresses: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, owner: str | None, address: str) -> StreamLimit | None:
        """Takes a slot for `owner` (None) at `address`, or says why not."""
        with self._lock:
            if self._owners.total() >= self.total:
                return StreamLimit.ALL
            if self._owners[owner] >= self.per_owner:
                return StreamLimit.SHARE
            if self._addresses[address] >= self.per_owner:
                return StreamLimit.ADDRESS
            self._owners[owner] += 1
            self._addresses[address] += 1
            return None

    def give_back(self, owner: str | None, address: str) -> None:
        with self._lock:
            self._owners[owner] -= 1
            self._addresses[address] -= 1
            # Counter keeps keys at zero; dropping them keeps the maps as small as the open streams.
            self._owners += Counter()
            self._addresses += Counter()
