"""Sign-in sessions: cookie values that carry their issue time, expire, and stop working at sign-out."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Issue times a little ahead of this clock are accepted (clocks of two processes, a restart).
_CLOCK_SLACK_S = 60.0


class SessionBook:
    """Signs session values `<issued>.<id>.<mac>` with the access token, checks their age, and keeps the ids
    signed out before their time in a small file of the state folder, so that a restart does not revive them."""

    def __init__(self, token: str, ttl_s: float, revoked_path: Path):
        self._key = token.encode()
        self.ttl_s = ttl_s
        self._path = revoked_path
        self._lock = threading.Lock()
        self._revoked: dict[str, float] = self._load()

    def _mac(self, issued: int, session_id: str) -> str:
        return hmac.new(self._key, f"sr-web session v2|{issued}|{session_id}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        issued = int(time.time())
        session_id = secrets.token_urlsafe(16)
        return f"{issued}.{session_id}.{self._mac(issued, session_id)}"

    def _parse(self, value: str) -> tuple[int, str] | None:
        """(issue time, id) of a value this service signed and that has not expired, else None."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
            return None
        issued, session_id, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac.encode(), self._mac(issued, session_id).encode()):
            return None
        now = time.time()
        if not (now - self.ttl_s < issued <= now + _CLOCK_SLACK_S):
            return None
        return issued, session_id

    def valid(self, value: str) -> bool:
        parsed = self._parse(value)
        if parsed is None:
            return False
        with self._lock:
            return parsed[1] not in self._revoked

    def revoke(self, value: str) -> None:
        """Signs the session out for good (a value that is not valid anyway is ignored)."""
        parsed = self._parse(value)
        if parsed is None:
            return
        issued, session_id = parsed
        with self._lock:
            now = time.time()
            self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
            self._revoked[session_id] = issued + self.ttl_s
            self._save()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            now = time.time()
            return {str(sid): float(until) for sid, until in data.items() if float(until) > now}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("%s is unreadable; sessions signed out earlier work again until they expire", self._path)
            return {}

    def _save(self) -> None:
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        try:
            tmp.write_text(json.dumps(self._revoked), encoding="utf-8")
            os.replace(tmp, self._path)
        except OSError:
            log.exception("cannot write %s; signed-out sessions are kept in memory only", self._path)
