"""The client's address as the service trusts it: the proxy's `X-Forwarded-For` only with SR_BEHIND_PROXY=1."""

from __future__ import annotations

from flask import request


def client_address() -> str:
    """The address sign-in throttling and the per-address shares count by (ProxyFix sets it behind a proxy)."""
    return request.remote_addr or "unknown"
