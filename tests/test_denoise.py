"""--denoise through the real worker: it restores noisy photos, `off` changes nothing, bad values are refused."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import psnr, read, run_worker


def _noisy_copies(clean: np.ndarray, folder: Path, sigmas: tuple[int, ...]) -> None:
    rng = np.random.default_rng(12)
    for sigma in sigmas:
        noisy = np.clip(clean + rng.normal(0.0, sigma, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"noisy{sigma}.png")


@pytest.fixture(scope="module")
def clean_and_noisy(shared_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 128x128 crop of a real photo and the same crop with Gaussian noise of sigma 10 and 25 (fixed seed);
    returns the clean one and the sigma-25 one."""
    folder = tmp_path_factory.mktemp("noisy")
    clean = np.asarray(Image.open(shared_photos / "coffee.png").convert("RGB").crop((200, 100, 328, 228)))
    Image.fromarray(clean).save(folder / "clean.png")
    _noisy_copies(clean, folder, (10, 25))
    return folder / "clean.png", folder / "noisy25.png"


def _upscale(model: Path, src: Path, out: Path, *flags: str) -> list[dict]:
    code, events, err = run_worker("--input", src, "--output", out, "--model", model, *flags)
    assert code == 0, err
    return events


@pytest.mark.parametrize("level, sigma, at_least_db", [("light", 10, 1.0), ("strong", 25, 3.0)])
def test_denoise_brings_a_noisy_photo_closer_to_the_clean_one(shared_models: Path, clean_and_noisy, tmp_path: Path,
                                                              level: str, sigma: int, at_least_db: float):
    """Upscaled with denoise, the noisy photo is closer to the upscaled clean one than upscaled without."""
    clean, _ = clean_and_noisy
    noisy = clean.with_name(f"noisy{sigma}.png")
    model = shared_models / "FSRCNN_x2.pb"
    _upscale(model, clean, tmp_path / "clean_x2.png")
    _upscale(model, noisy, tmp_path / "noisy_x2.png")
    reference = read(tmp_path / "clean_x2.png")
    plain = psnr(read(tmp_path / "noisy_x2.png"), reference)
    events = _upscale(model, noisy, tmp_path / f"{level}_x2.png", "--denoise", level)
    start, done = events[0], events[-1]
    assert start["event"] == "start" and start["denoise"] == level
    assert done["event"] == "done" and done["denoise"] == level and done["seconds"]["denoise"] > 0
    gained = psnr(read(tmp_path / f"{level}_x2.png"), reference) - plain
    assert gained > at_least_db, f"{level} at sigma {sigma}: {gained:+.2f} dB"


def test_denoise_off_leaves_the_pixels_as_they_were(shared_models: Path, clean_and_noisy, tmp_path: Path):
    _, noisy = clean_and_noisy
    model = shared_models / "FSRCNN_x2.pb"
    default = _upscale(model, noisy, tmp_path / "default.png")
    off = _upscale(model, noisy, tmp_path / "off.png", "--denoise", "off")
    assert default[-1]["denoise"] == off[-1]["denoise"] == "off"
    assert "denoise" not in off[-1]["seconds"]
    assert np.array_equal(read(tmp_path / "default.png"), read(tmp_path / "off.png"))
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(model))
    sr.setModel("fsrcnn", 2)
    reference = sr.upsample(cv2.imread(str(noisy)))
    assert np.abs(read(tmp_path / "off.png").astype(int) - reference).max() <= 1


def test_denoise_leaves_alpha_untouched(shared_models: Path, clean_and_noisy, tmp_path: Path):
    _, noisy = clean_and_noisy
    rgba = Image.open(noisy).convert("RGBA")
    alpha = np.zeros((128, 128), np.uint8)
    alpha[16:112, 16:112] = 255
    alpha[40:60, :] = 128
    rgba.putalpha(Image.fromarray(alpha))
    src = tmp_path / "noisy_rgba.png"
    rgba.save(src)
    model = shared_models / "FSRCNN_x2.pb"
    _upscale(model, src, tmp_path / "off.png")
    _upscale(model, src, tmp_path / "strong.png", "--denoise", "strong")
    off, strong = read(tmp_path / "off.png"), read(tmp_path / "strong.png")
    assert off.shape == strong.shape == (256, 256, 4)
    assert np.array_equal(off[:, :, 3], strong[:, :, 3])
    assert not np.array_equal(off[:, :, :3], strong[:, :, :3])


def test_unknown_denoise_level_is_exit_2_listing_the_levels(shared_models: Path, clean_and_noisy, tmp_path: Path):
    _, noisy = clean_and_noisy
    out = tmp_path / "out.png"
    code, events, _ = run_worker("--input", noisy, "--output", out, "--model", shared_models / "FSRCNN_x2.pb",
                                 "--denoise", "medium")
    assert code == 2
    assert events[-1]["code"] == "usage"
    assert all(level in events[-1]["message"] for level in ("off", "light", "strong"))
    assert not out.exists()
