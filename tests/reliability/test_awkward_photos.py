"""Valid but awkward photos (1x1, 1xN, grayscale, palette, 16-bit, CMYK, RGBA, EXIF-rotated, 200-frame GIF,
multi-page TIFF, exactly at the pixel limit) must succeed, through the worker CLI and through the HTTP API."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import dnn_superres
from tests.reliability.conftest import Observe, WorkerRun, assert_settled, run_cases
from tests.reliability.inputs import GoodFile, good_files
from tests.web.server import LiveServer

GROUP = "Awkward but valid photos (must succeed)"
CASES = {case.name: case for case in good_files()}
SCALE = 3
# A lossless result is the same model run by OpenCV's dnn_superres on the photo as displayed, to the value. A
# JPEG result (the service keeps a JPEG photo's format) differs by its compression: measured, at most 0.47 grey
# levels on average and 5 at a pixel; a blur or a shift of one output pixel costs several levels on average.
JPEG_MEAN = 1.0
JPEG_MAX = 10


def displayed(data: bytes) -> np.ndarray:
    """The photo as a viewer shows it: first frame, EXIF orientation applied, as 8-bit RGB."""
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16"):
            gray = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def reference(fsrcnn_model: Path) -> Callable[[GoodFile], np.ndarray]:
    """The expected result of a photo: FSRCNN x3 run by OpenCV's dnn_superres, in this process, on the photo as
    displayed (RGB; grayscale photos as their luma)."""
    upscale = dnn_superres(fsrcnn_model, "fsrcnn", SCALE)

    def expected(case: GoodFile) -> np.ndarray:
        upscaled = upscale(displayed(case.data))
        return cv2.cvtColor(upscaled, cv2.COLOR_RGB2GRAY) if case.grayscale else upscaled

    return expected


def check_result(case: GoodFile, result: Image.Image, expected: np.ndarray) -> None:
    assert result.size == (case.width * SCALE, case.height * SCALE)
    if case.grayscale:
        assert result.mode in ("L", "LA"), result.mode
    if case.alpha:
        assert "A" in result.mode, f"transparency lost: {result.mode}"
    pixels = np.asarray(result.convert("L" if case.grayscale else "RGB")).astype(np.float64)
    difference = np.abs(pixels - expected)
    if result.format == "JPEG":
        assert difference.mean() <= JPEG_MEAN and difference.max() <= JPEG_MAX, (case.name, difference.mean(),
                                                                                  difference.max())
    else:
        assert difference.max() == 0, f"the result is not the model's upscale of its photo ({difference.mean():.2f} off)"


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory, fsrcnn_model: Path) -> dict[str, tuple[WorkerRun, Path]]:
    return run_cases(CASES, tmp_path_factory, fsrcnn_model)


@pytest.fixture(scope="module")
def http_jobs(limited_server: LiveServer) -> dict[str, dict]:
    """All the awkward photos uploaded at once, then followed to the end."""
    client = limited_server.client()
    replies = {name: client.upload(case.data, filename=case.filename) for name, case in CASES.items()}
    assert {name: r.status for name, r in replies.items()} == {name: 202 for name in CASES}
    return {name: client.wait(r.json()["id"]) for name, r in replies.items()}


@pytest.mark.parametrize("name", CASES)
def test_worker_cli_upscales(cli_runs: dict[str, tuple[WorkerRun, Path]], reference: Callable[[GoodFile], np.ndarray],
                             name: str, observe: Observe) -> None:
    case = CASES[name]
    run, output = cli_runs[name]
    assert run.exit_code == 0, run.stderr
    assert run.last["event"] == "done"
    assert (run.last["width"], run.last["height"]) == (case.width * SCALE, case.height * SCALE)
    with Image.open(output) as result:
        result.load()
        check_result(case, result, reference(case))
    assert sorted(p.name for p in output.parent.iterdir()) == sorted([case.filename, output.name])
    size = f"{run.last['width']}x{run.last['height']}"
    observe(GROUP, name, cli=f"exit 0, {size} result", left="CLI: the result only")


@pytest.mark.parametrize("name", CASES)
def test_http_api_upscales(limited_server: LiveServer, http_jobs: dict[str, dict],
                           reference: Callable[[GoodFile], np.ndarray], name: str, observe: Observe) -> None:
    case = CASES[name]
    job = http_jobs[name]
    assert job["status"] == "done", job["error"]
    # Sizes as the person sees the photo, from the moment it is accepted (EXIF orientation included).
    assert (job["input"]["width"], job["input"]["height"]) == (case.width, case.height)
    assert (job["output"]["width"], job["output"]["height"]) == (case.width * SCALE, case.height * SCALE)
    reply = limited_server.client().get(job["links"]["result"])
    assert reply.status == 200
    assert reply.header("X-Job-Id") == job["id"]
    with Image.open(io.BytesIO(reply.body)) as result:
        result.load()
        check_result(case, result, reference(case))
        size, mode = f"{result.width}x{result.height}", result.mode
    assert_settled(limited_server)
    observe(GROUP, name, http=f"HTTP 202, job done, {size} {mode} {job['output']['format'].upper()} result",
            left="HTTP: the result only (upload removed)", answering="yes (/healthz 200)")
