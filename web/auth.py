"""Optional access token (SR_AUTH_TOKEN): `Authorization: Bearer` for the API, a sign-in cookie for the page."""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Response, redirect, render_template, request, url_for

from web.errors import error_response
from web.services import services

bp = Blueprint("auth", __name__)

COOKIE_NAME = "sr_session"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
# Reachable without the token: the health check for load balancers and the sign-in form itself.
OPEN_ENDPOINTS = {"ops.healthz", "auth.login"}


def session_value(token: str) -> str:
    """The cookie holds a value derived from the token, not the token itself."""
    return hmac.new(token.encode(), b"sr-web session v1", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def is_authorized(token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return token_matches(header[7:].strip(), token)
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def _wants_json() -> bool:
    return request.method != "GET" or request.path != "/"


def require_token() -> Response | None:
    """before_request hook: lets the request through, or answers 401 (API) / sends to the sign-in form (page)."""
    token = services().config.auth_token
    if not token or request.endpoint in OPEN_ENDPOINTS or is_authorized(token):
        return None
    if _wants_json():
        return error_response(
            401,
            "unauthorized",
            "this service needs its access token: send 'Authorization: Bearer <token>' or sign in on the page",
            {"WWW-Authenticate": 'Bearer realm="sr-web"'},
        )
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    token = services().config.auth_token
    if not token:
        return redirect(url_for("pages.index"))
    if request.method == "GET":
        return render_template("login.html", error=None, next=request.args.get("next", ""))
    given = request.form.get("token", "")
    if not given or not token_matches(given, token):
        return render_template("login.html", error="That access token is not right.", next=request.form.get("next", "")), 401
    response = redirect(_safe_next(request.form.get("next")))
    response.set_cookie(
        COOKIE_NAME,
        session_value(token),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    response = redirect(url_for("auth.login"))
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
    return response
