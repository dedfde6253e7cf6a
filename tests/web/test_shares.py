"""Fair shares and bounded output: one owner cannot take the whole queue or every progress stream, and a
result's size is bounded (SR_MAX_OUTPUT_PIXELS) before its job is queued."""

from __future__ import annotations

import http.client
import io
import re
import secrets
import shutil
from pathlib import Path

from PIL import Image

from tests.web.client import HttpClient
from tests.web.conftest import Photos, StartServer, wait_until
from tests.web.server import LiveServer


def _browser(server: LiveServer, address: str = "203.0.113.1") -> HttpClient:
    """A browser holding the owner cookie the service hands out, at `address` (as the proxy in front says, for
    a server started with behind_proxy=True)."""
    client = server.client()
    client.headers["X-Forwarded-For"] = address
    client.cookies["sr_owner"] = re.match(r"sr_owner=([^;]+)", client.get("/api/jobs").header("Set-Cookie")).group(1)
    return client


def _running(client: HttpClient, photo: bytes) -> dict:
    job = client.upload(photo).json()
    return client.wait(job["id"], until=("running",), timeout=60)


def test_one_owner_holds_at_most_its_share_of_the_queue(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, queue_size=4, behind_proxy=True)  # SR_OWNER_SHARE 0.5: 2 each
    greedy, other = _browser(server, "203.0.113.1"), _browser(server, "203.0.113.2")
    long_job = _running(greedy, photos.slow_png)
    queued = [greedy.upload(photos.small_png, filename=f"q{i}.png") for i in range(2)]
    assert [r.status for r in queued] == [202, 202]
    refused = greedy.upload(photos.small_png, filename="q2.png")
    assert refused.status == 429 and refused.json()["error"]["code"] == "queue_share_full", refused.body
    assert "2 photos waiting" in refused.json()["error"]["message"] and refused.header("Retry-After")
    assert len(list((server.data_dir / "uploads").glob("*.png"))) == 3, "the refused photo is not kept"
    # Someone else is still served, though the queue has room for only two more.
    assert other.upload(photos.small_png).status == 202
    for client in (greedy, other):
        for job in client.get("/api/jobs").json()["jobs"]:
            assert client.delete(job["links"]["self"]).status == 204


def _open_stream(server: LiveServer, client: HttpClient, path: str) -> http.client.HTTPResponse:
    """An open stream; the response holds the connection (closing it, or losing it, ends the stream)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server.server_port, timeout=30)
    conn.request("GET", path, headers={"Cookie": f"sr_owner={client.cookies['sr_owner']}", **client.headers})
    response = conn.getresponse()
    assert response.status == 200 and response.readline() == b"retry: 2000\n"
    return response


def test_one_owner_holds_at_most_its_share_of_the_progress_streams(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, max_event_streams=4, concurrency=2, behind_proxy=True)  # 2 each
    greedy, other = _browser(server, "203.0.113.1"), _browser(server, "203.0.113.2")
    mine, theirs = _running(greedy, photos.slow_png), other.upload(photos.small_png).json()
    held = [_open_stream(server, greedy, mine["links"]["events"]) for _ in range(2)]
    try:
        refused = greedy.get(mine["links"]["events"])
        assert refused.status == 503 and refused.json()["error"]["code"] == "too_many_streams"
        assert "you have 2 progress streams" in refused.json()["error"]["message"]
        assert f"/api/jobs/{mine['id']}" in refused.json()["error"]["message"]
        # The other owner still gets a stream of its own, to the end of its job.
        stream = other.get(theirs["links"]["events"], timeout=60)
        assert stream.status == 200 and b"event: status" in stream.body
    finally:
        for response in held:
            response.close()
    assert greedy.delete(mine["links"]["self"]).status == 204
    # Closed streams give the owner's slots back (the server notices at its next write).
    wait_until(lambda: greedy.get(mine["links"]["events"]).status == 404, timeout=20, what="the job to go")
    again = greedy.upload(photos.small_png).json()
    reply = wait_until(lambda: (r := greedy.get(again["links"]["events"], timeout=30)).status == 200 and r,
                       timeout=30, what="the owner's stream slots to come back")
    assert b"event: status" in reply.body


def test_new_owners_from_one_address_share_its_part_of_the_queue(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    """The attack: every upload with an owner cookie of its own (made up, or fetched fresh from the service)
    filled the queue. One address holds at most its share, however many owners it shows."""
    server = start_server(model_path=edsr_model_slow, queue_size=4, behind_proxy=True)  # 2 per address
    attacker = _browser(server, "203.0.113.1")
    long_job = _running(attacker, photos.slow_png)
    made_up = HttpClient(server.url, cookies={"sr_owner": secrets.token_urlsafe(24)},
                         headers={"X-Forwarded-For": "203.0.113.1"})
    replies = [made_up.upload(photos.small_png)] + [_browser(server, "203.0.113.1").upload(photos.small_png)
                                                     for _ in range(2)]
    assert [r.status for r in replies] == [202, 202, 429], [r.body for r in replies]
    assert replies[-1].json()["error"]["code"] == "queue_share_full"
    assert "sent from your network" in replies[-1].json()["error"]["message"]
    # Someone at another address is still served.
    assert _browser(server, "198.51.100.7").upload(photos.small_png).status == 202
    assert attacker.delete(long_job["links"]["self"]).status == 204


def test_new_owners_from_one_address_share_its_part_of_the_streams(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    """The attack: unread streams under made-up owners took every stream slot."""
    server = start_server(model_path=edsr_model_slow, max_event_streams=4, behind_proxy=True)  # 2 per address
    first = _browser(server, "203.0.113.1")
    job = _running(first, photos.slow_png)
    other = _browser(server, "203.0.113.1")
    held = [_open_stream(server, first, job["links"]["events"])]
    try:
        refused = other.get(job["links"]["events"])
        assert refused.status == 404, "another owner's job is not told"
        anonymous = HttpClient(server.url, headers={"X-Forwarded-For": "203.0.113.1"})
        anon_job = anonymous.upload(photos.small_png).json()
        held.append(_open_stream(server, first, job["links"]["events"]))
        refused = anonymous.get(anon_job["links"]["events"])
        assert refused.status == 503 and refused.json()["error"]["code"] == "too_many_streams", refused.body
        assert "from your network" in refused.json()["error"]["message"]
        elsewhere = HttpClient(server.url, headers={"X-Forwarded-For": "198.51.100.7"})
        stream = elsewhere.get(anon_job["links"]["events"], timeout=60)
        assert stream.status == 200 and b"event: status" in stream.body
    finally:
        for response in held:
            response.close()
        assert first.delete(job["links"]["self"]).status == 204


def _flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_output_is_bounded_before_the_job_is_queued(
    start_server: StartServer, photos: Photos, shared_models: Path, tmp_path: Path
) -> None:
    """The attack: a 4000x4000 flat PNG (tens of kB) at x8 would be a 32000x32000 result. Refused from its
    header, with the largest scale this photo allows."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("FSRCNN_x3.pb", "LapSRN_x8.pb"):
        shutil.copy(shared_models / name, models / name)
    server = start_server(model_path=models / "FSRCNN_x3.pb", models_dir=models)
    client = _browser(server)
    bomb = _flat_png(4000, 4000)
    assert len(bomb) < 200_000
    reply = client.upload(bomb, fields={"model": "LapSRN_x8"})
    assert reply.status == 422, reply.body
    error = reply.json()["error"]
    assert error["code"] == "too_many_output_pixels"
    assert "32000x32000" in error["message"] and "largest scale this photo allows is x3" in error["message"]
    assert client.upload(bomb, fields={"scale": "8"}, path="/upload").status == 422
    assert client.get("/api/jobs").json()["jobs"] == []
    assert [p for p in (server.data_dir / "uploads").iterdir()] == []


def test_the_output_pixel_limit_is_input_pixels_times_scale_squared(
    start_server: StartServer, photos: Photos
) -> None:
    exact = 64 * 48 * 9  # the small PNG at x3
    at_limit = start_server(max_output_pixels=exact).client()
    assert at_limit.wait(at_limit.upload(photos.small_png).json()["id"])["status"] == "done"
    over = start_server(max_output_pixels=exact - 1).client()
    reply = over.upload(photos.small_png)
    assert reply.status == 422 and reply.json()["error"]["code"] == "too_many_output_pixels"
    # FSRCNN x3 also writes x2 (reduced), which fits; below that, no offered scale does.
    assert "the largest scale this photo allows is x2" in reply.json()["error"]["message"]
    below_x2 = start_server(max_output_pixels=64 * 48 * 4 - 1).client().upload(photos.small_png)
    assert below_x2.status == 422 and "no scale offered here fits it" in below_x2.json()["error"]["message"]
