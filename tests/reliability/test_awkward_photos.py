"""Valid but awkward photos (1x1, 1xN, grayscale, palette, 16-bit, CMYK, RGBA, EXIF-rotated, 200-frame GIF,
multi-page TIFF, exactly at the pixel limit) must succeed, through the worker CLI and through the HTTP API."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.reliability.conftest import Observe, WorkerRun, assert_settled, run_cases
from tests.reliability.inputs import GoodFile, good_files
from tests.web.server import LiveServer

GROUP = "Awkward but valid photos (must succeed)"
CASES = {case.name: case for case in good_files()}
SCALE = 3
# Mean absolute difference (0-255) allowed between the result shrunk back and the photo as displayed.
TOLERANCE = 10.0


def displayed(data: bytes) -> np.ndarray:
    """The photo as a viewer shows it: first frame, EXIF orientation applied, as 8-bit RGB."""
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16"):
            gray = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


def check_result(case: GoodFile, result: Image.Image) -> None:
    assert result.size == (case.width * SCALE, case.height * SCALE)
    if case.grayscale:
        assert result.mode in ("L", "LA"), result.mode
    if case.alpha:
        assert "A" in result.mode, f"transparency lost: {result.mode}"
    shrunk = cv2.resize(np.asarray(result.convert("RGB")), (case.width, case.height), interpolation=cv2.INTER_AREA)
    error = np.abs(shrunk.astype(float) - displayed(case.data)).mean()
    assert error < TOLERANCE, f"the result does not look like its photo (mean difference {error:.1f})"


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
def test_worker_cli_upscales(cli_runs: dict[str, tuple[WorkerRun, Path]], name: str, observe: Observe) -> None:
    case = CASES[name]
    run, output = cli_runs[name]
    assert run.exit_code == 0, run.stderr
    assert run.last["event"] == "done"
    assert (run.last["width"], run.last["height"]) == (case.width * SCALE, case.height * SCALE)
    with Image.open(output) as result:
        result.load()
        check_result(case, result)
    assert sorted(p.name for p in output.parent.iterdir()) == sorted([case.filename, output.name])
    size = f"{run.last['width']}x{run.last['height']}"
    observe(GROUP, name, cli=f"exit 0, {size} result", left="CLI: the result only")


@pytest.mark.parametrize("name", CASES)
def test_http_api_upscales(limited_server: LiveServer, http_jobs: dict[str, dict], name: str,
                           observe: Observe) -> None:
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
        check_result(case, result)
        size, mode = f"{result.width}x{result.height}", result.mode
    assert_settled(limited_server)
    observe(GROUP, name, http=f"HTTP 202, job done, {size} {mode} {job['output']['format'].upper()} result",
            left="HTTP: the result only (upload removed)", answering="yes (/healthz 200)")
