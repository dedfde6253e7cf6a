"""Each browser's own jobs: the owner cookie, the job list, 404 for another owner's ids, the zip of results."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask

from tests.web.client import HttpClient
from tests.web.conftest import Photos, StartServer
from tests.web.server import LiveServer
from web import create_app, shutdown
from web.http.archive import unique_names


def _browser(server: LiveServer) -> HttpClient:
    """A client holding the owner cookie the service hands out on its first answer."""
    client = server.client()
    reply = client.get("/api/jobs")
    match = re.match(r"sr_owner=([^;]+)", reply.header("Set-Cookie") or "")
    assert match, reply.headers
    client.cookies["sr_owner"] = match.group(1)
    return client


@pytest.fixture
def app(tmp_path: Path, fsrcnn_model: Path) -> Iterator[Flask]:
    app = create_app({"data_dir": tmp_path / "data", "model_path": fsrcnn_model, "auth_token": None})
    yield app
    shutdown(app)


def test_the_owner_cookie(app: Flask) -> None:
    client = app.test_client()
    reply = client.get("/api/jobs")
    assert reply.get_json() == {"jobs": []}
    cookie = reply.headers["Set-Cookie"]
    value = re.match(r"sr_owner=([^;]+)", cookie).group(1)
    assert len(value) >= 22
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="):
        assert attribute in cookie, cookie
    assert int(re.search(r"Max-Age=(\d+)", cookie).group(1)) >= 24 * 3600
    assert "Secure" not in cookie
    # Kept once set; a https request behind the proxy gets a Secure one.
    assert "Set-Cookie" not in client.get("/api/jobs").headers
    assert "Secure" in app.test_client().get("/api/jobs", base_url="https://localhost").headers["Set-Cookie"]


def test_a_made_up_owner_cookie_is_replaced_and_owns_nothing(app: Flask, photos: Photos) -> None:
    """The attack: any 22-128 character `sr_owner` counted as a new owner. Only ids the service signed count."""
    genuine = re.match(r"sr_owner=([^;]+)", app.test_client().get("/api/jobs").headers["Set-Cookie"]).group(1)
    owner_id, mac = genuine.split(".")
    for made_up in ["A" * 32, genuine.replace(".", ""), f"{owner_id[:-1]}{'B' if owner_id[-1] != 'B' else 'C'}.{mac}",
                    f"{owner_id}.{mac[:-1]}{'B' if mac[-1] != 'B' else 'C'}"]:
        client = app.test_client(use_cookies=False)
        reply = client.post("/api/jobs", data={"image": (io.BytesIO(photos.small_png), "p.png")},
                            headers={"Cookie": f"sr_owner={made_up}"})
        assert reply.status_code == 202, reply.get_json()
        issued = re.match(r"sr_owner=([^;]+)", reply.headers["Set-Cookie"]).group(1)
        assert issued != made_up and re.fullmatch(r"[A-Za-z0-9_-]{32}\.[A-Za-z0-9_-]{43}", issued)
        job = app.extensions["sr_web"].store.get(reply.get_json()["id"])
        assert job.owner is None, "a made-up cookie owns nothing; the job is reachable by its id alone"
        assert client.get("/api/jobs", headers={"Cookie": f"sr_owner={made_up}"}).get_json() == {"jobs": []}
    # The genuine id is kept, and owns what it sends.
    client = app.test_client(use_cookies=False)
    reply = client.post("/api/jobs", data={"image": (io.BytesIO(photos.small_png), "p.png")},
                        headers={"Cookie": f"sr_owner={genuine}"})
    assert "Set-Cookie" not in reply.headers
    listed = client.get("/api/jobs", headers={"Cookie": f"sr_owner={genuine}"}).get_json()["jobs"]
    assert [job["id"] for job in listed] == [reply.get_json()["id"]]


def test_owners_see_only_their_jobs(start_server: StartServer, photos: Photos) -> None:
    server = start_server()
    ann, bob = _browser(server), _browser(server)
    curl = server.client()
    ann_jobs = [ann.upload(photos.small_png, filename=f"ann{i}.png").json()["id"] for i in range(2)]
    bob_job = bob.upload(photos.small_jpg, filename="bob.jpg").json()["id"]
    curl_job = curl.upload(photos.small_png, filename="curl.png").json()["id"]
    for job_id, client in [(j, ann) for j in ann_jobs] + [(bob_job, bob), (curl_job, curl)]:
        assert client.wait(job_id)["status"] == "done"

    assert [j["id"] for j in ann.get("/api/jobs").json()["jobs"]] == ann_jobs  # oldest first
    assert [j["input"]["name"] for j in ann.get("/api/jobs").json()["jobs"]] == ["ann0.png", "ann1.png"]
    assert [j["id"] for j in bob.get("/api/jobs").json()["jobs"]] == [bob_job]
    assert curl.get("/api/jobs").json() == {"jobs": []}
    # The row keeps a hash of the cookie, never the value.
    row = server.services.store.get(bob_job)
    assert row.owner == hashlib.sha256(bob.cookies["sr_owner"].encode()).hexdigest()

    unknown = ann.get("/api/jobs/00000000-0000-4000-8000-000000000000")
    for path in (f"/api/jobs/{bob_job}", f"/api/jobs/{bob_job}/result", f"/api/jobs/{bob_job}/events"):
        for other in (ann, curl):
            reply = other.get(path)
            assert reply.status == 404 and reply.json() == unknown.json(), (path, reply.status)
    assert ann.delete(f"/api/jobs/{bob_job}").status == 404
    assert bob.job(bob_job)["status"] == "done"
    # A job sent without a cookie is listed to nobody and reachable by its unguessable id alone.
    assert all(curl_job not in [j["id"] for j in c.get("/api/jobs").json()["jobs"]] for c in (ann, bob, curl))
    assert ann.get(f"/api/jobs/{curl_job}/result").status == 200
    assert curl.delete(f"/api/jobs/{curl_job}").status == 204
    assert bob.delete(f"/api/jobs/{bob_job}").status == 204


def test_the_zip_holds_the_owners_done_results(start_server: StartServer, photos: Photos) -> None:
    server = start_server()
    ann, bob = _browser(server), _browser(server)
    assert ann.get("/api/jobs.zip").status == 404
    assert ann.get("/api/jobs.zip").json()["error"]["code"] == "no_results"
    ids = [ann.upload(photos.small_jpg, filename="holiday.jpg").json()["id"] for _ in range(3)]
    ids.append(ann.upload(photos.small_png, filename="cat.png", fields={"format": "webp"}).json()["id"])
    bob.wait(bob.upload(photos.small_png, filename="bob.png").json()["id"])
    for job_id in ids:
        assert ann.wait(job_id)["status"] == "done"
    failed = ann.upload(photos.small_png[: len(photos.small_png) // 2], filename="broken.png").json()["id"]
    assert ann.wait(failed)["status"] == "failed"

    reply = ann.get("/api/jobs.zip")
    assert reply.status == 200 and reply.header("Content-Type") == "application/zip"
    assert "attachment" in reply.header("Content-Disposition")
    # Streamed while written: no length known up front.
    assert reply.header("Content-Length") is None and reply.header("Transfer-Encoding") == "chunked"
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == ["holiday_x3_FSRCNN_x3.jpg", "holiday_x3_FSRCNN_x3 (2).jpg", "holiday_x3_FSRCNN_x3 (3).jpg",
                         "cat_x3_FSRCNN_x3.webp"]
        for name, job_id in zip(names, ids):
            assert archive.read(name) == ann.get(f"/api/jobs/{job_id}/result").body
    with zipfile.ZipFile(io.BytesIO(bob.get("/api/jobs.zip").body)) as archive:
        assert archive.namelist() == ["bob_x3_FSRCNN_x3.png"]


def test_unique_names() -> None:
    assert unique_names(["a.jpg", "a.jpg", "b.png", "A.jpg", "noext", "noext"]) == [
        "a.jpg", "a (2).jpg", "b.png", "A (3).jpg", "noext", "noext (2)",
    ]
