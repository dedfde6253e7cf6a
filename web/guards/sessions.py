"""Sign-in sessions: cookie values that carry their issue time, expire, and stop working at sign-out."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from web.jobs.store import JobStore

log = logging.getLogger(__name__)

# Issue times a little ahead of this clock are accepted (clocks of two processes, a restart).
_CLOCK_SLACK_S = 60.0
# `<issue time>.<id>.<mac>`: ASCII digits, secrets.token_urlsafe(16), a SHA-256 HMAC in hex; nothing else.
_SHAPE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([0-9a-f]{64})")


@dataclass(frozen=True)
class Session:
    """A session value this service signed and that has not expired."""

    issued: int
    session_id: str


class SessionBook:
    """Signs session values `<issued>.<id>.<mac>` with the access token, checks their age, and keeps the ids
    signed out before their time in the job database, so that a restart does not revive them. Without a
    token it issues none and takes none."""

    def __init__(self, token: str | None, ttl_s: float, store: JobStore):
        self._key = token.encode() if token else None
        self.ttl_s = ttl_s
        self._store = store

    def _mac(self, key: bytes, issued: int, session_id: str) -> str:
        return hmac.new(key, f"sr-web session v2|{issued}|{session_id}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        if self._key is None:
            raise RuntimeError("sessions are issued only where an access token is set")
        issued = int(time.time())
        session_id = secrets.token_urlsafe(16)
        return f"{issued}.{session_id}.{self._mac(self._key, issued, session_id)}"

    def _parse(self, value: str) -> Session | None:
        """The session of a value this service signed and that has not expired, else None."""
        match = _SHAPE.fullmatch(value)
        if self._key is None or match is None:
            return None
        issued, session_id, mac = int(match[1]), match[2], match[3]
        if not hmac.compare_digest(mac, self._mac(self._key, issued, session_id)):
            return None
        now = time.time()
        if not (now - self.ttl_s < issued <= now + _CLOCK_SLACK_S):
            return None
        return Session(issued, session_id)

    def valid(self, value: str) -> bool:
        session = self._parse(value)
        return session is not None and not self._store.signed_out(session.session_id)

    def revoke(self, value: str) -> None:
        """Signs the session out for good; a value this service did not issue, or one expired, is ignored."""
        session = self._parse(value)
        if session is not None:
            self._store.sign_out(session.session_id, session.issued + self.ttl_s)


def import_signed_out_file(path: Path, store: JobStore) -> None:
    """Moves the sign-outs of a `state/signed-out.json` (where older versions kept them) into the database."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [(str(sid), float(until)) for sid, until in data.items()]
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError, TypeError):
        log.warning("%s is unreadable; sessions signed out in it work again until they expire", path)
        return
    now = time.time()
    for session_id, until in entries:
        if until > now:
            store.sign_out(session_id, until)
    path.unlink(missing_ok=True)
