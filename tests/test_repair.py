"""Repair and colour restoration: the functions on real photos, and --repair-mask, --repair, --colour through the
real worker (flags, events, refusals, what the output keeps)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from infer.colour import restore_bgr
from infer.contract import Colour, Repair, WorkerCommand
from infer.repair import fill, auto_mask
from tests.helpers import psnr, read, run_worker


def _chelsea(shared_photos: Path) -> np.ndarray:
    return cv2.imread(str(shared_photos / "chelsea.png"))


def _stroke(height: int, width: int) -> np.ndarray:
    """A painted stroke: a 3 px curve and a dot."""
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [np.array([[5, 8], [width // 2, height // 2], [width - 6, 10]], np.int32)], False, 255, 3)
    cv2.circle(mask, (width // 3, height - 8), 3, 255, -1)
    return mask


def test_fill_changes_exactly_the_masked_pixels_at_the_photo_resolution(shared_photos: Path):
    photo = _chelsea(shared_photos)
    mask = _stroke(*photo.shape[:2]) > 0
    scratched = photo.copy()
    scratched[mask] = 255
    repaired = fill(scratched, mask)
    assert repaired.shape == photo.shape
    assert np.array_equal(repaired[~mask], scratched[~mask])
    assert psnr(repaired[mask], photo[mask]) > psnr(scratched[mask], photo[mask]) + 10


def test_automatic_repair_of_a_clean_photo_changes_little(shared_photos: Path):
    photo = _chelsea(shared_photos)
    mask, found = auto_mask(photo)
    assert mask.mean() < 0.01, f"{found} pixels found in a clean photo"
    assert psnr(fill(photo, mask), photo) > 35


def _drawn_damage(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo with grey scratches (1-3 px, white and black, one bent) and dust drawn on it, and where."""
    hurt, where = photo.copy(), np.zeros(photo.shape[:2], np.uint8)
    h, w = where.shape
    strokes = [([(40, 60), (w - 60, h // 2)], 1, 250), ([(w // 3, h - 30), (w - 40, 80)], 2, 20),
               ([(30, h - 120), (w // 2, h - 200), (w - 30, h - 150)], 3, 235)]
    for points, width, shade in strokes:
        drawn = np.zeros_like(where)
        cv2.polylines(drawn, [np.array(points, np.int32)], False, 255, width)
        hurt[drawn > 0], where = shade, where | drawn
    rng = np.random.default_rng(7)
    for x, y, r in zip(rng.integers(20, w - 20, 12), rng.integers(20, h - 20, 12), rng.integers(1, 3, 12)):
        drawn = np.zeros_like(where)
        cv2.circle(drawn, (int(x), int(y)), int(r), 255, -1)
        hurt[drawn > 0], where = (245 if x % 2 else 15), where | drawn
    changed = np.abs(hurt.astype(int) - photo).max(axis=2) > 12
    return hurt, (where > 0) & changed


def test_automatic_detection_finds_grey_scratches_and_dust_but_not_hair(shared_photos: Path):
    photo = cv2.imread(str(shared_photos / "astronaut.png"))
    hurt, where = _drawn_damage(photo)
    found, _ = auto_mask(hurt)
    near = np.ones((3, 3), np.uint8)  # 1 px either way, as bench/bench_repair.py measures
    recall = (where & (cv2.dilate(found.astype(np.uint8), near) > 0)).sum() / where.sum()
    precision = (found & (cv2.dilate(where.astype(np.uint8), near) > 0)).sum() / found.sum()
    assert recall >= 0.8 and precision >= 0.7, (recall, precision)
    assert psnr(fill(hurt, found), photo) > psnr(hurt, photo) + 6


def test_automatic_detection_finds_grey_damage_over_strong_colour_and_dust_beside_a_scratch():
    """A dark scratch laid at 90% over a saturated red keeps a tenth of the red (infer/scratches.py, step 2); a
    speck 2 px beside it is dust all the same (step 8)."""
    photo = np.empty((200, 300, 3), np.uint8)
    photo[:] = (60, 70, 200)
    photo[..., 1] = np.linspace(50, 110, 300, dtype=np.uint8)
    line, speck = np.zeros((2, 200, 300), np.uint8)
    cv2.line(line, (20, 100), (280, 120), 255, 2)
    cv2.circle(speck, (150, 116), 2, 255, -1)
    hurt = photo.copy()
    for drawn in (line > 0, speck > 0):
        hurt[drawn] = (0.1 * hurt[drawn] + 0.9 * 20).astype(np.uint8)
    found, _ = auto_mask(hurt)
    assert found[line > 0].mean() > 0.9 and found[speck > 0].mean() > 0.9
    assert not auto_mask(photo)[0].any()


def test_automatic_repair_of_clean_photos_with_fine_detail_changes_little(shared_photos: Path):
    """Hair (astronaut), fur (chelsea) and beans (coffee) are thin and contrasted, but they are not damage; the
    black-and-white camera's tripod pole is partly taken for a scratch (see infer/scratches.py)."""
    for name, bound in (("astronaut", 35), ("chelsea", 50), ("coffee", 40), ("camera", 35)):
        photo = cv2.imread(str(shared_photos / f"{name}.png"))
        grey = name == "camera"
        mask, found = auto_mask(photo)
        repaired = fill(photo, mask, grayscale=grey)
        assert mask.mean() < 0.01, f"{name}: {found} pixels found in a clean photo"
        assert psnr(repaired, photo) > bound, name
        if grey:
            assert np.array_equal(repaired[..., 0], repaired[..., 1])
            assert np.array_equal(repaired[..., 1], repaired[..., 2])


def test_colour_restoration_removes_a_fade_and_its_cast(shared_photos: Path):
    photo = cv2.imread(str(shared_photos / "astronaut.png"))
    contrast, towards = np.array([0.55, 0.6, 0.7]), np.array([40.0, 110.0, 200.0])  # B, G, R: an orange fade
    faded = np.clip(photo * contrast + (1 - contrast) * towards, 0, 255).astype(np.uint8)
    restored = restore_bgr(faded)

    neutral = (photo.max(axis=2).astype(int) - photo.min(axis=2)) < 12  # grey, white and black in the photo

    def cast(bgr: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)[neutral].astype(float)
        return lab[:, 1:].mean(axis=0) - 128  # mean a*, b* of what should be neutral

    assert np.abs(cast(faded) - cast(photo)).max() > 10
    assert np.abs(cast(restored) - cast(photo)).max() < 2
    assert psnr(restored, photo) > psnr(faded, photo) + 10


def test_colour_restoration_leaves_a_good_photo_and_keeps_a_grey_one_grey(shared_photos: Path):
    for name in ("astronaut", "chelsea", "coffee"):
        photo = cv2.imread(str(shared_photos / f"{name}.png"))
        assert restore_bgr(photo) is photo, name
    grey = cv2.imread(str(shared_photos / "camera.png"))
    faded_grey = (grey * 0.6 + 70).astype(np.uint8)
    warm = faded_grey.copy()
    warm[..., 2] = np.clip(warm[..., 2].astype(int) + 2, 0, 255)  # a colour scan of a grey print, a hair warm
    for picture in (faded_grey, warm):
        restored = restore_bgr(picture)
        assert np.array_equal(restored[..., 0], restored[..., 1]) or np.abs(
            restored.astype(int)[..., 0] - restored[..., 2]).mean() <= 2.5
        assert restored[..., 1].std() > picture[..., 1].std() * 1.4  # levels: its contrast comes back


def test_a_channel_of_little_range_is_not_blown_up_into_noise(shared_photos: Path):
    """A faded photo with hardly any red in its variation (a green and blue scene): red's levels are stretched at
    most MAX_GAIN times, so its few grey levels of noise do not become a red speckle across the photo."""
    photo = cv2.imread(str(shared_photos / "astronaut.png"))
    photo[..., 2] = 100 + photo[..., 1] // 24  # red within 11 grey levels
    contrast, towards = np.array([0.6, 0.6, 0.8]), np.array([90.0, 130.0, 190.0])
    faded = np.clip(photo * contrast + (1 - contrast) * towards, 0, 255).astype(np.uint8)
    restored = restore_bgr(faded)
    assert restored is not faded  # its blacks are lifted: it is restored
    assert restored[..., 2].std() <= 3.05 * faded[..., 2].std()
    assert restored[..., 1].std() > 1.4 * faded[..., 1].std()  # the channels with range get theirs back


# --------------------------------------------------------------------------- through the worker


@pytest.fixture(scope="module")
def photo_with_metadata(shared_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x48 crop of chelsea with alpha, EXIF (a camera make) and an sRGB ICC profile."""
    crop = Image.open(shared_photos / "chelsea.png").convert("RGB").crop((150, 60, 214, 108))
    alpha = np.full((48, 64), 255, np.uint8)
    alpha[:, :10] = 0
    alpha[20:30, :] = 128
    rgba = crop.copy()
    rgba.putalpha(Image.fromarray(alpha))
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path_factory.mktemp("repair") / "old.png"
    rgba.save(path, exif=exif.tobytes(), icc_profile=icc)
    return path


def _mask_file(folder: Path, mask: np.ndarray, name: str = "mask.png") -> Path:
    path = folder / name
    Image.fromarray(mask).save(path)
    return path


def _upscale(model: Path, src: Path, out: Path | str, *flags: str | Path):
    return run_worker("--input", src, "--output", out, "--model", model, *flags)


def test_a_mask_repairs_its_pixels_and_the_events_say_so(fsrcnn_model: Path, photo_with_metadata: Path,
                                                         tmp_path: Path):
    mask = _stroke(48, 64)
    plain = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "plain.png")
    run = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "repaired.png", "--repair-mask",
                   _mask_file(tmp_path, mask))
    coloured = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "coloured.png", "--repair-mask",
                        tmp_path / "mask.png", "--colour", "restore")
    assert plain.exit_code == run.exit_code == coloured.exit_code == 0, run.stderr + coloured.stderr
    start, done = coloured.events[0], coloured.events[-1]
    assert start["repair"] == {"ran": "mask", "method": "navier-stokes", "marked": int((mask > 0).sum()),
                               "found": 0, "filled": int((mask > 0).sum())}
    assert start["colour"] == done["colour"] == "restore"
    assert done["seconds"]["repair"] > 0 and "colour" in done["seconds"]
    parts = sum(v for k, v in done["seconds"].items() if k != "total")
    assert parts == pytest.approx(done["seconds"]["total"], abs=0.05)
    assert "repair" not in plain.events[-1]["seconds"] and plain.events[0]["repair"] == {"ran": "off"}
    before, after = read(tmp_path / "plain.png"), read(tmp_path / "repaired.png")
    # The output differs only around the stroke: enlarged 3x, widened by the network's reach (FSRCNN: 8 input px).
    reach = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17)))
    near = cv2.resize(reach, (192, 144), interpolation=cv2.INTER_NEAREST) > 0
    assert near.mean() < 0.75
    assert not np.array_equal(before[near], after[near])
    assert np.array_equal(before[~near], after[~near])
    # alpha, EXIF and the ICC profile kept, with the colour restored too
    for name in ("repaired.png", "coloured.png"):
        assert np.array_equal(before[..., 3], read(tmp_path / name)[..., 3])
        with Image.open(tmp_path / name) as im, Image.open(photo_with_metadata) as src:
            assert im.mode == "RGBA" and im.getexif()[0x010F] == "Maker"
            assert im.info.get("icc_profile") == src.info.get("icc_profile")


def test_an_all_black_mask_changes_nothing(fsrcnn_model: Path, photo_with_metadata: Path, tmp_path: Path):
    plain = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "plain.png")
    run = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "black.png", "--repair-mask",
                   _mask_file(tmp_path, np.zeros((48, 64), np.uint8)))
    assert plain.exit_code == run.exit_code == 0, run.stderr
    assert run.events[0]["repair"]["filled"] == 0
    assert np.array_equal(read(tmp_path / "plain.png"), read(tmp_path / "black.png"))


def test_an_all_white_mask_is_refused(fsrcnn_model: Path, photo_with_metadata: Path, tmp_path: Path):
    out = tmp_path / "out.png"
    code, events, _ = _upscale(fsrcnn_model, photo_with_metadata, out, "--repair-mask",
                               _mask_file(tmp_path, np.full((48, 64), 255, np.uint8)))
    assert code == 3 and events[-1]["code"] == "bad_input"
    assert "nothing left to keep" in events[-1]["message"]
    assert not out.exists()


def test_a_mask_of_another_size_is_a_usage_error(fsrcnn_model: Path, photo_with_metadata: Path, tmp_path: Path):
    out = tmp_path / "out.png"
    code, events, _ = _upscale(fsrcnn_model, photo_with_metadata, out, "--repair-mask",
                               _mask_file(tmp_path, np.zeros((64, 48), np.uint8)))
    assert code == 2 and events[-1]["code"] == "usage"
    assert "48x64" in events[-1]["message"] and "64x48" in events[-1]["message"]
    assert not out.exists()


def test_a_mask_with_transparency_marks_by_its_alpha(fsrcnn_model: Path, photo_with_metadata: Path, tmp_path: Path):
    """A brush layer saved as PNG: transparent where nothing was painted, whatever its colour there."""
    stroke = _stroke(48, 64)
    layer = np.zeros((48, 64, 4), np.uint8)
    layer[..., :3] = 255  # white everywhere: its grey level would mark every pixel
    layer[..., 3] = stroke
    path = tmp_path / "layer.png"
    Image.fromarray(layer, "RGBA").save(path)
    run = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "out.png", "--repair-mask", path)
    assert run.exit_code == 0, run.stderr
    assert run.events[0]["repair"]["marked"] == int((stroke > 0).sum())
    # Saved with an alpha channel that is opaque everywhere, it marks by its grey level like a mask without one.
    opaque = np.zeros((48, 64, 4), np.uint8)
    opaque[..., :3] = stroke[..., None]
    opaque[..., 3] = 255
    Image.fromarray(opaque, "RGBA").save(path)
    run = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "out.png", "--repair-mask", path)
    assert run.exit_code == 0, run.stderr
    assert run.events[0]["repair"]["marked"] == int((stroke > 0).sum())


def test_a_painted_mask_and_the_detection_repair_together(fsrcnn_model: Path, shared_photos: Path, tmp_path: Path):
    """With both, what was painted and what was found are filled: their union."""
    hurt, _ = _drawn_damage(_chelsea(shared_photos))
    src = tmp_path / "hurt.png"
    cv2.imwrite(str(src), hurt)
    painted = np.zeros(hurt.shape[:2], np.uint8)
    cv2.circle(painted, (60, 60), 6, 255, -1)  # a stain the detection does not look for
    detected, found = auto_mask(hurt)
    assert found > 0 and not detected[painted > 0].all()
    both = _upscale(fsrcnn_model, src, tmp_path / "both.png", "--repair-mask", _mask_file(tmp_path, painted),
                    "--repair", "auto")
    auto = _upscale(fsrcnn_model, src, tmp_path / "auto.png", "--repair", "auto")
    assert both.exit_code == auto.exit_code == 0, both.stderr + auto.stderr
    assert both.events[0]["repair"] == {"ran": "mask+auto", "method": "navier-stokes",
                                        "marked": int((painted > 0).sum()), "found": found,
                                        "filled": int(((painted > 0) | detected).sum())}
    stain = cv2.resize(painted, (hurt.shape[1] * 3, hurt.shape[0] * 3), interpolation=cv2.INTER_NEAREST) > 0
    assert not np.array_equal(read(tmp_path / "both.png")[stain], read(tmp_path / "auto.png")[stain])


def test_auto_repair_on_a_clean_photo_changes_little_through_the_worker(fsrcnn_model: Path, shared_photos: Path,
                                                                        tmp_path: Path):
    src = shared_photos / "chelsea.png"
    plain = _upscale(fsrcnn_model, src, tmp_path / "plain.png")
    run = _upscale(fsrcnn_model, src, tmp_path / "auto.png", "--repair", "auto")
    assert plain.exit_code == run.exit_code == 0, run.stderr
    assert run.events[0]["repair"]["ran"] == "auto"
    assert psnr(read(tmp_path / "auto.png"), read(tmp_path / "plain.png")) > 35


def test_a_grey_photo_stays_grey_through_colour_restore(fsrcnn_model: Path, shared_photos: Path, tmp_path: Path):
    grey = np.asarray(Image.open(shared_photos / "camera.png").convert("L").crop((100, 100, 164, 148)))
    src = tmp_path / "grey.png"
    Image.fromarray((grey * 0.6 + 60).astype(np.uint8), "L").save(src)
    run = _upscale(fsrcnn_model, src, tmp_path / "out.png", "--colour", "restore")
    assert run.exit_code == 0, run.stderr
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L"
        assert np.asarray(im).std() > grey.std() * 0.6 * 1.3


def test_unknown_repair_and_colour_values_are_usage_errors(fsrcnn_model: Path, photo_with_metadata: Path,
                                                           tmp_path: Path):
    for flags in (("--repair", "maybe"), ("--colour", "vivid")):
        code, events, _ = _upscale(fsrcnn_model, photo_with_metadata, tmp_path / "out.png", *flags)
        assert code == 2 and events[-1]["code"] == "usage"


def test_the_command_carries_the_repair_flags_only_when_asked():
    plain = WorkerCommand(Path("in.png"), Path("out.png"), Path("m.pb"), 100)
    assert not {"--repair-mask", "--repair", "--colour"} & set(plain.argv())
    asked = WorkerCommand(Path("in.png"), Path("out.png"), Path("m.pb"), 100, repair_mask=Path("in.mask.png"),
                          repair=Repair.AUTO, colour=Colour.RESTORE).argv()
    assert asked[-6:] == ["--repair-mask", "in.mask.png", "--repair", "auto", "--colour", "restore"]


def test_a_grey_photo_is_filled_grey(shared_photos: Path):
    grey = cv2.imread(str(shared_photos / "camera.png"))
    mask = _stroke(*grey.shape[:2]) > 0
    scratched = grey.copy()
    scratched[mask] = 255
    repaired = fill(scratched, mask, grayscale=True)
    assert np.array_equal(repaired[..., 0], repaired[..., 1]) and np.array_equal(repaired[..., 1], repaired[..., 2])
    assert np.array_equal(repaired[~mask], scratched[~mask])
    assert psnr(repaired[mask], grey[mask]) > psnr(scratched[mask], grey[mask]) + 10


def test_a_mask_is_for_one_photo_not_a_batch(fsrcnn_model: Path, photo_with_metadata: Path, tmp_path: Path):
    mask = _mask_file(tmp_path, np.zeros((48, 64), np.uint8))
    code, events, _ = _upscale(fsrcnn_model, photo_with_metadata, f"{tmp_path / 'out'}/", "--repair-mask", mask)
    assert code == 2 and events[-1]["code"] == "usage" and "--repair auto" in events[-1]["message"]
