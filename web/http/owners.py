"""Anonymous owners: an id the service signs per browser in the `sr_owner` cookie; job rows keep only its SHA-256."""

from __future__ import annotations

import hashlib

from flask import Response, g, request

from web.services import services

COOKIE_NAME = "sr_owner"
# Longer than any result lives, so that a returning browser still finds its jobs.
MIN_MAX_AGE_S = 30 * 24 * 3600


def owner_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cookie_value() -> str | None:
    value = request.cookies.get(COOKIE_NAME)
    return value if value and services().owner_ids.genuine(value) else None


def current_owner() -> str | None:
    """The caller's owner hash, or None when it sent no owner cookie this service issued."""
    value = _cookie_value()
    return owner_hash(value) if value else None


def may_see(job_owner: str | None) -> bool:
    """Jobs without an owner are reachable by their id alone; others only by their owner."""
    return job_owner is None or job_owner == current_owner()


def _gives_cookie() -> bool:
    return request.endpoint == "pages.index" or request.path.startswith("/api/")


def issue_cookie(response: Response) -> Response:
    """after_request hook: a browser without an owner id of this service's gets one (the page, and any /api
    answer); a made-up or altered one is replaced."""
    if not _gives_cookie() or g.get("sr_owner_issued") or _cookie_value() is not None:
        return response
    g.sr_owner_issued = True
    ttl_s = int(services().config.result_ttl_h * 3600)
    response.set_cookie(
        COOKIE_NAME,
        services().owner_ids.issue(),
        max_age=max(ttl_s, MIN_MAX_AGE_S),
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
        path=f"{request.script_root}/",
    )
    return response
