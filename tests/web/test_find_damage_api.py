"""`POST /api/damage` through the app and the real worker: the mask of a scratched photo, its limits, the worker's
refusals in the person's words, and that nothing of the photo is kept or shown to anyone else."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from bench.damage import damage
from web import create_app, shutdown
from tests.web.conftest import Photos, wait_until


@pytest.fixture
def app(tmp_path: Path, fsrcnn_model: Path) -> Iterator[Flask]:
    app = create_app({"data_dir": tmp_path / "data", "auth_token": None, "model_path": fsrcnn_model,
                      "max_upload_mb": 0.2, "max_pixels": 200_000})
    yield app
    shutdown(app)


def _find(client: FlaskClient, *photos: tuple[str, bytes]):
    return client.post("/api/damage", data={"image": [(io.BytesIO(data), name) for name, data in photos]},
                       content_type="multipart/form-data")


def _scratched(shared_photos: Path) -> tuple[bytes, np.ndarray]:
    clean = cv2.imread(str(shared_photos / "chelsea.png"))[:160, :240]
    hurt = damage(clean, seed=11, torn=False)
    ok, png = cv2.imencode(".png", hurt.bgr)
    assert ok
    return png.tobytes(), hurt.mask


def _kept(app: Flask) -> list[str]:
    config = app.extensions["sr_web"].config
    return sorted(p.name for folder in (config.uploads_dir, config.results_dir, config.logs_dir)
                  for p in folder.iterdir() if p.name != ".gitkeep")


def test_a_scratched_photo_gives_its_mask_and_nothing_is_kept(app: Flask, shared_photos: Path):
    photo, truth = _scratched(shared_photos)
    client = app.test_client()
    client.get("/")  # the page gives this browser its owner cookie
    reply = _find(client, ("old.png", photo))
    assert reply.status_code == 200, reply.get_json()
    assert reply.mimetype == "image/png" and "no-store" in reply.headers.get("Cache-Control", "")
    with Image.open(io.BytesIO(reply.data)) as mask:
        assert mask.format == "PNG" and mask.size == (240, 160)
        found = np.asarray(mask.convert("L")) > 0
    assert found.any() and (found & truth).sum() > 0.2 * truth.sum()
    assert _kept(app) == []
    # No job came of it: neither this browser nor another has anything listed.
    assert client.get("/api/jobs").get_json() == {"jobs": []}
    assert app.test_client().get("/api/jobs").get_json() == {"jobs": []}


def test_limits_and_bad_input_get_clear_errors(app: Flask, photos: Photos, shared_photos: Path):
    client = app.test_client()
    big = np.random.default_rng(1).integers(0, 256, (300, 300, 3), np.uint8)
    wide = Image.new("RGB", (600, 400))
    buf = io.BytesIO()
    wide.save(buf, format="PNG")
    refused = {
        "none": client.post("/api/damage", data={}, content_type="multipart/form-data"),
        "two": _find(client, ("a.png", photos.small_png), ("b.png", photos.small_png)),
        "empty": _find(client, ("a.png", b"")),
        "text": _find(client, ("notes.png", b"a shopping list, not a photo\n" * 10)),
        "bytes": _find(client, ("big.png", cv2.imencode(".png", big)[1].tobytes())),
        "pixels": _find(client, ("wide.png", buf.getvalue())),
        "truncated": _find(client, ("cut.png", photos.small_png[: len(photos.small_png) * 2 // 3])),
    }
    got = {name: (r.status_code, r.get_json()["error"]["code"]) for name, r in refused.items()}
    assert got["none"] == (400, "no_file") and got["two"] == (400, "too_many_files")
    assert got["empty"] == (400, "empty_file") and got["bytes"] == (413, "too_large")
    assert got["pixels"] == (422, "too_many_pixels") and got["text"][0] in (400, 415)
    # Refused by the worker: its reason, without the server's paths.
    assert got["truncated"] == (422, "bad_input")
    message = refused["truncated"].get_json()["error"]["message"]
    assert message.startswith("scratches and dust could not be looked for") and "IDAT" in message
    assert str(app.extensions["sr_web"].config.data_dir) not in message
    assert _kept(app) == []


def test_one_search_a_browser_and_a_few_on_the_service(tmp_path: Path, fsrcnn_model: Path, photos: Photos,
                                                       shared_photos: Path):
    app = create_app({"data_dir": tmp_path / "busy", "auth_token": None, "model_path": fsrcnn_model,
                      "concurrency": 1})
    try:
        with Image.open(shared_photos / "coffee.png") as coffee:
            buf = io.BytesIO()
            coffee.convert("RGB").resize((1200, 800)).save(buf, format="PNG", compress_level=1)
        first, second = app.test_client(), app.test_client()
        first.get("/")
        second.get("/")
        answers: list = []
        slow = threading.Thread(target=lambda: answers.append(_find(first, ("large.png", buf.getvalue()))))
        slow.start()
        uploads = app.extensions["sr_web"].config.uploads_dir
        wait_until(lambda: any(p.suffix == ".png" for p in uploads.iterdir()), timeout=60, what="the search to run")
        again = _find(first, ("small.png", photos.small_png))
        other = _find(second, ("small.png", photos.small_png))
        slow.join(120)
        assert (again.status_code, again.get_json()["error"]["code"]) == (429, "find_damage_busy")
        assert (other.status_code, other.get_json()["error"]["code"]) == (503, "find_damage_busy")
        assert other.headers["Retry-After"] and "try again" in other.get_json()["error"]["message"]
        assert answers[0].status_code == 200
        assert _find(second, ("small.png", photos.small_png)).status_code == 200
        assert _kept(app) == []
    finally:
        shutdown(app)
