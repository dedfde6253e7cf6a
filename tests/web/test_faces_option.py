"""The face option on the API: offered only when the GFPGAN file is installed, its licence said, its settings
checked, passed to the worker, counted in the cache key, and the faces restored in the job's JSON."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from flask import Flask

from infer.faces.options import GFPGAN_FILE
from tests.helpers import install_face_model
from tests.web.conftest import Photos, StartServer
from web import create_app, shutdown


@pytest.fixture
def folder(shared_models: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(shared_models / "FSRCNN_x3.pb", models)
    return models


def _install_gfpgan(gfpgan_file: Path, folder: Path) -> None:
    # The front end reads only the file's scan record; the worker reads the file, and only for a photo with a face.
    install_face_model(gfpgan_file, folder)


@pytest.fixture
def app(tmp_path: Path, folder: Path) -> Iterator[Flask]:
    app = create_app({"data_dir": tmp_path / "data", "auth_token": None, "model_path": folder / "FSRCNN_x3.pb",
                      "models_dir": folder})
    yield app
    shutdown(app)


def _upload(app: Flask, data: bytes, **fields: str):
    return app.test_client().post("/api/jobs", data={"image": (io.BytesIO(data), "photo.jpg"), **fields},
                                  content_type="multipart/form-data")


def test_faces_are_offered_only_when_the_gfpgan_file_is_installed(app: Flask, folder: Path, gfpgan_file: Path, photos: Photos) -> None:
    faces = app.test_client().get("/api/options").get_json()["faces"]
    assert faces["available"] is False and faces["default"] == "off" and faces["default_fidelity"] == 0.5
    assert "non-commercial" in faces["licence"] and "StyleGAN2" in faces["licence"]
    refused = _upload(app, photos.small_jpg, faces="on")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "faces_unavailable"

    _install_gfpgan(gfpgan_file, folder)
    assert app.test_client().get("/api/options").get_json()["faces"]["available"] is True


@pytest.mark.parametrize("fields, code", [({"faces": "maybe"}, "bad_faces"), ({"faces": "on", "face_fidelity": "2"}, "bad_face_fidelity"),
                                          ({"faces": "on", "face_fidelity": "nan"}, "bad_face_fidelity")])
def test_bad_face_settings_are_400(app: Flask, folder: Path, gfpgan_file: Path, photos: Photos, fields: dict, code: str) -> None:
    _install_gfpgan(gfpgan_file, folder)
    response = _upload(app, photos.small_jpg, **fields)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code


def test_face_settings_reach_the_worker_and_the_cache_key(start_server: StartServer, folder: Path, gfpgan_file: Path, photos: Photos) -> None:
    _install_gfpgan(gfpgan_file, folder)
    server = start_server(model_path=folder / "FSRCNN_x3.pb", models_dir=folder, result_cache="shared")
    client = server.client()
    # A crop of the coffee cup: no face, so the worker runs the detector and never reads the GFPGAN file.
    faced = client.wait(client.upload(photos.small_jpg, fields={"faces": "on", "face_fidelity": "0.7"}).json()["id"])
    assert faced["status"] == "done", faced
    assert faced["faces"] == {"mode": "on", "fidelity": 0.7, "restored": 0} and not faced["cached"]
    assert "face_detect" in faced["timings"]
    plain = client.wait(client.upload(photos.small_jpg).json()["id"])
    assert plain["status"] == "done" and not plain["cached"], plain  # other settings: another key
    assert plain["faces"] == {"mode": "off", "fidelity": 0.5, "restored": None}
    again = client.wait(client.upload(photos.small_jpg, fields={"faces": "on", "face_fidelity": "0.7"}).json()["id"])
    assert again["cached"] and again["faces"] == {"mode": "on", "fidelity": 0.7, "restored": 0}, again


@pytest.fixture(scope="module")
def face_png(shared_photos: Path) -> bytes:
    """The astronaut's head and shoulders, 320x320: the Haar detector finds one face."""
    astronaut = cv2.imread(str(shared_photos / "astronaut.png"), cv2.IMREAD_COLOR)
    return cv2.imencode(".png", astronaut[0:320, 60:380])[1].tobytes()


def _pixels(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)


@pytest.mark.slow
def test_each_fidelity_is_its_own_result_as_the_worker_ran_it(start_server: StartServer, folder: Path,
                                                               gfpgan_file: Path, face_png: bytes) -> None:
    """A photo with a face at fidelities 0.2 and 0.9: two runs, not cache hits of each other, and each result moves
    the face away from the plain upscale by its own fidelity (the paste is plain + fidelity x (restored - plain))."""
    _install_gfpgan(gfpgan_file, folder)
    server = start_server(model_path=folder / "FSRCNN_x3.pb", models_dir=folder, result_cache="shared")
    client = server.client()
    plain = client.wait(client.upload(face_png, filename="face.png").json()["id"], timeout=120)
    assert plain["status"] == "done", plain
    plain_pixels = _pixels(client.get(plain["links"]["result"]).body)
    moved = {}
    for fidelity in (0.2, 0.9):
        reply = client.upload(face_png, filename="face.png", fields={"faces": "on", "face_fidelity": str(fidelity)})
        job = client.wait(reply.json()["id"], timeout=600)
        assert job["status"] == "done" and not job["cached"], job
        assert job["faces"] == {"mode": "on", "fidelity": fidelity, "restored": 1}, job
        moved[fidelity] = float(np.abs(_pixels(client.get(job["links"]["result"]).body) - plain_pixels).mean())
    assert moved[0.2] > 0.5, moved  # the random-weight GFPGAN paints over the face
    assert 3.5 < moved[0.9] / moved[0.2] < 5.5, moved  # 0.9 / 0.2 = 4.5


def test_face_fidelity_is_taken_in_hundredths(app: Flask, folder: Path, gfpgan_file: Path, photos: Photos) -> None:
    """The fidelity a job records, shows and is cached under is the one value on the 0.01 grid."""
    _install_gfpgan(gfpgan_file, folder)
    store = app.extensions["sr_web"].store
    jobs = {}
    for fidelity in ("0.3001", "0.3004", "0.31"):
        reply = _upload(app, photos.small_jpg, faces="on", face_fidelity=fidelity)
        assert reply.status_code == 202, reply.get_json()
        jobs[fidelity] = store.get(reply.get_json()["id"])
        assert reply.get_json()["faces"]["fidelity"] == jobs[fidelity].face_fidelity
    assert jobs["0.3001"].face_fidelity == jobs["0.3004"].face_fidelity == 0.3 and jobs["0.31"].face_fidelity == 0.31
    assert jobs["0.3001"].cache_key == jobs["0.3004"].cache_key != jobs["0.31"].cache_key


def test_the_worker_command_carries_the_face_settings_only_when_on(tmp_path: Path) -> None:
    from infer.contract import WorkerCommand

    plain = WorkerCommand(tmp_path / "in.png", tmp_path / "out.png", tmp_path / "m.pb", 100).argv()
    assert not any(arg.startswith("--face") for arg in plain)
    on = WorkerCommand(tmp_path / "in.png", tmp_path / "out.png", tmp_path / "m.pb", 100, faces="on",
                       face_fidelity=0.7, face_model=tmp_path / GFPGAN_FILE).argv()
    assert on[len(plain):] == ["--faces", "on", "--face-fidelity", "0.7", "--face-model", str(tmp_path / GFPGAN_FILE)]


def test_faces_follow_the_allowed_licences(tmp_path: Path, folder: Path, gfpgan_file: Path) -> None:
    """The test's GFPGAN file is not the catalog's (random weights): its licence is unknown, so a service that
    allows only named licences does not restore faces with it, and /healthz says why."""
    _install_gfpgan(gfpgan_file, folder)
    for allowed, offered in (("Apache-2.0", False), ("Apache-2.0,unknown", True)):
        app = create_app({"data_dir": tmp_path / allowed, "auth_token": None, "model_path": folder / "FSRCNN_x3.pb",
                          "models_dir": folder, "allowed_licences": allowed})
        try:
            client = app.test_client()
            assert client.get("/api/options").get_json()["faces"]["available"] is offered
            notes = " ".join(client.get("/healthz").get_json()["notes"])
            refusal = f"{GFPGAN_FILE} has no known licence, which SR_ALLOWED_LICENCES does not list, so faces are not restored"
            assert (refusal in notes) is not offered
        finally:
            shutdown(app)
