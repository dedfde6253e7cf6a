"""Sign-in attempts per client address: every failure is logged, and each one past a few makes that address wait longer."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Wrong tokens an address may send before it has to wait: room for typing mistakes.
FREE_FAILURES = 3
MAX_WAIT_S = 60.0
# An address that has not failed for this long starts afresh.
FORGET_AFTER_S = 15 * 60.0
# Addresses remembered at most (the oldest are forgotten first), so that many addresses cannot fill memory.
MAX_ADDRESSES = 10_000


@dataclass
class _Record:
    failures: int
    last_failure: float
    blocked_until: float


class SignInGuard:
    """After FREE_FAILURES wrong tokens from one address, each further one makes it wait twice as long
    (2, 4, 8 ... up to 60 s) before its next attempt is even checked."""

    def __init__(self) -> None:
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> float:
        """Seconds before `address` may try again; 0 when it may try now."""
        now = time.monotonic()
        with self._lock:
            record = self._records.get(address)
            if record is None:
                return 0.0
            if now - record.last_failure > FORGET_AFTER_S:
                del self._records[address]
                return 0.0
            return max(0.0, record.blocked_until - now)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            record = self._records.pop(address, None) or _Record(0, now, now)
            record.failures += 1
            record.last_failure = now
            over = record.failures - FREE_FAILURES
            wait = min(MAX_WAIT_S, 2.0 ** over) if over > 0 else 0.0
            record.blocked_until = now + wait
            self._records[address] = record
            while len(self._records) > MAX_ADDRESSES:
                self._records.popitem(last=False)
        log.warning("wrong access token from %s (%d in a row%s)", address, record.failures,
                    f"; its next attempt is refused for {wait:g} s" if wait else "")

    def refused(self, address: str, wait: float) -> None:
        log.warning("sign-in from %s refused unchecked: %.0f s left to wait after wrong tokens", address, wait)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._records.pop(address, None)
