"""`--repair-model`: filling a repair mask with an inpainting network (LaMa through spandrel), with random weights
of LaMa's architecture (no plain-weights LaMa is published): only the masked pixels change, at the photo's
resolution, and the worker says which network filled them; a checkpoint that is not an inpainting network is
refused before any photo is read."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import _require_module
from tests.helpers import read, run_worker


@pytest.fixture(scope="module")
def lama_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights of spandrel's LaMa (big-lama's layout, 51 M parameters, 204 MB) as safetensors."""
    _require_module("spandrel", "pip install -e '.[worker,test]'")
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in LaMa(in_nc=4, out_nc=3).state_dict().items()}  # photo + mask in
    path = tmp_path_factory.mktemp("lama") / "lama_random.safetensors"
    save_file(state, str(path))
    return path


def _mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[20:24, 8:56] = True
    mask[5:9, 40:44] = True
    return mask


def test_the_network_fills_exactly_the_masked_pixels(lama_file: Path, shared_photos: Path):
    from infer.repair_network import NetworkFill

    photo = cv2.imread(str(shared_photos / "chelsea.png"))
    mask = _mask(*photo.shape[:2])
    network = NetworkFill(lama_file, "cpu")
    repaired = network.fill(photo, mask)
    assert network.name == "LaMa"
    assert repaired.shape == photo.shape
    assert np.array_equal(repaired[~mask], photo[~mask])
    grey = network.fill(photo, mask, grayscale=True)
    assert np.array_equal(grey[mask][:, 0], grey[mask][:, 1]) and np.array_equal(grey[~mask], photo[~mask])


def test_the_worker_repairs_with_the_network(lama_file: Path, fsrcnn_model: Path, shared_photos: Path,
                                             tmp_path: Path):
    src = tmp_path / "crop.png"
    Image.open(shared_photos / "chelsea.png").convert("RGB").crop((100, 60, 164, 108)).save(src)
    mask_file = tmp_path / "mask.png"
    Image.fromarray(_mask(48, 64).astype(np.uint8) * 255).save(mask_file)
    plain = run_worker("--input", src, "--output", tmp_path / "plain.png", "--model", fsrcnn_model)
    run = run_worker("--input", src, "--output", tmp_path / "lama.png", "--model", fsrcnn_model,
                     "--repair-mask", mask_file, "--repair-model", lama_file, "--device", "cpu")
    assert plain.exit_code == run.exit_code == 0, run.stderr
    start, done = run.events[0], run.events[-1]
    assert start["repair"]["method"] == "LaMa" and start["repair"]["filled"] == int(_mask(48, 64).sum())
    assert done["seconds"]["repair_load"] > 0 and done["seconds"]["repair"] > 0
    assert read(tmp_path / "lama.png").shape == read(tmp_path / "plain.png").shape


def test_a_model_that_is_not_an_inpainting_network_is_refused(realesrgan: dict[str, Path], fsrcnn_model: Path,
                                                              shared_photos: Path, tmp_path: Path):
    out = tmp_path / "out.png"
    code, events, _ = run_worker("--input", shared_photos / "chelsea.png", "--output", out, "--model", fsrcnn_model,
                                 "--repair", "auto", "--repair-model", realesrgan["compact"])
    assert code == 5 and events[-1]["code"] == "model_error" and "not served" in events[-1]["message"]
    assert not out.exists()
    code, events, _ = run_worker("--input", shared_photos / "chelsea.png", "--output", out, "--model", fsrcnn_model,
                                 "--repair", "auto", "--repair-model", tmp_path / "missing.safetensors")
    assert code == 5 and "not found" in events[-1]["message"]
