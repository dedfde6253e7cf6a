"""Synchronous `POST /upload`: bounded in number, dropped when the client leaves, never longer than SR_SYNC_WAIT_S."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

from tests.web.client import HttpClient, Reply, multipart
from tests.web.conftest import Photos, StartServer, wait_until
from tests.web.server import start_gunicorn

def _owner(client: HttpClient) -> str:
    """The owner cookie the service hands out (`sr_owner=...`)."""
    return re.match(r"sr_owner=[^;]+", client.get("/api/jobs").header("Set-Cookie")).group(0)


def _sync_upload(port: int, photo: bytes, owner: str) -> socket.socket:
    """A whole `POST /upload`, its answer left to read (or never read: curl -m 2 giving up)."""
    body, content_type = multipart({}, {"image": ("p.png", photo)})
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {owner}\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_abandoned_sync_uploads_give_their_threads_back(
    tmp_path: Path, photos: Photos, edsr_model_slow: Path
) -> None:
    """gunicorn with 6 threads, 4 of which may wait: 4 uploads queued behind a long job whose clients give up
    after 2 s. Their threads are free again soon after, so /healthz answers, and their jobs are still there
    for their owner."""
    service = start_gunicorn(tmp_path / "gunicorn.log", {
        "SR_DATA_DIR": str(tmp_path / "data"), "SR_MODEL_PATH": str(edsr_model_slow), "SR_MAX_SYNC_WAITS": "4",
        "SR_MAX_EVENT_STREAMS": "1",
    }, threads=6)
    client = HttpClient(service.url)
    owner = _owner(client)
    client.cookies["sr_owner"] = owner.split("=", 1)[1]
    try:
        long_job = client.upload(photos.slow_png)
        assert long_job.status == 202
        socks = [_sync_upload(service.port, photos.small_png, owner) for _ in range(4)]
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


def test_waits_and_streams_follow_the_thread_count(tmp_path: Path, photos: Photos, edsr_model_slow: Path) -> None:
    """The attack: with SR_WEB_THREADS=4, four connected synchronous uploads froze /healthz. Unset, the bounds
    are a quarter of the threads each, said at start; one upload waits, the others are refused at once."""
    log_path = tmp_path / "gunicorn.log"
    service = start_gunicorn(log_path, {"SR_DATA_DIR": str(tmp_path / "data"), "SR_MODEL_PATH": str(edsr_model_slow)},
                             threads=4)
    client = HttpClient(service.url)
    owner = _owner(client)
    client.cookies["sr_owner"] = owner.split("=", 1)[1]
    socks: list[socket.socket] = []
    try:
        long_job = client.upload(photos.slow_png)
        assert long_job.status == 202
        wait_until(lambda: "at most 1 /events streams and 1 waiting POST /upload" in log_path.read_text(),
                   timeout=10, what="the bounds in the log")
        assert "SR_WEB_THREADS=4" in log_path.read_text()
        socks = [_sync_upload(service.port, photos.small_png, owner) for _ in range(4)]
        answers = []
        for sock in socks:
            sock.settimeout(3)
            try:
                answers.append(sock.recv(4096)[:12])
            except socket.timeout:
                answers.append(b"waiting")
        assert sorted(answers) == [b"HTTP/1.1 503"] * 3 + [b"waiting"], answers
        started = time.monotonic()
        assert client.get("/healthz", timeout=20).status == 200 and time.monotonic() - started < 8
    finally:
        for sock in socks:
            sock.close()
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
