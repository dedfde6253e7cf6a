"""Owner ids the service issues: a random id and its HMAC under the service's own key, told from made-up ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from web.jobs.store import JobStore

# `<id>.<mac>`: secrets.token_urlsafe(24) and the unpadded URL-safe base64 of its SHA-256 HMAC; nothing else.
_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}\.[A-Za-z0-9_-]{43}")
_KEY_NAME = "owner-ids"


class OwnerIds:
    """Issues owner ids signed with the service's own key (kept in the job database, so that ids outlive a
    restart) and tells them from made-up ones."""

    def __init__(self, store: JobStore):
        self._key = store.service_key(_KEY_NAME, lambda: secrets.token_bytes(32))

    def _mac(self, owner_id: str) -> str:
        digest = hmac.new(self._key, f"sr-web owner v1|{owner_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self) -> str:
        owner_id = secrets.token_urlsafe(24)
        return f"{owner_id}.{self._mac(owner_id)}"

    def genuine(self, value: str) -> bool:
        """Whether `value` is an id this service issued."""
        if not _SHAPE.fullmatch(value):
            return False
        owner_id, mac = value.split(".")
        return hmac.compare_digest(mac, self._mac(owner_id))
