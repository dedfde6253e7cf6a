"""Synchronous `POST /upload`: bounded in number, dropped when the client leaves, never longer than SR_SYNC_WAIT_S."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from pathlib import Path

from tests.web.client import HttpClient, Reply, multipart
from tests.web.conftest import Photos, StartServer, wait_until
from tests.web.server import start_gunicorn

OWNER = "sr_owner=" + secrets.token_urlsafe(24)


def _abandoned_upload(port: int, photo: bytes) -> socket.socket:
    """A whole `POST /upload` sent by a client that will give up on the answer (curl -m 2)."""
    body, content_type = multipart({}, {"image": ("p.png", photo)})
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {OWNER}\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_abandoned_sync_uploads_give_their_threads_back(
    tmp_path: Path, photos: Photos, edsr_model_slow: Path
) -> None:
    """gunicorn with 4 threads, as in the attack, and as many waits allowed: 4 uploads queued behind a long
    job whose clients give up after 2 s. Their threads are free again soon after, so /healthz answers,
    and their jobs are still there for their owner."""
    service = start_gunicorn(tmp_path / "gunicorn.log", {
        "SR_DATA_DIR": str(tmp_path / "data"), "SR_MODEL_PATH": str(edsr_model_slow), "SR_MAX_SYNC_WAITS": "4",
    }, threads=4)
    client = HttpClient(service.url, cookies=dict([OWNER.split("=", 1)]))
    try:
        long_job = client.upload(photos.slow_png)
        assert long_job.status == 202
        socks = [_abandoned_upload(service.port, photos.small_png) for _ in range(4)]
        # Every thread is held now, so the uploads folder tells when all four are queued.
        uploads = tmp_path / "data" / "uploads"
        wait_until(lambda: len(list(uploads.glob("*.png"))) == 5, timeout=30, interval=0.2,
                   what="the 4 synchronous uploads to be queued")
        time.sleep(2.0)
        for sock in socks:
            sock.close()
        started = time.monotonic()
        health = client.get("/healthz", timeout=20)
        assert health.status == 200 and time.monotonic() - started < 8
        assert client.get(long_job.json()["links"]["self"], timeout=10).json()["status"] in ("queued", "running")
        jobs = client.get("/api/jobs", timeout=10).json()["jobs"]
        assert len(jobs) == 5, "the jobs of the clients that left go on"
        for job in jobs:
            assert client.delete(job["links"]["self"], timeout=10).status == 204
    finally:
        service.terminate()


def test_sync_waits_are_bounded(start_server: StartServer, photos: Photos, edsr_model_slow: Path) -> None:
    server = start_server(model_path=edsr_model_slow, max_sync_waits=1)
    client = server.client()
    first: list[Reply] = []
    waiting = threading.Thread(target=lambda: first.append(client.upload(photos.slow_png, path="/upload",
                                                                          timeout=120)))
    waiting.start()
    try:
        wait_until(lambda: list((server.data_dir / "uploads").glob("*.png")), timeout=30, what="the first upload")
        refused = client.upload(photos.small_png, path="/upload")
        assert refused.status == 503 and refused.json()["error"]["code"] == "too_many_waits", refused.body
        assert int(refused.header("Retry-After")) > 0 and "POST /api/jobs" in refused.json()["error"]["message"]
        assert len(list((server.data_dir / "uploads").glob("*.png"))) == 1, "the refused photo is not kept"
        assert client.upload(photos.small_png).status == 202, "asynchronous uploads are still taken"
    finally:
        (job,) = [j for j in server.services.store.in_state("running") + server.services.store.in_state("queued")
                  if j.input_width == 600]
        client.delete(f"/api/jobs/{job.id}")
        waiting.join(60)
    assert first and first[0].status == 404


def test_a_sync_wait_ends_after_its_stated_time_with_the_jobs_location(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, sync_wait_s=1.0)
    client = server.client()
    started = time.monotonic()
    reply = client.upload(photos.slow_png, path="/upload", timeout=60)
    assert reply.status == 202, reply.body[:200]
    assert time.monotonic() - started < 15
    job = reply.json()
    assert job["status"] in ("queued", "running")
    assert re.fullmatch(r"/api/jobs/[0-9a-f-]{36}", reply.header("Location"))
    assert reply.header("Location") == job["links"]["self"]
    assert client.delete(job["links"]["self"]).status == 204
