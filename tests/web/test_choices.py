"""Choices per job (model, scale, quality, denoise), /api/options, and health before uploading."""

from __future__ import annotations

import io
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests.web.conftest import Photos, StartServer
from web import create_app, shutdown
from web.jobs.store import QUEUED, Job, JobStore


@pytest.fixture
def models_folder(shared_models: Path, tmp_path: Path) -> Path:
    """A models folder holding a subset: FSRCNN x2 and x3, ESPCN x3, LapSRN x4."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("FSRCNN_x2", "FSRCNN_x3", "ESPCN_x3", "LapSRN_x4"):
        shutil.copy(shared_models / f"{name}.pb", folder)
    return folder


def _app(tmp_path: Path, **settings: object) -> Iterator[Flask]:
    app = create_app({"data_dir": tmp_path / "data", "auth_token": None, **settings})
    yield app
    shutdown(app)


@pytest.fixture
def app(tmp_path: Path, models_folder: Path) -> Iterator[Flask]:
    yield from _app(tmp_path, model_path=models_folder / "FSRCNN_x3.pb", models_dir=models_folder)


def _upload(client: FlaskClient, data: bytes, **fields: str):
    return client.post("/api/jobs", data={"image": (io.BytesIO(data), "photo.png"), **fields},
                       content_type="multipart/form-data")


def test_options_offer_the_installed_subset(app: Flask) -> None:
    body = app.test_client().get("/api/options").get_json()
    assert [(m["id"], m["scale"], m["quality"]) for m in body["models"]] == [
        ("FSRCNN_x2", 2, "best"), ("FSRCNN_x3", 3, "best"), ("ESPCN_x3", 3, "best"), ("LapSRN_x4", 4, "best"),
    ]
    # The catalog's picks, which the page shows and sends as they are.
    assert body["table"] == {"faithful": {"2": "LapSRN_x4", "3": "LapSRN_x4", "4": "LapSRN_x4"},
                             "fast": {"2": "FSRCNN_x2", "3": "FSRCNN_x3"}}
    assert body["scales"] == [2, 3, 4]
    assert body["qualities"] == ["best", "fast"] and body["denoise"] == ["off", "light", "strong"]
    assert body["formats"] == ["png", "jpg", "webp"]
    assert body["default"] == {"model": "FSRCNN_x3", "scale": 3, "quality": "best", "denoise": "off", "kind": "fast"}
    # LapSRN is faithful, the others fast; no restoration model is installed here, and the page says so.
    assert body["kinds"] == [{"kind": "restore", "available": False}, {"kind": "faithful", "available": True},
                             {"kind": "fast", "available": True}]
    # One rule for every model: its own scale, or any from 2 up, its output reduced.
    assert all(m["scales"] == list(range(2, m["scale"] + 1)) and m["denoise_strength"] is False for m in body["models"])
    assert body["available"] is True and body["message"] is None and body["fix_command"] is None
    lapsrn = next(m for m in body["models"] if m["id"] == "LapSRN_x4")
    assert lapsrn["family"] == "lapsrn" and lapsrn["label"] and lapsrn["seconds_per_megapixel"] == 60.0


def test_the_default_model_is_offered_from_outside_the_folder(tmp_path: Path, shared_models: Path,
                                                             models_folder: Path) -> None:
    for app in _app(tmp_path, model_path=shared_models / "LapSRN_x8.pb", models_dir=models_folder):
        body = app.test_client().get("/api/options").get_json()
        assert body["default"]["model"] == "LapSRN_x8" and 8 in body["scales"]


@pytest.mark.parametrize("fields, code, listed", [
    ({"model": "EDSR_x4"}, "bad_model", "FSRCNN_x2, FSRCNN_x3, ESPCN_x3, LapSRN_x4"),
    ({"scale": "8"}, "bad_scale", "x2, x3, x4"),
    ({"scale": "big"}, "bad_scale", "2, 3, 4"),
    ({"quality": "great"}, "bad_quality", "best, fast"),
    ({"denoise": "max"}, "bad_denoise", "off, light, strong"),
    ({"kind": "pretty"}, "bad_kind", "restore, faithful, fast"),
    ({"kind": "restore"}, "kind_unavailable", "faithful, fast"),
    ({"kind": "faithful", "scale": "8"}, "bad_scale", "x2, x3, x4"),
    ({"model": "LapSRN_x4", "scale": "8"}, "bad_scale", "x2, x3, x4"),
    ({"denoise_strength": "0.5"}, "denoise_strength_unavailable", "off, light, strong"),
    ({"denoise_strength": "2"}, "bad_denoise_strength", "0 to 1"),
    ({"kind": "fast", "model": "LapSRN_x4"}, "kind_conflict", "LapSRN_x4 is a faithful model"),
])
def test_unknown_choices_are_400_listing_the_valid_ones(app: Flask, photos: Photos, fields: dict, code: str,
                                                        listed: str) -> None:
    reply = _upload(app.test_client(), photos.small_png, **fields)
    assert reply.status_code == 400, reply.get_json()
    error = reply.get_json()["error"]
    assert error["code"] == code and listed in error["message"], error
    assert [p for p in (Path(app.extensions["sr_web"].config.uploads_dir)).iterdir() if p.name != ".gitkeep"] == []


def test_jobs_run_the_chosen_model(start_server: StartServer, models_folder: Path, photos: Photos) -> None:
    server = start_server(model_path=models_folder / "FSRCNN_x3.pb", models_dir=models_folder)
    client = server.client()
    cases = [({}, "FSRCNN_x3", 3), ({"model": "LapSRN_x4"}, "LapSRN_x4", 4), ({"scale": "2"}, "FSRCNN_x2", 2),
             ({"model": "ESPCN_x3"}, "ESPCN_x3", 3), ({"kind": "faithful", "scale": "4"}, "LapSRN_x4", 4)]
    for fields, model, scale in cases:
        reply = client.upload(photos.small_png, fields=fields)
        assert reply.status == 202, reply.body
        queued = reply.json()
        assert (queued["model"], queued["scale"], queued["denoise"]) == (model, scale, "off")
        assert queued["estimate_seconds"] is not None and queued["estimate_seconds"] >= 0
        done = client.wait(queued["id"])
        assert done["status"] == "done", done
        assert done["estimate_seconds"] is None
        result = client.get(done["links"]["result"])
        with Image.open(io.BytesIO(result.body)) as image:
            assert image.size == (64 * scale, 48 * scale), (fields, image.size)
        assert done["output"]["download_name"] == f"photo_x{scale}_{model}.png"
    # Done jobs now give the measured speed.
    options = client.get("/api/options").json()
    assert all(m["seconds_per_megapixel"] > 0 for m in options["models"])


def test_denoise_reaches_the_worker(start_server: StartServer, fsrcnn_model: Path, photos: Photos) -> None:
    server = start_server()
    client = server.client()
    plain = client.wait(client.upload(photos.small_jpg, fields={"format": "png"}).json()["id"])
    strong = client.wait(client.upload(photos.small_jpg, fields={"format": "png", "denoise": "strong"}).json()["id"])
    assert plain["status"] == strong["status"] == "done", (plain, strong)
    assert strong["denoise"] == "strong"
    first = client.get(plain["links"]["result"]).body
    second = client.get(strong["links"]["result"]).body
    assert first != second  # the denoised photo upscales differently


def test_missing_default_model_says_so_before_any_upload(start_server: StartServer, tmp_path: Path,
                                                        photos: Photos) -> None:
    server = start_server(model_path=tmp_path / "nowhere" / "EDSR_x3.pb", models_dir=tmp_path / "nowhere")
    client = server.client()
    options = client.get("/api/options").json()
    assert options["available"] is False
    message = options["message"]
    assert message and "/" not in message and "sr-models" not in message and "SR_" not in message
    # The page's line for whoever runs the server gets the command, never a path.
    assert options["fix_command"] == "sr-models fetch EDSR_x3"
    for path in ("/api/jobs", "/upload"):
        reply = client.upload(photos.small_png, path=path)
        assert reply.status == 503, (path, reply.status, reply.body)
        assert reply.json()["error"] == {"code": "unavailable", "message": message}
    health = client.get("/healthz")
    assert health.status == 503
    assert "sr-models fetch EDSR_x3" in health.json()["reason"]
    assert str(tmp_path) not in health.body.decode()


def test_without_the_default_model_the_best_installed_one_stands_in(start_server: StartServer, models_folder: Path,
                                                                    photos: Photos) -> None:
    """EDSR_x3.pb missing, four other models installed: jobs run with the best at x3, and /healthz says what is
    missing and how to fetch it, as a note, not a stop."""
    server = start_server(model_path=models_folder / "EDSR_x3.pb", models_dir=models_folder)
    client = server.client()
    options = client.get("/api/options").json()
    assert options["available"] is True and options["default"]["model"] == "FSRCNN_x3"
    job = client.wait(client.upload(photos.small_png).json()["id"])
    assert job["status"] == "done" and job["model"] == "FSRCNN_x3" and job["scale"] == 3, job
    health = client.get("/healthz")
    assert health.status == 200, health.body
    body = health.json()
    assert body["model"] == {"name": "EDSR_x3.pb", "present": False}
    assert any("EDSR_x3.pb is not installed" in n and "sr-models fetch EDSR_x3" in n for n in body["notes"]), body


def test_a_broken_model_fails_with_a_message_for_the_person(start_server: StartServer, tmp_path: Path,
                                                           photos: Photos) -> None:
    model = tmp_path / "models" / "FSRCNN_x3.pb"
    model.parent.mkdir()
    model.write_bytes(b"not a model at all" * 100)
    server = start_server(model_path=model, models_dir=model.parent)
    client = server.client()
    failed = client.wait(client.upload(photos.small_png).json()["id"])
    assert failed["error"]["code"] == "model_error"
    message = failed["error"]["message"]
    for operator_text in ("`", "sr-models", "SR_MODEL_PATH", "/"):
        assert operator_text not in message, message
    # The worker's own words stay for the operator, in the job's log.
    log = (server.data_dir / "state" / "logs" / f"{failed['id']}.log").read_text()
    assert "not a usable super-resolution model" in log
    sync = client.upload(photos.small_png, path="/upload")
    assert sync.status == 503 and sync.json()["error"]["code"] == "model_error"


def test_the_size_limit_message_has_no_operator_remedy(tmp_path: Path, fsrcnn_model: Path) -> None:
    for app in _app(tmp_path, model_path=fsrcnn_model, max_upload_mb=0.01):
        reply = _upload(app.test_client(), b"\x89PNG" + b"0" * 20_000)
        assert reply.status_code == 413
        assert "SR_" not in reply.get_json()["error"]["message"]


def test_the_row_names_the_model_by_file_and_rows_of_older_versions_still_run(
    start_server: StartServer, models_folder: Path, photos: Photos, tmp_path: Path
) -> None:
    """Before, a row held the model's id (`LapSRN_x4`, meaning `LapSRN_x4.pb`); a database of that version,
    with a job still queued, is named by file on open and the job runs its model."""
    data = tmp_path / "older"
    old_id = str(uuid.uuid4())
    (data / "uploads").mkdir(parents=True)
    (data / "uploads" / f"{old_id}.png").write_bytes(photos.small_png)
    store = JobStore(data / "state" / "jobs.db")
    store.add(Job(id=old_id, state=QUEUED, original_name="old.png", input_file=f"{old_id}.png", input_format="png",
                  input_width=64, input_height=48, input_bytes=len(photos.small_png), output_file=f"{old_id}.png",
                  output_format="png", scale=4, created_at=time.time(), model="LapSRN_x4"))
    store.close()
    with sqlite3.connect(data / "state" / "jobs.db") as db:
        db.execute("PRAGMA user_version = 0")
    db.close()

    server = start_server(data_dir=data, model_path=models_folder / "FSRCNN_x3.pb", models_dir=models_folder)
    client = server.client()
    old = client.wait(old_id)
    assert old["status"] == "done" and old["model"] == "LapSRN_x4", old
    assert (old["output"]["width"], old["output"]["height"]) == (64 * 4, 48 * 4)
    new = client.wait(client.upload(photos.small_png, fields={"model": "ESPCN_x3"}).json()["id"])
    assert new["status"] == "done" and new["model"] == "ESPCN_x3", new
    rows = server.services.store
    assert (rows.get(old_id).model, rows.get(new["id"]).model) == ("LapSRN_x4.pb", "ESPCN_x3.pb")
    # Done jobs count for their model's speed, under the file's name.
    assert rows.recent_work("LapSRN_x4.pb") and rows.recent_work("ESPCN_x3.pb")


def test_options_say_each_licence_and_an_allowed_list_leaves_models_out(tmp_path: Path, models_folder: Path,
                                                                         photos: Photos) -> None:
    from tests.fixtures.edsr_graph import write_edsr_graph

    write_edsr_graph(models_folder / "EDSR_x3.pb", scale=3)  # not the catalog's bytes: its licence is unknown
    settings = {"model_path": models_folder / "EDSR_x3.pb", "models_dir": models_folder}
    for app in _app(tmp_path / "all", **settings):
        licences = {m["id"]: m["licence"] for m in app.test_client().get("/api/options").get_json()["models"]}
        assert licences["FSRCNN_x3"] == {
            "id": "Apache-2.0", "attribution": "Xavier Weber (Saafke)", "source": "https://github.com/Saafke/FSRCNN_Tensorflow",
            "note": None, "url": "https://www.apache.org/licenses/LICENSE-2.0", "commercial": True}
        assert licences["EDSR_x3"]["id"] == "unknown" and licences["EDSR_x3"]["commercial"] is None
    for app in _app(tmp_path / "apache", allowed_licences="Apache-2.0", **settings):
        client = app.test_client()
        body = client.get("/api/options").get_json()
        assert "EDSR_x3" not in {m["id"] for m in body["models"]} and body["default"]["model"] == "FSRCNN_x3"
        refused = _upload(client, photos.small_png, model="EDSR_x3")
        assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_model"
        assert "EDSR_x3 is not offered on this service" in refused.get_json()["error"]["message"]
        health = client.get("/healthz").get_json()
        notes = " ".join(health.get("notes", []))
        assert "SR_ALLOWED_LICENCES does not list their licence: EDSR_x3 (unknown)" in notes
        assert "EDSR_x3.pb has no known licence" in notes
    for app in _app(tmp_path / "none", allowed_licences="CC-BY-4.0", **settings):
        health = app.test_client().get("/healthz")
        assert health.status_code == 503
        assert "every installed model is under a licence that SR_ALLOWED_LICENCES does not list" in health.get_json()["reason"]
