"""The JSON API against a real server and the real worker: every status code, results, events, deletion."""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests.web.client import HttpClient, multipart
from tests.web.conftest import Photos, StartServer, wait_until
from tests.web.server import LiveServer, worker_processes
from web.http.api import download_name
from web.jobs.store import Job
from web.jobs.uploads import clean_name, download_stem


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _download_name(reply) -> str:
    match = re.search(r'filename="?([^";]+)"?', reply.header("Content-Disposition"))
    assert match, reply.header("Content-Disposition")
    return match.group(1)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".gitkeep") if folder.is_dir() else []


def test_job_runs_and_result_streams_back(module_server: LiveServer, photos: Photos) -> None:
    client = module_server.client()
    reply = client.upload(photos.small_png, filename="Summer holiday.png")
    assert reply.status == 202, reply.body
    job = reply.json()
    assert reply.header("Location") == f"/api/jobs/{job['id']}"
    assert job["status"] in ("queued", "running")
    assert job["input"] == {"name": "Summer holiday.png", "format": "png", "width": 64, "height": 48, "bytes": len(photos.small_png)}
    assert job["links"]["result"] == f"/api/jobs/{job['id']}/result"

    done = client.wait(job["id"])
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and done["error"] is None and done["queue_position"] is None
    assert (done["output"]["width"], done["output"]["height"]) == (192, 144)
    assert done["output"]["bytes"] > 0 and done["peak_rss_mb"] > 0
    assert done["engine"] and done["device"] == "cpu"
    assert done["timings"]["running"] > 0 and "infer" in done["timings"]

    result = client.get(done["links"]["result"])
    assert result.status == 200
    assert result.header("Content-Type") == "image/png"
    assert _download_name(result) == "Summer holiday_x3_FSRCNN_x3.png"
    assert _image(result.body).size == (192, 144)
    assert len(result.body) == done["output"]["bytes"]

    not_modified = client.get(done["links"]["result"], headers={"If-None-Match": result.header("ETag")})
    assert not_modified.status == 304 and not_modified.body == b""
    ranged = client.get(done["links"]["result"], headers={"Range": "bytes=0-99"})
    assert ranged.status == 206 and ranged.body == result.body[:100]
    assert ranged.header("Content-Range") == f"bytes 0-99/{len(result.body)}"

    # The upload goes once its result exists; the result stays.
    assert not (module_server.data_dir / "uploads" / f"{job['id']}.png").exists()
    assert (module_server.data_dir / "results" / f"{job['id']}.png").is_file()


def test_output_format_follows_request_or_input(module_server: LiveServer, photos: Photos) -> None:
    client = module_server.client()
    as_jpeg = client.upload(photos.small_jpg, filename="coffee.jpeg").json()
    assert as_jpeg["output"]["format"] == "jpg" and as_jpeg["output"]["download_name"] == "coffee_x3_FSRCNN_x3.jpg"
    as_png = client.upload(photos.small_jpg, filename="coffee.jpeg", fields={"format": "PNG"}).json()
    assert as_png["output"]["format"] == "png"
    for job in (as_jpeg, as_png):
        client.delete(f"/api/jobs/{job['id']}")

    # The synchronous form answers with the image itself.
    reply = client.upload(photos.small_jpg, filename="coffee.jpeg", fields={"format": "webp"}, path="/upload")
    assert reply.status == 200, reply.body
    assert reply.header("Content-Type") == "image/webp"
    assert _download_name(reply) == "coffee_x3_FSRCNN_x3.webp"
    assert _image(reply.body).size == (180, 120)
    assert client.job(reply.header("X-Job-Id"))["status"] == "done"


def test_bad_uploads_are_refused_before_any_worker_starts(start_server: StartServer, photos: Photos) -> None:
    server = start_server(max_upload_mb=0.25, max_pixels=100_000)
    client = server.client()

    def expect(reply, status: int, code: str) -> None:
        assert reply.status == status, reply.body
        assert reply.json()["error"]["code"] == code
        assert reply.json()["error"]["message"]

    body, content_type = multipart({"format": "png"}, {})
    expect(client.request("POST", "/api/jobs", body=body, headers={"Content-Type": content_type}), 400, "no_file")
    expect(client.upload(b"", filename="empty.png"), 400, "empty_file")
    expect(client.upload(photos.small_png, fields={"format": "gif"}), 400, "bad_format")
    expect(client.upload(b"not a photo at all\n" * 50, filename="notes.png"), 415, "unsupported_type")
    icon = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(icon, format="ICO")
    expect(client.upload(icon.getvalue(), filename="favicon.png"), 415, "unsupported_type")
    # Over the 256 kB limit while copying, and far over it by Content-Length.
    expect(client.upload(bytes(300_000), filename="big.png"), 413, "too_large")
    expect(client.upload(bytes(2_000_000), filename="huge.png"), 413, "too_large")
    # 400x300 is over the 100 000 pixel limit: refused from the header alone.
    reply = client.upload(photos.wide_jpg, filename="wide.jpg")
    expect(reply, 422, "too_many_pixels")
    assert "400x300" in reply.json()["error"]["message"]

    assert _files(server.data_dir / "uploads") == []
    assert server.services.store.counts() == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    metrics = client.get("/metrics").body.decode()
    assert 'sr_uploads_rejected_total{status="415"} 2' in metrics
    assert 'sr_uploads_rejected_total{status="413"} 2' in metrics
    assert 'sr_jobs_finished_total' in metrics and 'outcome=' not in metrics


@pytest.mark.parametrize(
    "path",
    [
        f"/api/jobs/{uuid.uuid4()}",
        f"/api/jobs/{uuid.uuid4()}/result",
        f"/api/jobs/{uuid.uuid4()}/events",
        "/api/jobs/not-a-job",
        f"/api/jobs/{str(uuid.uuid4()).upper()}",
        f"/api/jobs/{uuid.uuid1()}",
        "/api/jobs/..%2F..%2Fstate%2Fjobs.db",
        "/api/jobs/%2e%2e/result",
    ],
)
def test_unknown_or_malformed_ids_are_404(module_server: LiveServer, path: str) -> None:
    reply = module_server.client().get(path)
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert module_server.client().delete(path.removesuffix("/result").removesuffix("/events")).status == 404


def test_queued_and_running_jobs_answer_409_and_can_be_deleted(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, concurrency=1)
    client = server.client()
    slow = client.upload(photos.slow_png, filename="slow.png").json()
    waiting = client.upload(photos.small_png, filename="small.png").json()
    assert waiting["queue_position"] in (1, 2)

    running = client.wait(slow["id"], until=("running",))
    assert running["queue_position"] is None
    assert client.job(waiting["id"])["queue_position"] == 1
    for job_id, status in ((slow["id"], "running"), (waiting["id"], "queued")):
        reply = client.get(f"/api/jobs/{job_id}/result")
        assert reply.status == 409 and reply.json()["error"]["code"] == "not_ready"
        assert status in reply.json()["error"]["message"]

    wait_until(lambda: worker_processes(slow["id"]), what="the slow job's worker")
    assert client.delete(f"/api/jobs/{slow['id']}").status == 204
    wait_until(lambda: not worker_processes(slow["id"]), timeout=5, what="the worker to be killed")
    assert client.get(f"/api/jobs/{slow['id']}").status == 404

    done = client.wait(waiting["id"])
    assert done["status"] == "done"
    assert client.delete(f"/api/jobs/{waiting['id']}").status == 204
    assert client.get(f"/api/jobs/{waiting['id']}/result").status == 404
    assert client.delete(f"/api/jobs/{waiting['id']}").status == 404
    wait_until(lambda: server.services.runner.workers_running() == 0, what="the runner to settle")
    for folder in ("uploads", "results", "state/logs"):
        assert _files(server.data_dir / folder) == [], folder


def test_unreadable_photo_fails_with_the_workers_message(module_server: LiveServer, photos: Photos) -> None:
    client = module_server.client()
    truncated = photos.small_png[: len(photos.small_png) // 2]  # a valid header, half the pixels missing
    job = client.upload(truncated, filename="scan 1987.png").json()
    failed = client.wait(job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "bad_input"
    message = failed["error"]["message"]
    assert "scan 1987.png" in message and str(module_server.data_dir) not in message
    reply = client.get(f"/api/jobs/{job['id']}/result")
    assert reply.status == 409 and reply.json()["error"]["code"] == "job_failed"
    assert _files(module_server.data_dir / "results") == sorted(
        name for name in _files(module_server.data_dir / "results") if job["id"] not in name
    )

    sync = client.upload(truncated, filename="scan 1987.png", path="/upload")
    assert sync.status == 422 and sync.json()["error"]["code"] == "bad_input"


def test_events_stream_follows_the_job_to_the_end(module_server: LiveServer, photos: Photos) -> None:
    client = module_server.client()
    job = client.upload(photos.small_png).json()
    reply = client.get(job["links"]["events"], timeout=30)  # the stream ends when the job does
    assert reply.status == 200
    assert reply.header("Content-Type").startswith("text/event-stream")
    events = []
    for block in reply.body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if lines.get("event") == "status":
            events.append(json.loads(lines["data"]))
    assert events, reply.body
    assert events[-1]["status"] == "done" and events[-1]["progress"] == 1.0
    assert all(e["id"] == job["id"] for e in events)
    # Sent only when something changed.
    assert all(a != b for a, b in zip(events, events[1:]))


def test_missing_model_fails_health_check_and_jobs(start_server: StartServer, photos: Photos, tmp_path: Path) -> None:
    server = start_server(model_path=tmp_path / "models" / "FSRCNN_x3.pb")
    client = server.client()
    health = client.get("/healthz")
    assert health.status == 503
    assert health.json()["model"] == {"name": "FSRCNN_x3.pb", "present": False}
    assert "sr-models fetch FSRCNN_x3" in health.json()["reason"]
    # Refused before anything is kept: the person learns it now, not from a failed job.
    reply = client.upload(photos.small_png)
    assert reply.status == 503 and reply.json()["error"]["code"] == "unavailable"
    assert _files(server.data_dir / "uploads") == []
    assert 'sr_uploads_rejected_total{status="503"} 1' in client.get("/metrics").body.decode()


def test_health_and_metrics(start_server: StartServer) -> None:
    # A server of its own, so that its queue is empty, and a disk floor of 1 MB, so that the host's free space
    # does not decide the answer.
    server = start_server(min_free_mb=1)
    client = server.client()
    health = client.get("/healthz")
    assert health.status == 200
    body = health.json()
    assert body["status"] == "ok" and body["model"]["present"] is True
    assert body["folders_writable"] == {"uploads": True, "results": True, "state": True}
    free_mb = shutil.disk_usage(server.data_dir).free / 2**20
    assert body["disk"]["ok"] is True and body["disk"]["min_free_mb"] == 1.0
    assert abs(body["disk"]["free_mb"] - free_mb) <= 0.1 * free_mb + 50, (body["disk"], free_mb)
    assert body["queue_length"] == 0 and body["concurrency"] == 1
    metrics = client.get("/metrics")
    assert metrics.status == 200 and metrics.header("Content-Type").startswith("text/plain")
    text = metrics.body.decode()
    for name in ("sr_queue_length 0", "sr_workers_running", "sr_job_seconds_bucket{le=\"+Inf\"}", "sr_jobs{state=\"done\"}"):
        assert name in text


def test_client_file_names_are_only_metadata() -> None:
    assert clean_name("C:\\Users\\ann\\holiday.jpg") == "holiday.jpg"
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("\x00\x1b[31m") == "[31m"
    assert clean_name("") == "photo"
    assert download_stem('my "best"; photo.png') == "my _best_ photo"
    assert download_stem("Été à Paris.jpg") == "Été à Paris"
    assert download_stem("...") == "photo"


def test_unknown_routes_and_methods_answer_json(module_server: LiveServer) -> None:
    client: HttpClient = module_server.client()
    missing = client.get("/nope")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.request("PUT", "/api/jobs")
    assert wrong.status == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_event_streams_are_bounded_and_give_their_slot_back(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, max_event_streams=1)
    client = server.client()
    job = client.upload(photos.slow_png).json()
    first = http.client.HTTPConnection("127.0.0.1", server.server.server_port, timeout=10)
    first.request("GET", job["links"]["events"])
    response = first.getresponse()
    assert response.status == 200
    assert response.readline() == b"retry: 2000\n"

    refused = client.get(job["links"]["events"])
    assert refused.status == 503 and refused.json()["error"]["code"] == "too_many_streams"
    assert f"/api/jobs/{job['id']}" in refused.json()["error"]["message"]
    # Polling still answers while the stream is open.
    assert client.get(job["links"]["self"]).status == 200

    first.close()  # the client goes away; the server notices at its next write
    assert client.delete(f"/api/jobs/{job['id']}").status == 204
    other = client.upload(photos.small_png).json()
    reply = wait_until(
        lambda: (r := client.get(other["links"]["events"], timeout=30)).status == 200 and r,
        timeout=20,
        what="the stream slot to come back",
    )
    assert b"event: status" in reply.body


def test_private_answers_are_never_stored_by_a_cache(module_server: LiveServer, photos: Photos) -> None:
    client = module_server.client()
    page = client.get("/")
    client.cookies["sr_owner"] = re.match(r"sr_owner=([^;]+)", page.header("Set-Cookie")).group(1)
    created = client.upload(photos.small_png)
    job = client.wait(created.json()["id"])
    answers = {
        "page": page, "create": created, "job": client.get(job["links"]["self"]), "list": client.get("/api/jobs"),
        "result": client.get(job["links"]["result"]), "zip": client.get("/api/jobs.zip"),
        "events": client.get(job["links"]["events"]), "missing": client.get(f"/api/jobs/{uuid.uuid4()}"),
        "upload": client.upload(photos.small_png, path="/upload"),
    }
    for what, reply in answers.items():
        assert reply.status in (200, 202, 404), (what, reply.status)
        assert reply.header("Cache-Control") == "private, no-store", (what, reply.header("Cache-Control"))
        assert "cookie" in (reply.header("Vary") or "").lower(), (what, reply.header("Vary"))
    assert "accept-language" in page.header("Vary").lower()


def test_the_two_misleading_refusals_say_what_was_wrong(module_server: LiveServer, photos: Photos) -> None:
    client = module_server.client()
    boundary = uuid.uuid4().hex
    latin1 = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="'.encode()
              + "café.png".encode("latin-1") + b'"\r\nContent-Type: image/png\r\n\r\n' + photos.small_png
              + f"\r\n--{boundary}--\r\n".encode())
    reply = client.request("POST", "/api/jobs", body=latin1,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 400 and reply.json()["error"]["code"] == "bad_form", reply.body
    assert "UTF-8" in reply.json()["error"]["message"]
    body, content_type = multipart({"model": "x" * (2 << 20)}, {"image": ("p.png", photos.small_png)})
    reply = client.request("POST", "/api/jobs", body=body, headers={"Content-Type": content_type})
    assert reply.status == 413 and reply.json()["error"]["code"] == "form_too_large", reply.body
    assert "MB" not in reply.json()["error"]["message"] and "other than the photo" in reply.json()["error"]["message"]
    assert list((module_server.data_dir / "uploads").glob(".incoming-*")) == []


@pytest.mark.parametrize("settings, expected", [
    ({}, "Summer holiday_x3_FSRCNN_x3.png"),
    ({"denoise": "light"}, "Summer holiday_x3_FSRCNN_x3_denoise-light.png"),
    ({"model": "realesr-general-x4v3.pth", "scale": 4, "denoise_strength": 0.3}, "Summer holiday_x4_realesr-general-x4v3_strength-0.3.png"),
    ({"faces": "on", "face_fidelity": 0.7}, "Summer holiday_x3_FSRCNN_x3_faces-0.7.png"),
    ({"model": None}, "Summer holiday_x3.png"),  # a row from before models could be chosen
])
def test_the_download_name_says_the_model_and_the_settings_that_change_the_pixels(settings: dict, expected: str) -> None:
    settings = dict(settings)
    job = Job(id="j", state="done", original_name="Summer holiday.jpg", input_file="j.jpg", input_format="jpg",
              input_width=4, input_height=3, input_bytes=10, output_file="j.png", output_format="png",
              scale=settings.pop("scale", 3), created_at=0.0, model=settings.pop("model", "FSRCNN_x3.pb"), **settings)
    assert download_name(job) == expected
