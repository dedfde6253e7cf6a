"""Optional access token (SR_AUTH_TOKEN): `Authorization: Bearer` for the API, a sign-in cookie for the page."""

from __future__ import annotations

import math
import unicodedata
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for

from web.http.clients import client_address
from web.http.errors import error_response
from web.http.hangup import close_unread
from web.services import services
from web.guards.signins import Verdict

bp = Blueprint("auth", __name__)

COOKIE_NAME = "sr_session"
# Reachable without the token: the health check for load balancers and the sign-in form itself.
OPEN_ENDPOINTS = {"ops.healthz", "auth.login"}
# The sign-in form is a token and a path; a larger body is refused before a byte of it is read, so
# that a client trickling a large body cannot hold a server thread without the token.
LOGIN_BODY_MAX_BYTES = 4096


def _header_token() -> str | None:
    """The token of an `Authorization: Bearer` header; None when the request has no such header."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def _wants_json() -> bool:
    return request.method != "GET" or request.path != "/"


def _held_message(seconds: int) -> str:
    return f"too many wrong tokens were sent from here; try again in {seconds} seconds"


def require_token() -> Response | None:
    """before_request hook: lets the request through, or answers 401 (API) / sends to the sign-in form (page).
    A token in the Authorization header goes through the same throttle as the sign-in form."""
    s = services()
    token = s.config.auth_token
    if not token or request.endpoint in OPEN_ENDPOINTS:
        return None
    given = _header_token()
    if given is not None:
        attempt = s.sign_ins.check(client_address(), given, token, "Authorization header")
        if attempt.verdict is Verdict.ACCEPTED:
            return None
        if attempt.verdict is Verdict.HELD:
            seconds = math.ceil(attempt.wait_s)
            return error_response(429, "too_many_attempts", _held_message(seconds), {"Retry-After": str(seconds)})
    else:
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is not None and s.sessions.valid(cookie):
            return None
    if _wants_json():
        return error_response(
            401,
            "unauthorized",
            "this service needs its access token: send 'Authorization: Bearer <token>' or sign in on the page",
            {"WWW-Authenticate": 'Bearer realm="sr-web"'},
        )
    return redirect(url_for("auth.login"))


def safe_next(target: str | None) -> str | None:
    """`target` when it is a path on this site, else None: no control character (a browser drops a tab
    or a new line, which turns `/<TAB>/host` into `//host`), no backslash, no scheme, no host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(unicodedata.category(ch)[0] == "C" for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return None
    return target


def _form(error: str | None, next_path: str | None, status: int = 200,
          headers: dict[str, str] | None = None) -> tuple[str, int, dict[str, str]]:
    return render_template("login.html", error=error, next=safe_next(next_path) or ""), status, headers or {}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int, dict[str, str]]:
    s = services()
    token = s.config.auth_token
    if not token:
        return redirect(url_for("pages.index"))
    if request.method == "GET":
        return _form(None, request.args.get("next"))
    length = request.content_length
    if length is None or length > LOGIN_BODY_MAX_BYTES:
        page, status, headers = _form("The sign-in form was too large; type only the access token.", None, 413)
        return close_unread(Response(page, status, headers))
    attempt = s.sign_ins.check(client_address(), request.form.get("token", ""), token, "sign-in form")
    if attempt.verdict is Verdict.HELD:
        seconds = math.ceil(attempt.wait_s)
        return _form(f"{_held_message(seconds).capitalize()}.", request.form.get("next"), 429,
                     {"Retry-After": str(seconds)})
    if attempt.verdict is Verdict.WRONG:
        return _form("That access token is not right.", request.form.get("next"), 401)
    response = redirect(safe_next(request.form.get("next")) or url_for("pages.index"))
    response.set_cookie(
        COOKIE_NAME,
        s.sessions.issue(),
        max_age=int(s.sessions.ttl_s),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        services().sessions.revoke(cookie)
    response = redirect(url_for("auth.login"))
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
    return response
