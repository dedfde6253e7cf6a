"""The face stage through the real worker process: a GFPGAN checkpoint with spandrel's architecture and random
weights, the Haar detector from the OpenCV wheel, FSRCNN x3 from the shared models."""

from __future__ import annotations

import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from infer.errors import EXIT_MODEL, EXIT_USAGE
from infer.faces.options import GFPGAN_FILE, YUNET_FILE
from tests.helpers import install_face_model, read, run_worker

# GFPGAN on one 512x512 face takes 3.5 s on 2 cores in fp32 when the machine is quiet and up to 30 s when
# it is busy, and the whole worker peaks at 1.83 GB (its own peak, infer/resident.py); the time bound leaves
# room for a loaded machine, the memory bound for another CPU's kernels.
FACE_SECONDS = 240.0
PEAK_RSS_MB = 2600.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, shared_models: Path, gfpgan_file: Path) -> Path:
    """A models folder with FSRCNN x3 and the session's random-weight GFPGANv1.4.pth."""
    folder = tmp_path_factory.mktemp("face_models")
    shutil.copy(shared_models / "FSRCNN_x3.pb", folder)
    install_face_model(gfpgan_file, folder)
    return folder


def _worker(models: Path, photo: Path, out: Path, *extra: str, timeout: float = 600):
    return run_worker("--input", photo, "--output", out, "--model", models / "FSRCNN_x3.pb", "--device", "cpu",
                      "--json", *extra, env={"SR_MODELS_DIR": str(models)}, timeout=timeout)


def _event(events: list[dict], name: str) -> dict:
    return next(e for e in events if e["event"] == name)


@pytest.mark.slow
def test_gfpgan_restores_the_astronaut_through_the_whole_worker(models: Path, shared_photos: Path, tmp_path: Path) -> None:
    photo = shared_photos / "astronaut.png"
    started = time.monotonic()
    code, events, stderr = _worker(models, photo, tmp_path / "faces.png", "--faces", "on", "--face-fidelity", "1")
    wall = time.monotonic() - started
    assert code == 0, stderr
    start, done = _event(events, "start"), _event(events, "done")
    assert start["faces"] == {"detector": "haar", "found": 1}
    assert (done["width"], done["height"]) == (1536, 1536)
    # On the CPU faces are restored one at a time (the memory peak of one face, docs/benchmarks.md).
    assert done["faces"] == {"detector": "haar", "found": 1, "restored": 1, "fidelity": 1.0, "restorer": GFPGAN_FILE,
                             "device": "cpu", "precision": "fp32", "batch": 1}
    seconds = done["seconds"]
    assert {"face_detect", "face_load", "faces"} <= set(seconds) and seconds["faces"] > 0
    assert wall < FACE_SECONDS and done["peak_rss_mb"] < PEAK_RSS_MB, (wall, done["peak_rss_mb"])

    code, events, stderr = _worker(models, photo, tmp_path / "plain.png")
    assert code == 0, stderr
    assert "faces" not in _event(events, "done")
    faced, plain = read(tmp_path / "faces.png"), read(tmp_path / "plain.png")
    changed = np.argwhere(np.any(faced != plain, axis=2))
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    # Random weights paint a blob, but only over the face (Haar's box is 93 pixels at 177, 67, x3).
    assert 100 * 3 < (x0 + x1) / 2 < 350 * 3 and 50 * 3 < (y0 + y1) / 2 < 200 * 3, (x0, y0, x1, y1)
    assert x1 - x0 < 700 and y1 - y0 < 700
    assert np.array_equal(faced[1000:], plain[1000:])


def test_a_photo_without_faces_is_byte_identical_and_loads_no_gfpgan(models: Path, shared_photos: Path, tmp_path: Path) -> None:
    photo = shared_photos / "coffee.png"
    code, events, stderr = _worker(models, photo, tmp_path / "faces.png", "--faces", "on")
    assert code == 0, stderr
    done = _event(events, "done")
    assert done["faces"] == {"detector": "haar", "found": 0, "restored": 0, "fidelity": 0.5}
    assert "face_detect" in done["seconds"] and "face_load" not in done["seconds"]
    assert _worker(models, photo, tmp_path / "plain.png").exit_code == 0
    assert (tmp_path / "faces.png").read_bytes() == (tmp_path / "plain.png").read_bytes()


def test_fidelity_zero_is_the_plain_upscale(models: Path, shared_photos: Path, tmp_path: Path) -> None:
    photo = shared_photos / "astronaut.png"
    code, events, stderr = _worker(models, photo, tmp_path / "faces.png", "--faces", "on", "--face-fidelity", "0")
    assert code == 0, stderr
    done = _event(events, "done")
    assert done["faces"]["found"] == 1 and done["faces"]["restored"] == 0 and "face_load" not in done["seconds"]
    assert _worker(models, photo, tmp_path / "plain.png").exit_code == 0
    assert (tmp_path / "faces.png").read_bytes() == (tmp_path / "plain.png").read_bytes()


def _error(events: list[dict]) -> dict:
    return _event(events, "error")


def test_a_missing_gfpgan_file_is_exit_5_before_any_work(shared_models: Path, shared_photos: Path, tmp_path: Path) -> None:
    shutil.copy(shared_models / "FSRCNN_x3.pb", tmp_path)
    code, events, _ = _worker(tmp_path, shared_photos / "astronaut.png", tmp_path / "out.png", "--faces", "on")
    assert code == EXIT_MODEL
    error = _error(events)
    assert error["code"] == "model_error" and "sr-models fetch GFPGANv1.4" in error["message"]
    assert not any(e["event"] == "start" for e in events) and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint at all" * 100, "code"])
def test_a_broken_gfpgan_file_is_exit_5_and_leaves_nothing(shared_models: Path, shared_photos: Path, tmp_path: Path,
                                                            content) -> None:
    shutil.copy(shared_models / "FSRCNN_x3.pb", tmp_path)
    if content == "code":
        # A pickle that would call a function when loaded: spandrel's restricted unpickler refuses it.
        content = pickle.dumps({"params_ema": print})
    (tmp_path / GFPGAN_FILE).write_bytes(content)
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir()
    code, events, _ = _worker(tmp_path, shared_photos / "astronaut.png", out, "--faces", "on")
    assert code == EXIT_MODEL, events
    assert "not a usable GFPGAN checkpoint" in _error(events)["message"] and "sr-models fetch GFPGANv1.4" in _error(events)["message"]
    assert list(out.parent.iterdir()) == []


def test_a_broken_yunet_file_is_exit_5(models: Path, shared_photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("FSRCNN_x3.pb", GFPGAN_FILE):
        (folder / name).symlink_to(models / name)
    (folder / YUNET_FILE).write_bytes(b"\0" * 1000)
    code, events, _ = _worker(folder, shared_photos / "coffee.png", tmp_path / "out.png", "--faces", "on")
    assert code == EXIT_MODEL
    assert YUNET_FILE in _error(events)["message"] and "sr-models fetch yunet" in _error(events)["message"]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "half"])
def test_a_fidelity_outside_0_to_1_is_a_usage_error(models: Path, shared_photos: Path, tmp_path: Path, value: str) -> None:
    code, events, _ = _worker(models, shared_photos / "coffee.png", tmp_path / "out.png", "--faces", "on",
                              "--face-fidelity", value)
    assert code == EXIT_USAGE and "--face-fidelity" in _error(events)["message"]


def test_a_folder_of_photos_runs_the_face_stage_for_each(models: Path, shared_photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(shared_photos / name, folder)
    code, events, stderr = run_worker("--input", folder, "--output", tmp_path / "out", "--model", models / "FSRCNN_x3.pb",
                                      "--device", "cpu", "--json", "--faces", "on", "--face-fidelity", "0",
                                      env={"SR_MODELS_DIR": str(models)}, timeout=600)
    assert code == 0, stderr
    found = sorted(e["faces"]["found"] for e in events if e["event"] == "done")
    assert found == [0, 1] and _event(events, "batch_done")["done"] == 2


# Four faces one at a time on the CPU: the worker's peak stays near one face's, far below what a batch of 4
# takes (3.8 GB, docs/benchmarks.md "Faces"): 1.84-1.95 GB. (Whole test runs once read 3.04-3.06 GB here: the
# peak was getrusage's, which carries the test runner's own size over into the worker; infer/resident.py.)
# Each face costs 3.5 s on a quiet 2-core machine and up to 30 s on a busy one.
CLASS_SECONDS = 600.0
CLASS_PEAK_RSS_MB = 2600.0


@pytest.mark.slow
def test_a_class_photo_restores_its_faces_one_at_a_time_on_the_cpu(models: Path, shared_photos: Path, tmp_path: Path) -> None:
    import cv2

    from tests.fixtures.faces import class_photo

    photo = tmp_path / "class.png"
    cv2.imwrite(str(photo), class_photo(shared_photos, columns=2, rows=2))
    started = time.monotonic()
    code, events, stderr = _worker(models, photo, tmp_path / "out.png", "--faces", "on", "--face-fidelity", "1")
    wall = time.monotonic() - started
    assert code == 0, stderr
    faces = _event(events, "done")["faces"]
    assert faces["found"] == faces["restored"] == 4 and faces["batch"] == 1, faces
    assert wall < CLASS_SECONDS and _event(events, "done")["peak_rss_mb"] < CLASS_PEAK_RSS_MB, (wall, _event(events, "done"))
