"""Anonymous owners: a random id per browser in the `sr_owner` cookie; job rows keep only its SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets

from flask import Response, g, request

from web.services import services

COOKIE_NAME = "sr_owner"
# Longer than any result lives, so that a returning browser still finds its jobs.
MIN_MAX_AGE_S = 30 * 24 * 3600
_VALID = re.compile(r"[A-Za-z0-9_-]{22,128}")


def owner_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cookie_value() -> str | None:
    value = request.cookies.get(COOKIE_NAME)
    return value if value and _VALID.fullmatch(value) else None


def current_owner() -> str | None:
    """The caller's owner hash, or None when it sent no (valid) owner cookie."""
    value = _cookie_value()
    return owner_hash(value) if value else None


def may_see(job_owner: str | None) -> bool:
    """Jobs without an owner are reachable by their id alone; others only by their owner."""
    return job_owner is None or job_owner == current_owner()


def _gives_cookie() -> bool:
    return request.endpoint == "pages.index" or request.path.startswith("/api/")


def issue_cookie(response: Response) -> Response:
    """after_request hook: a browser without an owner id gets one (the page, and any /api answer)."""
    if _cookie_value() is not None or not _gives_cookie() or g.get("sr_owner_issued"):
        return response
    g.sr_owner_issued = True
    ttl_s = int(services().config.result_ttl_h * 3600)
    response.set_cookie(
        COOKIE_NAME,
        secrets.token_urlsafe(24),
        max_age=max(ttl_s, MIN_MAX_AGE_S),
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
        path=f"{request.script_root}/",
    )
    return response
