"""The face stage's geometry and blending with real detectors on real photos, upscaled by a real model, and
restorers that are real modules (identity, negative): detection, alignment, inverse transform and mask agree."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from infer.engines import create_engine
from infer.faces.align import CROP, MARGIN, FEATHER, crop_face, face_matrix, paste_face
from infer.faces.detect import FFHQ_TEMPLATE_512, HaarDetector, landmarks_from_eyes
from infer.faces.stage import FaceSettings, FaceStage
from infer.modelspec import spec_from_path
from infer.upscale import upscale_bgr
from tests.fixtures.faces import IdentityRestorer, NegativeRestorer, class_photo, faces_side_by_side

SCALE = 3
# The identity round trip (crop, then paste back) resamples the upscaled photo twice (Lanczos; the crop
# shrinks large faces, and the paste blurs small ones against aliasing). On FSRCNN's x3 output, measured:
# the mean change over any 3x3 neighbourhood is at most 1.4 grey levels (astronaut), 2.1 (faces side by
# side) and 2.3 (class photo); 99.9% (99.5% on the class photo) of the values keep within one level; single
# pixels on the sharpest edges move up to 12. A wrong inverse (a flipped rotation, a missing shift) moves
# the face by pixels and costs tens of grey levels along every edge.
LOCAL_LEVELS = 2.5
MAX_LEVELS = 16
SHARE_WITHIN_ONE = 0.99


@pytest.fixture(scope="module")
def upscale(shared_models: Path):
    """FSRCNN x3 (the shared model file) on OpenCV's engine: the background the face stage pastes into."""
    spec = spec_from_path(shared_models / "FSRCNN_x3.pb")
    engine = create_engine("opencv", "cpu", "fp32", spec.family)
    engine.load(spec)
    yield lambda bgr: upscale_bgr(bgr, engine, spec, 0, 0)
    engine.close()


def _stage(restorer, fidelity: float = 1.0) -> FaceStage:
    return FaceStage(FaceSettings(enabled=True, fidelity=fidelity, models_folder=Path("/nonexistent")), lambda: restorer)


def _run(photo: np.ndarray, upscale, restorer, fidelity: float = 1.0):
    stage = _stage(restorer, fidelity)
    faces, report = stage.detect(photo)
    plain = upscale(photo)
    faced = plain.copy()
    stage.restore(faced, faces, SCALE, report)
    return plain, faced, faces, report


def _assert_unchanged(plain: np.ndarray, faced: np.ndarray) -> None:
    diff = faced.astype(np.float32) - plain.astype(np.float32)
    local = float(np.abs(cv2.blur(diff, (3, 3), borderType=cv2.BORDER_REPLICATE)).max())
    assert local <= LOCAL_LEVELS, f"the stage changed a 3x3 neighbourhood by {local:.2f} grey levels on average"
    assert np.abs(diff).max() <= MAX_LEVELS, f"the stage changed a pixel by {np.abs(diff).max():.0f} grey levels"
    within = float(np.mean(np.abs(diff) <= 1))
    assert within >= SHARE_WITHIN_ONE, f"only {within:.4%} of values within one grey level"


def test_identity_restorer_gives_back_the_upscaled_astronaut(shared_photos: Path, upscale) -> None:
    photo = cv2.imread(str(shared_photos / "astronaut.png"), cv2.IMREAD_COLOR)
    restorer = IdentityRestorer()
    plain, faced, faces, report = _run(photo, upscale, restorer)
    assert report.detector == "haar" and report.found == 1 and report.restored == 1 and restorer.calls == [1]
    assert not np.array_equal(plain, faced), "the face was not pasted at all"
    _assert_unchanged(plain, faced)


def test_identity_restorer_gives_back_several_faces_side_by_side(shared_photos: Path, upscale) -> None:
    photo = faces_side_by_side(shared_photos)
    restorer = IdentityRestorer(batch=3)
    plain, faced, faces, report = _run(photo, upscale, restorer)
    # As shot, turned, mirrored and small; the cat and the coffee cup are not faces.
    assert report.found == report.restored == 4, [f.box for f in faces]
    assert restorer.calls == [3, 1]
    _assert_unchanged(plain, faced)


def test_a_flipped_inverse_transform_is_caught(shared_photos: Path, upscale) -> None:
    """The check above fails when the paste's rotation has the wrong sign, so it does prove the geometry."""
    photo = faces_side_by_side(shared_photos)
    stage = _stage(IdentityRestorer())
    faces, _ = stage.detect(photo)
    plain = upscale(photo)
    faced = plain.copy()
    for face in faces:
        matrix = face_matrix(face.scaled(SCALE).landmarks)
        crop = crop_face(plain, matrix)
        flipped = matrix.copy()
        flipped[0, 1], flipped[1, 0] = -matrix[0, 1], -matrix[1, 0]
        paste_face(faced, crop, flipped)
    with pytest.raises(AssertionError):
        _assert_unchanged(plain, faced)


def test_the_aligned_crop_puts_the_eyes_on_the_template(shared_photos: Path) -> None:
    photo = faces_side_by_side(shared_photos)
    detector = HaarDetector()
    for face in detector.detect(photo):
        crop = crop_face(photo, face_matrix(face.landmarks))
        again = detector.detect(crop)
        assert len(again) == 1, face.box
        # Within a tenth of the template's eye distance (126 pixels).
        assert np.abs(again[0].landmarks[:2] - FFHQ_TEMPLATE_512[:2]).max() < 13, (face.box, again[0].landmarks[:2])


def test_landmarks_from_eyes_follow_the_template() -> None:
    assert np.allclose(landmarks_from_eyes(FFHQ_TEMPLATE_512[0], FFHQ_TEMPLATE_512[1]), FFHQ_TEMPLATE_512, atol=1e-3)
    # Eyes half as far apart and turned 90 degrees: the nose lies beside them, not below.
    points = landmarks_from_eyes(np.array([100.0, 100.0]), np.array([100.0, 163.0]))
    assert points[2][0] < 100.0 - 30 and abs(points[2][1] - 131.5) < 2


def _face_core(face, shape: tuple[int, int]) -> np.ndarray:
    """The upscaled photo's pixels where the paste mask is one (the template's inner square)."""
    matrix = face_matrix(face.scaled(SCALE).landmarks)
    inner = np.zeros((CROP, CROP), np.uint8)
    edge = MARGIN + FEATHER + 4
    inner[edge:-edge, edge:-edge] = 255
    back = cv2.warpAffine(inner, cv2.invertAffineTransform(matrix), (shape[1], shape[0]), flags=cv2.INTER_NEAREST)
    return back == 255


@pytest.mark.parametrize("fidelity", [1.0, 0.5, 0.25])
def test_fidelity_mixes_the_restorer_into_the_face_area(shared_photos: Path, upscale, fidelity: float) -> None:
    photo = cv2.imread(str(shared_photos / "astronaut.png"), cv2.IMREAD_COLOR)
    plain, faced, faces, report = _run(photo, upscale, NegativeRestorer(), fidelity)
    assert report.restored == 1
    core = _face_core(faces[0], plain.shape[:2])
    assert core.sum() > 100_000
    expected = fidelity * (255.0 - plain[core]) + (1 - fidelity) * plain[core]
    assert np.abs(faced[core] - expected).max() <= MAX_LEVELS
    assert np.abs(faced[core] - expected).mean() < 1.0  # 0.5 at fidelity 0.5: the mix of 255 - v and v is 127.5
    # Far from the face nothing changed.
    assert np.array_equal(faced[:, -300:], plain[:, -300:]) and np.array_equal(faced[-300:], plain[-300:])


def test_fidelity_zero_is_the_plain_upscale_and_runs_no_restorer(shared_photos: Path, upscale) -> None:
    photo = cv2.imread(str(shared_photos / "astronaut.png"), cv2.IMREAD_COLOR)
    restorer = NegativeRestorer()
    plain, faced, faces, report = _run(photo, upscale, restorer, 0.0)
    assert report.found == 1 and report.restored == 0 and restorer.calls == []
    assert np.array_equal(plain, faced)


def test_a_photo_without_faces_is_untouched_and_loads_no_restorer(shared_photos: Path, upscale) -> None:
    photo = cv2.imread(str(shared_photos / "coffee.png"), cv2.IMREAD_COLOR)
    loads = []
    stage = FaceStage(FaceSettings(enabled=True, fidelity=1.0, models_folder=Path("/nonexistent")),
                      lambda: loads.append(1) or NegativeRestorer())
    faces, report = stage.detect(photo)
    plain = upscale(photo)
    faced = plain.copy()
    stage.restore(faced, faces, SCALE, report)
    assert faces == [] and loads == [] and np.array_equal(plain, faced)
    assert set(report.seconds) == {"face_detect"}


# A class photo of 40 small faces (8 x 5 tiles of 128 pixels: faces of about 30), 1024x640 upscaled to
# 3072x1920: detection, 39 faces found, cropped and pasted. Measured 2.4 s and 24 MB of arrays on 2 cores; the
# bounds leave room for a loaded machine.
CLASS_SECONDS = 20.0
CLASS_PEAK_MB = 200.0


def test_a_class_photo_of_many_small_faces(shared_photos: Path, upscale) -> None:
    photo = class_photo(shared_photos)
    plain = upscale(photo)
    faced = plain.copy()
    restorer = IdentityRestorer(batch=8)
    stage = _stage(restorer)
    tracemalloc.start()
    t = time.perf_counter()
    faces, report = stage.detect(photo)
    stage.restore(faced, faces, SCALE, report)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.found >= 30 and report.restored == report.found, report
    assert seconds < CLASS_SECONDS and peak / 2**20 < CLASS_PEAK_MB, (seconds, peak / 2**20)
    _assert_unchanged(plain, faced)


def test_a_small_pasted_face_gets_its_average_grey_not_moire() -> None:
    """A restored face of one-pixel checks pasted at about a quarter of its size and turned 10 degrees: the photo
    gets the checks' average grey. Sampled without the blur the paste gives before shrinking, it shows moire of
    up to the full black-to-white range (51 grey levels off on average, measured)."""
    turn, size = np.deg2rad(10), 0.27
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) * size
    matrix = face_matrix(FFHQ_TEMPLATE_512 @ rotation.T + (60.3, 40.7))
    photo = np.full((240, 240, 3), 128, np.uint8)
    rows, columns = np.indices((CROP, CROP))
    checks = np.repeat(((rows + columns) % 2 * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    paste_face(photo, checks, matrix)
    inner = np.zeros((CROP, CROP), np.uint8)
    edge = MARGIN + FEATHER + 4
    inner[edge:-edge, edge:-edge] = 255
    core = cv2.warpAffine(inner, cv2.invertAffineTransform(matrix), (240, 240), flags=cv2.INTER_NEAREST) == 255
    assert core.sum() > 10_000
    off = np.abs(photo[core].astype(np.float64) - 127.5)
    assert off.mean() < 2.0 and off.max() < 8.0, (off.mean(), off.max())
