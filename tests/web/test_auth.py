"""SR_AUTH_TOKEN: bearer tokens for the API, a sign-in cookie for the page, /healthz always open."""

from __future__ import annotations

import re
import uuid

from tests.web.client import HttpClient
from tests.web.conftest import Photos, StartServer

TOKEN = "correct horse battery staple"


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
    server = start_server(auth_token=TOKEN, behind_proxy=True)
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
