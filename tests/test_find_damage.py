"""`--find-damage` through the real worker: the mask's exact size and format, what it finds on seeded damage and
on a clean photo, and its refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench.damage import damage
from infer.contract import WorkerCommand
from tests.helpers import run_worker


def _find(photo: Path, output: Path, *extra: str):
    return run_worker("--input", photo, "--output", output, "--find-damage", "--json", *extra)


def test_the_mask_has_the_photo_size_as_shown_and_marks_the_seeded_damage(shared_photos: Path, tmp_path: Path):
    clean = cv2.imread(str(shared_photos / "chelsea.png"))[:200, :300]
    hurt = damage(clean, seed=7, torn=False)
    photo = tmp_path / "scratched.jpg"
    # Stored sideways with an EXIF orientation: the mask is of the photo as it is shown (300 wide, 200 high).
    Image.fromarray(cv2.cvtColor(hurt.bgr, cv2.COLOR_BGR2RGB)).transpose(Image.Transpose.ROTATE_90).save(
        photo, quality=97, exif=_orientation(6))
    code, events, stderr = _find(photo, tmp_path / "mask.png")
    assert code == 0, stderr
    assert [e["event"] for e in events] == ["start", "done"]
    assert events[-1]["width"] == 300 and events[-1]["height"] == 200 and events[-1]["found"] > 0
    with Image.open(tmp_path / "mask.png") as mask:
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (300, 200)
        found = np.asarray(mask)
    assert set(np.unique(found)) <= {0, 255}
    found = found > 0
    near = cv2.dilate(hurt.mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (found & near).sum() > 0.3 * found.sum() and (found & hurt.mask).sum() > 0.2 * hurt.mask.sum()


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_a_clean_photo_gives_an_almost_empty_mask(shared_photos: Path, tmp_path: Path):
    code, events, stderr = _find(shared_photos / "chelsea.png", tmp_path / "mask.png")
    assert code == 0, stderr
    with Image.open(shared_photos / "chelsea.png") as photo, Image.open(tmp_path / "mask.png") as mask:
        assert mask.size == photo.size
        assert (np.asarray(mask) > 0).mean() < 0.01
    assert events[-1]["found"] == int((np.asarray(Image.open(tmp_path / "mask.png")) > 0).sum())


def test_refusals(photo: Path, tmp_path: Path):
    code, events, _ = _find(photo, tmp_path / "mask.jpg")
    assert code == 2 and "PNG mask" in events[-1]["message"]
    code, events, _ = _find(photo, tmp_path / "mask.png", "--max-pixels", "100")
    assert code == 4 and events[-1]["code"] == "too_many_pixels"
    assert not (tmp_path / "mask.png").exists()
    code, events, _ = run_worker("--input", photo, photo, "--output", tmp_path / "out", "--find-damage", "--json")
    assert code == 2 and "one photo" in events[-1]["message"]


def test_the_contract_adds_the_flag_only_when_asked(tmp_path: Path):
    plain = WorkerCommand(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "m.pb", 100)
    assert "--find-damage" not in plain.argv()
    assert WorkerCommand(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "m.pb", 100,
                         find_damage=True).argv()[-1] == "--find-damage"
