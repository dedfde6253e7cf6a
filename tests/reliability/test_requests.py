"""Malformed requests, hostile file names, oversized bodies, foreign and malformed job ids, and missing tokens:
each gets a clear JSON error, nothing lands on disk outside the job's own files, and the service keeps serving."""

from __future__ import annotations

import io
import json
import re
import select
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import psutil
import pytest
from PIL import Image

from tests.helpers import dnn_superres
from tests.reliability.conftest import Observe, assert_settled, run_worker
from tests.reliability.inputs import encode, pattern, rgb
from tests.reliability.outcomes import outcome
from tests.web.client import HttpClient, multipart
from tests.web.server import LiveServer, start_live_server, worker_processes

TOKEN = "s3cret-token-for-tests"
BOUNDARY = "reliability-boundary"


def part(name: str, filename: str, data: bytes) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fsrcnn_model: Path) -> LiveServer:
    live = start_live_server(tmp_path_factory.mktemp("requests-data"), model_path=fsrcnn_model,
                             max_upload_mb=1, concurrency=2)
    yield live
    live.stop()
    assert worker_processes(live.data_dir) == []


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(rgb(20, 16, seed=21), "PNG")


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.mark.parametrize(
    "case, content_type, body, status, code, hint",
    [
        ("empty body", None, b"", 400, "no_file", "field 'image'"),
        ("raw image body", "image/png", "PHOTO", 400, "no_file", "field 'image'"),
        ("missing field", MULTIPART, "WRONG_FIELD", 400, "no_file", "field 'image'"),
        ("two files in one field", MULTIPART, "TWO_FILES", 400, "too_many_files", "one photo"),
        ("no multipart boundary", "multipart/form-data", "ONE_FILE", 400, "bad_form", "boundary"),
        ("form cut short", MULTIPART, "CUT_SHORT", 400, "bad_form", "could not be read"),
    ],
)
def test_malformed_upload_requests(
    server: LiveServer, photo: bytes, case: str, content_type: str | None, body: bytes | str,
    status: int, code: str, hint: str, observe: Observe,
) -> None:
    bodies = {
        "PHOTO": photo,
        "WRONG_FIELD": form(part("file", "a.png", photo)),
        "TWO_FILES": form(part("image", "a.png", photo), part("image", "b.png", photo)),
        "ONE_FILE": form(part("image", "a.png", photo)),
        "CUT_SHORT": form(part("image", "a.png", photo))[:150],
    }
    data = bodies[body] if isinstance(body, str) else body
    jobs_before = sum(server.services.store.counts().values())
    reply = server.client().request("POST", "/api/jobs", body=data,
                                    headers={"Content-Type": content_type} if content_type else {})
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert error["code"] == code and hint in error["message"]
    assert sum(server.services.store.counts().values()) == jobs_before
    assert_settled(server)
    observe("Malformed upload requests", case, http=outcome(f"HTTP {status} {code} (no job)", error["message"]),
            left="nothing", answering="yes (/healthz 200)")


HOSTILE_NAMES = {
    "parent folders": ("../../../escaped.png", "escaped.png"),
    "absolute path": ("/tmp/escaped-absolute.png", "escaped-absolute.png"),
    "NUL byte": ("nul\x00byte.png", "nulbyte.png"),
    "very long": ("n" * 5000 + ".png", "n" * 120),
    "non-ASCII": ("Été à Zürich 写真.png", "Été à Zürich 写真.png"),
    "shell and HTML characters": ("$(reboot) `id` <img src=x onerror=alert(1)>.png",
                                  "$(reboot) `id` <img src=x onerror=alert(1)>.png"),
}


@pytest.mark.parametrize("label", HOSTILE_NAMES)
def test_client_file_names_never_reach_the_disk(server: LiveServer, photo: bytes, label: str,
                                                observe: Observe) -> None:
    sent, shown = HOSTILE_NAMES[label]
    client = server.client()
    reply = client.upload(photo, filename=sent)
    assert reply.status == 202, reply.body
    job = client.wait(reply.json()["id"])
    assert job["status"] == "done", job["error"]
    assert job["input"]["name"] == shown
    # On disk only the server's own name for the job.
    assert (server.data_dir / "results" / f"{job['id']}.png").is_file()
    assert not Path("/tmp/escaped-absolute.png").exists()
    assert not (server.data_dir.parent / "escaped.png").exists()
    assert not list(server.data_dir.parent.parent.glob("escaped*"))
    result = client.get(job["links"]["result"])
    assert result.status == 200
    disposition = result.header("Content-Disposition")
    assert "/" not in disposition and "\x00" not in disposition and "\\" not in disposition
    names = re.findall(r"filename\*=UTF-8''([^;]+)|filename=\"?([^\";]+)", disposition)
    for encoded, plain in names:
        name = unquote(encoded) if encoded else plain
        assert name.endswith("_x3_FSRCNN_x3.png") and len(name) <= 100, name
    assert_settled(server)
    observe("Client file names", label, http=f"HTTP 202, job done; shown as {_cell_name(shown)}; download name "
            f"{_cell_name(name)}", left="only <job id>.png in results/", answering="yes (/healthz 200)")


def _cell_name(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:20] + "…" + name[-12:])


@pytest.mark.parametrize("name", ["Été à Zürich 写真.png", "-starts with a dash.png", "q'uo\"te $(x).png", "n" * 200 + ".png"])
def test_worker_cli_takes_any_file_name(fsrcnn_model: Path, photo: bytes, tmp_path: Path, name: str,
                                        observe: Observe) -> None:
    source, output = tmp_path / name, tmp_path / ("out " + name)
    source.write_bytes(photo)
    run = run_worker(f"--input={source}", f"--output={output}", "--model", fsrcnn_model)
    assert run.exit_code == 0, run.stderr
    assert output.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted([name, output.name])
    label = {"-": "leading dash", "q": "quotes and $(...)", "n": "200 characters", "É": "non-ASCII"}[name[0]]
    observe("Client file names", f"worker CLI: {label}", cli=f"exit 0 (paths given as --input=PATH)",
            left="CLI: the result only")


def _read_answer(sock: socket.socket) -> bytes:
    """The server's answer: headers and a Content-Length body (the connection may stay open after it)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if _ and length and len(body) >= int(length.group(1)):
                break
    except (ConnectionResetError, socket.timeout):
        pass
    return answer


def _send_chunked(port: int, total: int) -> tuple[int, bytes]:
    """Streams a multipart upload of `total` bytes with chunked transfer encoding (no Content-Length) and
    stops as soon as the server answers. Returns how many bytes were sent by then and the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(
        f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    sent = 0
    data = part("image", "huge.png", b"")[:-2] + b"\x89PNG\r\n\x1a\n"
    filler = bytes(64 * 1024)
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            sent += len(data)
            data = filler
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_answer(sock)
    sock.close()
    return sent, answer


def test_oversized_upload_is_refused_while_streaming(server: LiveServer, observe: Observe) -> None:
    """1 MB limit, 64 MB sent without Content-Length: the answer comes after a few MB at most (socket buffers),
    and neither the server's memory nor its disk takes the body."""
    me = psutil.Process()
    rss_before = me.memory_info().rss
    sent, answer = _send_chunked(server.server.server_port, 64 << 20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer and b"1 MB limit" in answer
    assert sent < 16 << 20, f"{sent >> 20} MB were sent before the server answered"
    grew = me.memory_info().rss - rss_before
    assert grew < 16 << 20
    assert_settled(server)
    observe("Size limits", "64 MB upload, chunked (no Content-Length), SR_MAX_UPLOAD_MB=1",
            http=f"HTTP 413 too_large after {sent / 2**20:.1f} MB had been sent; server memory +{grew / 2**20:.1f} MB",
            left="nothing", answering="yes (/healthz 200)")


def test_oversized_content_length_is_refused_before_the_body(server: LiveServer, observe: Observe) -> None:
    sock = socket.create_connection(("127.0.0.1", server.server.server_port), timeout=10)
    sock.sendall(
        f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
        f"Content-Length: {200 << 20}\r\n\r\n".encode()
    )
    started = time.monotonic()
    answer = _read_answer(sock)  # no byte of the body was sent
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413") and b'"too_large"' in answer
    assert time.monotonic() - started < 5
    assert_settled(server)
    message = answer.partition(b"\r\n\r\n")[2].decode()
    observe("Size limits", "Content-Length: 200 MB, SR_MAX_UPLOAD_MB=1, no body sent",
            http=outcome("HTTP 413 too_large before any body byte", json.loads(message)["error"]["message"]),
            left="nothing", answering="yes (/healthz 200)")


def test_client_hanging_up_mid_upload_leaves_nothing(server: LiveServer, photo: bytes, observe: Observe) -> None:
    body = form(part("image", "cut.png", photo + bytes(200_000)))
    jobs_before = sum(server.services.store.counts().values())
    sock = socket.create_connection(("127.0.0.1", server.server.server_port), timeout=10)
    sock.sendall(
        f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2]
    )
    sock.close()
    time.sleep(0.5)
    assert sum(server.services.store.counts().values()) == jobs_before
    assert_settled(server)
    observe("Size limits", "client hangs up half way through a 200 kB upload", http="no answer to give; no job",
            left="nothing (no .incoming file)", answering="yes (/healthz 200)")


def test_each_id_reaches_only_its_own_job(server: LiveServer, fsrcnn_model: Path, observe: Observe) -> None:
    client = server.client()
    photos = {seed: encode(Image.fromarray(pattern(24, 18, seed=seed)), "PNG") for seed in (31, 32)}
    upscale = dnn_superres(fsrcnn_model, "fsrcnn", 3)
    ids = {seed: client.upload(data, filename=f"own-{seed}.png").json()["id"] for seed, data in photos.items()}
    jobs = {seed: client.wait(job_id) for seed, job_id in ids.items()}
    assert [job["status"] for job in jobs.values()] == ["done", "done"]
    for seed, job_id in ids.items():
        assert client.job(job_id)["input"]["name"] == f"own-{seed}.png"
        result = client.get(f"/api/jobs/{job_id}/result")
        assert result.header("X-Job-Id") == job_id
        # The whole result is its own photo's upscale, to the value (the other photo's differs everywhere).
        own = upscale(np.asarray(Image.open(io.BytesIO(photos[seed])).convert("RGB")))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.body)).convert("RGB")), own), seed
        events = client.get(f"/api/jobs/{job_id}/events", timeout=10).body.decode()
        assert job_id in events and all(other not in events for other in ids.values() if other != job_id)

    first, second = ids.values()
    assert client.delete(f"/api/jobs/{first}").status == 204
    for path in (f"/api/jobs/{first}", f"/api/jobs/{first}/result", f"/api/jobs/{first}/events"):
        gone = client.get(path)
        assert gone.status == 404 and gone.json()["error"]["code"] == "not_found"
    assert client.delete(f"/api/jobs/{first}").status == 404
    assert client.get(f"/api/jobs/{second}/result").status == 200, "deleting one job must not touch another"
    assert_settled(server)
    observe("Job ids", "two jobs: each id on GET, /result, /events; then DELETE of one",
            http="each id shows, streams and downloads only its own job (X-Job-Id, pixels); after DELETE every "
            "route of that id answers 404 not_found, the other job is untouched",
            left="only the other job's result", answering="yes (/healthz 200)")


BAD_IDS = [
    str(uuid.uuid4()),  # well-formed, unknown
    "0" * 36,
    "not-a-job",
    str(uuid.uuid4()).upper(),
    "%2e%2e%2fstate%2fjobs.db",
    "..%2F..%2Fstate",
    "%00",
    "x" * 5000,
    "%E5%86%99%E7%9C%9F",
]


@pytest.mark.parametrize("job_id", BAD_IDS, ids=lambda s: s[:20])
def test_unknown_and_malformed_ids_on_every_route(server: LiveServer, job_id: str, observe: Observe) -> None:
    client = server.client()
    for method, suffix in (("GET", ""), ("GET", "/result"), ("GET", "/events"), ("DELETE", "")):
        reply = client.request(method, f"/api/jobs/{job_id}{suffix}")
        assert reply.status == 404, (method, suffix, reply.status, reply.body[:200])
        assert reply.json()["error"]["code"] == "not_found"
    assert_settled(server)
    observe("Job ids", f"id {_cell_name(job_id)}", http=outcome("HTTP 404 not_found on GET, /result, /events and "
            "DELETE", reply.json()["error"]["message"]), left="nothing", answering="yes (/healthz 200)")


def test_without_the_token_nothing_is_stored_shown_or_deleted(tmp_path: Path, fsrcnn_model: Path, photo: bytes,
                                                              observe: Observe) -> None:
    live = start_live_server(tmp_path / "data", model_path=fsrcnn_model, auth_token=TOKEN)
    try:
        owner = live.client(token=TOKEN)
        job = owner.wait(owner.upload(photo, filename="private.png").json()["id"])
        assert job["status"] == "done"
        for client in (live.client(), HttpClient(live.url, token=TOKEN + "x"), HttpClient(live.url, token=" ")):
            upload = client.upload(photo)
            assert upload.status in (401, 429) and upload.json()["error"]["code"] in ("unauthorized", "too_many_attempts")
            for method, path in (("GET", f"/api/jobs/{job['id']}"), ("GET", f"/api/jobs/{job['id']}/result"),
                                 ("GET", f"/api/jobs/{job['id']}/events"), ("DELETE", f"/api/jobs/{job['id']}"),
                                 ("POST", "/upload"), ("GET", f"/api/jobs/{job['id']}/result?token={TOKEN}")):
                reply = client.request(method, path)
                # A wrong token, however sent, counts as a guess: after 3 the address waits (429).
                expected = (401,) if client.token is None else (401, 429)
                assert reply.status in expected, (method, path, reply.status)
                assert b"private" not in reply.body
            if client.token is None:
                assert upload.status == 401
        assert live.services.store.counts()["done"] == 1 and sum(live.services.store.counts().values()) == 1
        # The address waits out its hold (Retry-After), even with the right token; then the owner's result is there.
        deadline = time.monotonic() + 90
        result = owner.get(f"/api/jobs/{job['id']}/result")
        while result.status == 429 and time.monotonic() < deadline:
            time.sleep(float(result.headers.get("retry-after", "1")))
            result = owner.get(f"/api/jobs/{job['id']}/result")
        assert result.status == 200
        assert_settled(live)
        observe("Access token (SR_AUTH_TOKEN set)", "no token, a wrong token, a blank token, the token in the query",
                http=outcome("HTTP 401 unauthorized on upload, job, result, events, DELETE and /upload",
                             upload.json()["error"]["message"]),
                left="nothing stored; the owner's job and result untouched", answering="yes (/healthz 200)")
    finally:
        live.stop()
