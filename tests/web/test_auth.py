"""SR_AUTH_TOKEN: bearer tokens for the API, a sign-in cookie for the page, /healthz always open."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest
from flask import Flask

from tests.web.client import HttpClient, Reply, multipart
from tests.web.conftest import Photos, StartServer
from tests.web.server import start_gunicorn, start_service_process
from web import create_app, shutdown

TOKEN = "correct horse battery staple"
# Wrong tokens an address may send before it waits: the documented number, not the constant under test.
FREE_FAILURES = 3


def _cookie(reply) -> tuple[str, str, str]:
    header = reply.header("Set-Cookie")
    assert header, reply.headers
    name, value = header.split(";", 1)[0].split("=", 1)
    return name, value, header


def test_token_required_everywhere_but_healthz(start_server: StartServer, photos: Photos) -> None:
    server = start_server(auth_token=TOKEN)
    anonymous = server.client()
    job_path = f"/api/jobs/{uuid.uuid4()}"

    assert anonymous.get("/healthz").status == 200
    page = anonymous.get("/")
    assert page.status == 302 and page.header("Location").endswith("/login")
    for method, path in [
        ("GET", job_path), ("GET", f"{job_path}/result"), ("GET", f"{job_path}/events"), ("DELETE", job_path),
        ("POST", "/api/jobs"), ("POST", "/upload"), ("GET", "/metrics"), ("GET", "/static/app.js"),
    ]:
        reply = anonymous.request(method, path)
        assert reply.status == 401, (method, path, reply.status)
        assert reply.json()["error"]["code"] == "unauthorized"
        assert reply.header("WWW-Authenticate").startswith("Bearer")
    assert anonymous.upload(photos.small_png).status == 401
    assert list((server.data_dir / "uploads").iterdir()) == []

    wrong = HttpClient(server.url, token="correct horse battery")
    assert wrong.get(job_path).status == 401
    right = server.client(token=TOKEN)
    assert right.get(job_path).status == 404
    job = right.upload(photos.small_png)
    assert job.status == 202
    assert right.wait(job.json()["id"])["status"] == "done"
    assert right.get("/metrics").status == 200


def test_sign_in_sets_an_httponly_strict_cookie(start_server: StartServer) -> None:
    server = start_server(auth_token=TOKEN)
    client = server.client()
    form = client.get("/login")
    assert form.status == 200 and b'name="token"' in form.body

    def sign_in(token: str, next_path: str = "/"):
        body = f"token={token.replace(' ', '+')}&next={next_path}".encode()
        return client.request("POST", "/login", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})

    refused = sign_in("guess")
    assert refused.status == 401 and b"not right" in refused.body and refused.header("Set-Cookie") is None

    accepted = sign_in(TOKEN, next_path="//evil.example/")
    assert accepted.status == 302 and accepted.header("Location") == "/"
    name, value, header = _cookie(accepted)
    assert "HttpOnly" in header and re.search(r"SameSite=Strict", header, re.I)
    assert TOKEN not in value and TOKEN.replace(" ", "+") not in header

    signed_in = HttpClient(server.url, cookies={name: value})
    page = signed_in.get("/")
    assert page.status == 200 and b'id="drop"' in page.body
    assert signed_in.get("/static/app.js").status == 200
    assert signed_in.get(f"/api/jobs/{uuid.uuid4()}").status == 404
    forged = HttpClient(server.url, cookies={name: value[:-1] + ("0" if value[-1] != "0" else "1")})
    assert forged.get("/").status == 302

    out = signed_in.request("POST", "/logout")
    assert out.status == 302
    assert "Max-Age=0" in out.header("Set-Cookie") or "expires=Thu, 01 Jan 1970" in out.header("Set-Cookie")


def test_everything_open_without_a_token(start_server: StartServer) -> None:
    server = start_server()
    client = server.client()
    page = client.get("/")
    assert page.status == 200
    assert b"Sign out" not in page.body
    assert client.get("/metrics").status == 200
    assert client.get(f"/api/jobs/{uuid.uuid4()}").status == 404
    login = client.get("/login")
    assert login.status == 302 and login.header("Location") == "/"


def test_behind_a_tls_proxy_the_cookie_is_secure_and_links_keep_the_prefix(start_server: StartServer) -> None:
    server = start_server(auth_token=TOKEN, behind_proxy=True, trust_forwarded_prefix=True)
    client = server.client()
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/photos", "X-Forwarded-Host": "example.org"}
    body = f"token={TOKEN.replace(' ', '+')}".encode()
    reply = client.request(
        "POST", "/login", body=body, headers={**proxied, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert reply.status == 302 and reply.header("Location") == "/photos/"
    name, value, header = _cookie(reply)
    assert "Secure" in header
    page = HttpClient(server.url, cookies={name: value}).get("/", headers=proxied)
    assert b'data-api="/photos/api/jobs"' in page.body


def _form_post(client: HttpClient, body: str, **kw) -> Reply:
    return client.request("POST", "/login", body=body.encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, **kw)


def _signed_in(server, token: str = TOKEN) -> tuple[str, str, str]:
    reply = _form_post(server.client(), f"token={quote(token)}")
    assert reply.status == 302, (reply.status, reply.body)
    return _cookie(reply)


def test_next_is_only_ever_a_path_on_this_site(start_server: StartServer) -> None:
    """A tab or new line in `next` (dropped by browsers and header writers alike) cannot make `//host`,
    and a CR/LF is a refusal of the redirect, not a 500."""
    server = start_server(auth_token=TOKEN)
    client = server.client()
    for hostile in ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/%09/evil.example",
                    "/\r\nSet-Cookie: x=1", "https://evil.example/", "//evil.example", "/\\evil.example",
                    "javascript:alert(1)", "/\x7f/evil.example", "\t//evil.example"]:
        reply = _form_post(client, f"token={quote(TOKEN)}&next={quote(hostile, safe='%')}")
        assert reply.status == 302, (hostile, reply.status, reply.body[:200])
        assert reply.header("Location") == "/", (hostile, reply.header("Location"))
    kept = _form_post(client, f"token={quote(TOKEN)}&next={quote('/api/jobs?x=1')}")
    assert kept.status == 302 and kept.header("Location") == "/api/jobs?x=1"
    # The form does not carry a hostile `next` either.
    form = client.get("/login?next=%2F%09%2Fevil.example")
    assert form.status == 200 and b"evil.example" not in form.body
    assert b'value="/api/jobs"' in client.get("/login?next=%2Fapi%2Fjobs").body


def test_a_large_sign_in_body_is_refused_before_it_is_read(tmp_path: Path, fsrcnn_model: Path) -> None:
    """gunicorn with 4 threads, as in the attack: 4 sign-ins announcing 100 kB and trickling it. Each is
    refused (413) from its Content-Length alone, so /healthz still answers while they trickle on."""
    service = start_gunicorn(tmp_path / "gunicorn.log", {
        "SR_DATA_DIR": str(tmp_path / "data"), "SR_MODEL_PATH": str(fsrcnn_model), "SR_AUTH_TOKEN": TOKEN,
    }, threads=4)
    socks: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        for _ in range(60):  # at most 30 s
            if stop.wait(0.5):
                return
            for sock in socks:
                try:
                    sock.sendall(b"a")
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle, daemon=True)
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=30)
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 100000\r\n\r\ntoken=")
            socks.append(sock)
        trickler.start()
        time.sleep(1.0)
        started = time.monotonic()
        health = service.client().get("/healthz", timeout=20)
        assert health.status == 200 and time.monotonic() - started < 12
        for sock in socks:
            assert sock.recv(4096).startswith(b"HTTP/1.1 413"), "each sign-in is refused at once"
        small = _form_post(service.client(), f"token={quote(TOKEN)}", timeout=20)
        assert small.status == 302
    finally:
        stop.set()
        if trickler.is_alive():
            trickler.join(5)
        for sock in socks:
            sock.close()
        service.terminate()


def test_failed_sign_ins_are_logged_and_slowed_per_address(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(auth_token=TOKEN)
    client = server.client()
    with caplog.at_level(logging.WARNING, logger="web.guards.signins"):
        for _ in range(FREE_FAILURES + 1):
            assert _form_post(client, "token=guess").status == 401
        # The next attempt is refused unchecked, even with the right token, until the wait is over.
        held = _form_post(client, f"token={quote(TOKEN)}")
        assert held.status == 429 and held.header("Set-Cookie") is None
        wait = int(held.header("Retry-After"))
        assert 1 <= wait <= 2 and b"try again in" in held.body
        assert _form_post(client, "token=guess").status == 429
    failures = [r for r in caplog.records if "wrong access token from 127.0.0.1" in r.getMessage()]
    assert len(failures) == FREE_FAILURES + 1
    assert any("refused" in r.getMessage() for r in caplog.records)
    time.sleep(wait + 0.5)
    assert _form_post(client, f"token={quote(TOKEN)}").status == 302
    # A success starts the address afresh.
    assert _form_post(client, "token=guess").status == 401


def test_a_short_token_stops_the_service_unless_allowed(tmp_path: Path, fsrcnn_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    env.update(SR_DATA_DIR=str(tmp_path / "data"), SR_MODEL_PATH=str(fsrcnn_model), SR_AUTH_TOKEN="ab")
    proc = subprocess.run([sys.executable, "-m", "web", "--port", "0"], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "SR_AUTH_TOKEN is 2 character(s) long" in proc.stderr and "SR_ALLOW_SHORT_TOKEN=1" in proc.stderr
    assert "'ab'" not in proc.stderr, "the token itself is never shown"
    log_path = tmp_path / "service.log"
    service = start_service_process(log_path, {"SR_DATA_DIR": str(tmp_path / "data"), "SR_AUTH_TOKEN": "ab",
                                               "SR_MODEL_PATH": str(fsrcnn_model), "SR_ALLOW_SHORT_TOKEN": "1"})
    try:
        assert "SR_AUTH_TOKEN is 2 character(s) long" in log_path.read_text()
        assert service.client(token="ab").get("/api/jobs").status == 200
    finally:
        service.terminate()


@pytest.fixture
def token_app(tmp_path: Path, fsrcnn_model: Path) -> Iterator[Flask]:
    app = create_app({"data_dir": tmp_path / "data", "model_path": fsrcnn_model, "auth_token": TOKEN})
    yield app
    shutdown(app)


def test_bearer_guesses_go_through_the_sign_in_throttle(token_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """The attack: 300 wrong `Authorization: Bearer` tokens in 0.2 s, neither slowed nor logged."""
    client = token_app.test_client()
    with caplog.at_level(logging.WARNING, logger="web.guards.signins"):
        for _ in range(FREE_FAILURES + 1):
            assert client.get("/api/jobs", headers={"Authorization": "Bearer guess"}).status_code == 401
        held = client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert held.status_code == 429 and held.get_json()["error"]["code"] == "too_many_attempts"
        assert 1 <= int(held.headers["Retry-After"]) <= 2
        # One throttle for every way in: the sign-in form from that address waits too.
        form = client.post("/login", data={"token": TOKEN})
        assert form.status_code == 429 and "sr_session" not in form.headers.get("Set-Cookie", "")
    failures = [r.getMessage() for r in caplog.records if "wrong access token from 127.0.0.1" in r.getMessage()]
    assert len(failures) == FREE_FAILURES + 1 and "Authorization header" in failures[0]
    assert sum("refused unchecked" in r.getMessage() for r in caplog.records) == 2
    elsewhere = token_app.test_client()
    assert elsewhere.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"},
                         environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 200


def test_a_malformed_session_or_owner_cookie_is_no_sign_in_and_no_500(
    token_app: Flask, tmp_path: Path, fsrcnn_model: Path
) -> None:
    """The attack: `sr_session=².a.b` hit int('²'), a 500 on any route. The raw header carries UTF-8 bytes."""
    hostile = ["².a.b", "١٢٣.aaaaaaaaaaaaaaaaaaaaaa." + "0" * 64, "+1.a.b", " 1.a.b", "1.a.b.c", "", "..", "²"]
    client = token_app.test_client(use_cookies=False)
    for value in hostile:
        raw = f"sr_session={value}; sr_owner={value}".encode().decode("latin-1")
        assert client.get("/", headers={"Cookie": raw}).status_code == 302, value
        assert client.get("/api/jobs", headers={"Cookie": raw}).status_code == 401, value
        assert client.post("/logout", headers={"Cookie": raw}).status_code == 401, value
    open_app = create_app({"data_dir": tmp_path / "open", "model_path": fsrcnn_model, "auth_token": None})
    try:
        client = open_app.test_client(use_cookies=False)
        for value in hostile:
            raw = f"sr_session={value}; sr_owner={value}".encode().decode("latin-1")
            assert client.post("/logout", headers={"Cookie": raw}).status_code == 302, value
            reply = client.get("/api/jobs", headers={"Cookie": raw})
            assert reply.status_code == 200 and reply.get_json() == {"jobs": []}, value
            assert re.match(r"sr_owner=[A-Za-z0-9_-]{32}\.", reply.headers["Set-Cookie"]), "a new owner id"
    finally:
        shutdown(open_app)


def _signed_out_rows(data_dir: Path) -> int:
    with closing(sqlite3.connect(data_dir / "state" / "jobs.db")) as db:
        ((count,),) = db.execute("SELECT COUNT(*) FROM signed_out").fetchall()
    return int(count)


def test_logout_records_only_sessions_the_service_issued(tmp_path: Path, fsrcnn_model: Path) -> None:
    """The attack: without a token, each unauthenticated `POST /logout` (a value signed with the empty key)
    added a signed-out session, and the whole file was rewritten each time."""
    data = tmp_path / "open"
    app = create_app({"data_dir": data, "model_path": fsrcnn_model, "auth_token": None})
    try:
        client = app.test_client()
        for _ in range(50):
            issued, session_id = int(time.time()), secrets.token_urlsafe(16)
            mac = hmac.new(b"", f"sr-web session v2|{issued}|{session_id}".encode(), hashlib.sha256).hexdigest()
            forged = f"sr_session={issued}.{session_id}.{mac}"
            assert client.post("/logout", headers={"Cookie": forged}).status_code == 302
    finally:
        shutdown(app)
    assert _signed_out_rows(data) == 0
    assert not (data / "state" / "signed-out.json").exists()


def _session_issued(issued: int, token: str = TOKEN) -> str:
    """A session value as the service signs it, issued at `issued` (seconds since the epoch)."""
    session_id = secrets.token_urlsafe(16)
    mac = hmac.new(token.encode(), f"sr-web session v2|{issued}|{session_id}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{session_id}.{mac}"


def test_expired_sign_outs_are_dropped(start_server: StartServer, tmp_path: Path) -> None:
    data = tmp_path / "kept"
    ttl = 3600
    server = start_server(data_dir=data, auth_token=TOKEN, session_ttl_h=ttl / 3600)
    name, _, _ = _signed_in(server)
    # A session with 6 s left: its sign-out is kept until it would have expired, then dropped.
    expires = int(time.time()) + 6
    ending = _session_issued(expires - ttl)
    assert HttpClient(server.url, cookies={name: ending}).request("POST", "/logout").status == 302
    assert _signed_out_rows(data) == 1
    time.sleep(max(0.0, expires - time.time()) + 0.5)
    _, second, _ = _signed_in(server)
    assert HttpClient(server.url, cookies={name: second}).request("POST", "/logout").status == 302
    assert _signed_out_rows(data) == 1, "the first, expired, is gone"


def test_the_session_cookie_carries_its_issue_time_and_expires(start_server: StartServer) -> None:
    ttl = 3600
    server = start_server(auth_token=TOKEN, session_ttl_h=ttl / 3600)
    name, first, header = _signed_in(server)
    _, second, _ = _signed_in(server)
    assert first != second, "every sign-in gets a value of its own"
    issued = int(first.split(".")[0])
    assert abs(issued - time.time()) < 30
    assert re.search(rf"Max-Age={ttl}\b", header), header
    assert HttpClient(server.url, cookies={name: first}).get("/").status == 200
    # Values signed as the service signs them, issued ten minutes inside and a minute past the lifetime.
    now = int(time.time())
    assert HttpClient(server.url, cookies={name: _session_issued(now - ttl + 600)}).get("/").status == 200
    old = _session_issued(now - ttl - 60)
    assert HttpClient(server.url, cookies={name: old}).get("/").status == 302
    assert HttpClient(server.url, cookies={name: old}).get(f"/api/jobs/{uuid.uuid4()}").status == 401


def test_the_session_cookie_stops_working_at_logout_also_after_a_restart(
    start_server: StartServer, tmp_path: Path
) -> None:
    data = tmp_path / "kept"
    server = start_server(data_dir=data, auth_token=TOKEN)
    name, leaving, _ = _signed_in(server)
    _, staying, _ = _signed_in(server)
    assert HttpClient(server.url, cookies={name: leaving}).request("POST", "/logout").status == 302
    assert HttpClient(server.url, cookies={name: leaving}).get("/").status == 302
    assert HttpClient(server.url, cookies={name: staying}).get("/").status == 200
    server.stop()
    again = start_server(data_dir=data, auth_token=TOKEN)
    assert HttpClient(again.url, cookies={name: leaving}).get("/").status == 302
    assert HttpClient(again.url, cookies={name: staying}).get("/").status == 200


def test_a_forwarded_prefix_is_ignored_unless_configured(start_server: StartServer, photos: Photos) -> None:
    """Behind a proxy but with SR_TRUST_FORWARDED_PREFIX unset, a client's own X-Forwarded-Prefix changes
    neither the job's Location and links nor the owner cookie's path."""
    server = start_server(behind_proxy=True)
    hostile = {"X-Forwarded-Prefix": "/evil"}
    body, content_type = multipart({}, {"image": ("p.png", photos.small_png)})
    reply = server.client().request("POST", "/api/jobs", body=body, headers={**hostile, "Content-Type": content_type})
    assert reply.status == 202
    assert reply.header("Location") == f"/api/jobs/{reply.json()['id']}"
    assert all(link.startswith("/api/") for link in reply.json()["links"].values())
    assert "Path=/;" in reply.header("Set-Cookie") or reply.header("Set-Cookie").endswith("Path=/")
    assert b'data-api="/api/jobs"' in server.client().get("/", headers=hostile).body
