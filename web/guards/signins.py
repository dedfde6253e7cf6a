"""Access-token attempts per client address, however the token is presented: every failure is logged, and each one past a few makes that address wait longer."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Callable

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


class Verdict(Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    HELD = "held"  # refused unchecked: the address is still waiting after wrong tokens


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    wait_s: float = 0.0  # for HELD: seconds before the address may try again


class SignInGuard:
    """After FREE_FAILURES wrong tokens from one address, each further one makes it wait twice as long
    (2, 4, 8 ... up to 60 s) before its next attempt is even checked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str, given: str, token: str, way: str) -> Attempt:
        """The one place a presented token is compared with the access token. `way` (the sign-in form, the
        Authorization header) is only for the log. Checked under the lock, so that guesses sent at once
        are counted one after another."""
        now = self._clock()
        with self._lock:
            record = self._records.get(address)
            if record is not None and now - record.last_failure > FORGET_AFTER_S:
                del self._records[address]
                record = None
            if record is not None and record.blocked_until > now:
                wait = record.blocked_until - now
                log.warning("access token from %s by %s refused unchecked: %.0f s left to wait after wrong "
                            "tokens", address, way, wait)
                return Attempt(Verdict.HELD, wait)
            if given and hmac.compare_digest(given.encode(), token.encode()):
                self._records.pop(address, None)
                return Attempt(Verdict.ACCEPTED)
            wait = self._failed(address, now)
            failures = self._records[address].failures
        log.warning("wrong access token from %s by %s (%d in a row%s)", address, way, failures,
                    f"; its next attempt is refused for {wait:g} s" if wait else "")
        return Attempt(Verdict.WRONG)

    def _failed(self, address: str, now: float) -> float:
        record = self._records.pop(address, None) or _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        over = record.failures - FREE_FAILURES
        wait = min(MAX_WAIT_S, 2.0 ** over) if over > 0 else 0.0
        record.blocked_until = now + wait
        self._records[address] = record
        while len(self._records) > MAX_ADDRESSES:
            self._records.popitem(last=False)
        return wait
