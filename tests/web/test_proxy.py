"""deploy/nginx/sr-web.conf for real: nginx on loopback with TLS in front of gunicorn, slow clients absorbed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from infer import REPO_ROOT
from tests.web.client import HttpClient, multipart
from tests.web.conftest import Photos, wait_until

SITE = REPO_ROOT / "deploy" / "nginx" / "sr-web.conf"
SLOW_CLIENTS = 40  # more than the service's 32 threads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        reason = "nginx not found (apt-get install nginx)"
        if os.environ.get("SR_TEST_STRICT") == "1":
            pytest.fail(f"{reason}; SR_TEST_STRICT=1 makes this an error")
        pytest.skip(reason)
    return found


def site_for_test(site: str, upstream_port: int, https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The shipped site file with only what a test machine needs changed: loopback ports and a test certificate."""
    text = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
    text = re.sub(r"^\s*listen \[::\].*\n", "", text, flags=re.M)
    text = re.sub(r"listen 443 ssl( http2)?;", f"listen 127.0.0.1:{https_port} ssl;", text)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("/etc/ssl/certs/sr-web.crt", str(cert)).replace("/etc/ssl/private/sr-web.key", str(key))
    assert f"127.0.0.1:{https_port}" in text and str(cert) in text, "the site file's layout changed"
    return text


@dataclass
class Proxied:
    url: str
    plain_url: str
    direct_url: str
    context: ssl.SSLContext

    def client(self) -> HttpClient:
        return HttpClient(self.url, ssl_context=self.context)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, fsrcnn_model: Path) -> Iterator[Proxied]:
    nginx = _nginx()
    tmp = tmp_path_factory.mktemp("proxy")
    cert, key = tmp / "test.crt", tmp / "test.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    upstream, https_port, http_port = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    env.update(SR_BIND=f"127.0.0.1:{upstream}", SR_DATA_DIR=str(tmp / "data"), SR_MODEL_PATH=str(fsrcnn_model),
               SR_BEHIND_PROXY="1", SR_TRUST_FORWARDED_PREFIX="1")
    service_log = open(tmp / "gunicorn.log", "wb")
    service = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"], cwd=REPO_ROOT,
                               env=env, stdin=subprocess.DEVNULL, stdout=service_log, stderr=service_log)
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (tmp / folder).mkdir()
    (tmp / "site.conf").write_text(site_for_test(SITE.read_text(), upstream, https_port, http_port, cert, key))
    (tmp / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
""")
    check = subprocess.run([nginx, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proxy = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = ssl.create_default_context(cafile=str(cert))
    result = Proxied(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{upstream}",
                     context)
    try:
        def answering() -> bool:
            try:
                return result.client().get("/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_until(answering, timeout=60, interval=0.2, what="nginx and gunicorn answering /healthz")
        yield result
    finally:
        proxy.terminate()
        service.terminate()
        for proc in (proxy, service):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        service_log.close()


def test_http_redirects_to_https_and_tls_answers(proxied: Proxied):
    health = proxied.client().get("/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"
    assert health.header("strict-transport-security")
    plain = HttpClient(proxied.plain_url).get("/api/jobs/x")
    assert plain.status == 301 and plain.header("location").startswith("https://")


def test_the_proxy_clears_a_clients_forwarded_prefix(proxied: Proxied, photos: Photos):
    """The service here believes X-Forwarded-Prefix (SR_TRUST_FORWARDED_PREFIX=1), so only nginx clearing
    it keeps a client's own `/evil` out of its Location, links and cookie path."""
    body, content_type = multipart({}, {"image": ("p.png", photos.small_png)})
    reply = proxied.client().request("POST", "/api/jobs", body=body,
                                     headers={"Content-Type": content_type, "X-Forwarded-Prefix": "/evil"})
    assert reply.status == 202, reply.body
    assert reply.header("location") == f"/api/jobs/{reply.json()['id']}"
    assert all(link.startswith("/api/") for link in reply.json()["links"].values())
    assert "/evil" not in reply.header("set-cookie")


def test_uploads_over_the_limit_are_refused_by_the_proxy(proxied: Proxied):
    body, content_type = multipart({}, {"image": ("big.png", b"\0" * (27 << 20))})
    reply = proxied.client().request("POST", "/api/jobs", body=body, headers={"Content-Type": content_type})
    assert reply.status == 413


class SlowUploads:
    """Connections that each send an upload's headers, then its body one byte a second."""

    def __init__(self, url: str, context: ssl.SSLContext, count: int):
        host, port = url.split("//")[1].split(":")
        self.socks: list[ssl.SSLSocket] = []
        for _ in range(count):
            raw = socket.create_connection((host, int(port)), timeout=10)
            sock = context.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n")
            self.socks.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(1.0):
            for sock in self.socks:
                try:
                    sock.sendall(b"-")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def test_slow_uploads_do_not_hold_the_service(proxied: Proxied, photos: Photos):
    """40 uploads trickling in at 1 byte/s, more than the service has threads: behind nginx, /healthz and
    a whole job still answer promptly, because nginx holds the bodies until they are complete."""
    slow = SlowUploads(proxied.url, proxied.context, SLOW_CLIENTS)
    try:
        time.sleep(3)  # every slow client is connected and trickling
        client = proxied.client()
        started = time.monotonic()
        health = client.get("/healthz", timeout=10)
        assert health.status == 200 and time.monotonic() - started < 5
        reply = client.upload(photos.small_png, filename="holiday.png", timeout=20)
        assert reply.status == 202, reply.body
        job = client.wait(reply.json()["id"], timeout=60)
        assert job["status"] == "done", job
        result = client.get(job["links"]["result"])
        assert result.status == 200 and result.body[:8] == b"\x89PNG\r\n\x1a\n"
        # the service itself never saw the slow bodies: none of them became a job
        assert HttpClient(proxied.direct_url).get("/healthz", timeout=10).status == 200
    finally:
        slow.close()
