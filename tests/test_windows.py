"""Windows chosen from memory on the CPU: the budget's arithmetic, RRDBNet's tail in stripes equal to the whole
network, and the real worker running a photo whole by default and in windows under a memory cap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from infer.memory_budget import MIN_TILE, photo_bytes, tile_for_budget, window_budget
from tests.helpers import read, run_worker

MEMINFO = "MemTotal:       8000000 kB\nMemFree:        1000000 kB\nMemAvailable:    {} kB\n"


def test_the_budget_is_the_cap_less_the_photo_else_the_default_within_what_is_free() -> None:
    assert photo_bytes(100, 200, 4) == 3 * 100 * 200 * 17
    capped = window_budget(1000, 512, 512, 4, meminfo=MEMINFO.format(10**8))
    assert capped == (1000 - 192) * 2**20 - photo_bytes(512, 512, 4)
    assert window_budget(0, 512, 512, 4, meminfo=MEMINFO.format(16 * 2**20)) == 1024 * 2**20  # 16 GB free
    assert window_budget(0, 512, 512, 4, meminfo=MEMINFO.format(1024 * 1024)) == 2**29  # 1 GB free: half of it
    assert window_budget(200, 4000, 4000, 4) == 0  # a cap smaller than the photo itself
    # sqrt(1 GiB / 1154 B) = 964: a window of 964 less 2 x 32 of context, in steps of 16.
    assert tile_for_budget(2**30, 1154, 32) == 896
    assert tile_for_budget(0, 1154, 32) == MIN_TILE and tile_for_budget(2**30, 0, 32) == MIN_TILE
    assert tile_for_budget(2**30, 1154, 32, multiple=64) == 896 // 64 * 64


@pytest.mark.parametrize("layout", ["x4plus", "x2 (pixel unshuffle)"])
def test_the_tail_in_stripes_is_the_whole_network(layout: str, realesrgan: dict[str, Path], shared_photos: Path) -> None:
    import torch

    from infer import checkpoints
    from infer.engines.split_tail import SplitTail, split_tail

    torch.manual_seed(0)
    if layout == "x4plus":
        net = checkpoints.load(realesrgan["x4plus"])[0].model
    else:
        from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

        net = RRDBNet(in_nc=12, out_nc=3, num_filters=32, num_blocks=2, scale=4, shuffle_factor=2)  # x2plus's layout
    net = net.eval()
    photo = read(shared_photos / "astronaut.png")[200:247, 180:241, ::-1]  # 61x47: odd on both sides
    x = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1), dtype=np.float32)[None] / 255.0)
    striped = split_tail(net, "ESRGAN", stripe_pixels=256)  # a stripe of 4 rows: a dozen stripes
    assert isinstance(striped, SplitTail) and striped.halo >= 2
    assert split_tail(net, "Compact") is None
    with torch.inference_mode():
        whole, parts = net(x), striped(x)
    scale = 4 if layout == "x4plus" else 2
    assert parts.shape == whole.shape == (1, 3, 47 * scale, 61 * scale)
    # The same arithmetic on other shapes: oneDNN may sum in another order, nothing more.
    assert (parts - whole).abs().max().item() < 1e-5


def _events(run) -> dict[str, dict]:
    return {e["event"]: e for e in run.events if isinstance(e, dict) and e.get("event") in ("start", "done")}


def test_a_photo_runs_whole_by_default_and_in_windows_under_a_memory_cap(realesrgan: dict[str, Path],
                                                                         shared_photos: Path, tmp_path: Path) -> None:
    """Compact on the whole 512x512 astronaut: one window without a cap (no context computed twice); with
    SR_WORKER_MEMORY_MB=320 the budget allows windows of 288 (four), and the seams stay within 2 grey levels."""
    model = realesrgan["compact"]
    env = {k: v for k, v in os.environ.items() if k != "SR_WORKER_MEMORY_MB"}
    whole = run_worker("--input", shared_photos / "astronaut.png", "--output", tmp_path / "whole.png",
                       "--model", model, "--json", env=env)
    assert whole.exit_code == 0, whole.stderr
    start = _events(whole)["start"]
    assert start["tiles"] == 1 and start["tile"] >= 512
    capped = run_worker("--input", shared_photos / "astronaut.png", "--output", tmp_path / "capped.png",
                        "--model", model, "--json", env={**env, "SR_WORKER_MEMORY_MB": "320"})
    assert capped.exit_code == 0, capped.stderr
    start = _events(capped)["start"]
    precision = _events(capped)["done"]["precision"]
    per_px = 543 if precision == "bf16" else 574
    expected = tile_for_budget(window_budget(320, 512, 512, 4), per_px, 16)
    assert start["tile"] == expected < 512 and start["tiles"] == 4, json.dumps(start)
    a, b = read(tmp_path / "whole.png").astype(int), read(tmp_path / "capped.png").astype(int)
    assert a.shape == b.shape == (2048, 2048, 3)
    assert np.abs(a - b).max() <= 2


def test_an_edsr_photo_runs_in_one_window_that_tells_its_progress_and_in_windows_from_the_graph_under_a_cap(
        edsr_model_slow: Path, shared_photos: Path, tmp_path: Path) -> None:
    """The slow EDSR fixture on a 1024x768 photo: by default one window (no context computed twice), whose
    progress events say how far the network is before it ends; under a cap, windows sized from the graph's own
    count of live activations times the family's measured overhead, with seams within 2 grey levels."""
    import cv2

    from infer.engines.weight_cache import load_plan
    from infer.families import FAMILIES

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.resize(read(shared_photos / "astronaut.png"), (1024, 768), interpolation=cv2.INTER_AREA))
    env = {k: v for k, v in os.environ.items() if k != "SR_WORKER_MEMORY_MB"}
    whole = run_worker("--input", photo, "--output", tmp_path / "whole.png", "--model", edsr_model_slow, "--json", env=env)
    assert whole.exit_code == 0, whole.stderr
    start = _events(whole)["start"]
    assert start["tiles"] == 1 and start["tile"] >= 1024, json.dumps(start)
    progress = [e for e in whole.events if e.get("event") == "progress"]
    within = [e for e in progress if e["done"] == 0 and 0 < e["fraction"] < 1]
    assert within, f"no progress within the window: {progress}"
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and progress[-1] == {**progress[-1], "done": 1, "total": 1, "fraction": 1.0}

    itemsize = 2 if _events(whole)["done"]["precision"] == "bf16" else 4
    per_px = load_plan(edsr_model_slow).plan.peak_values_per_pixel() * itemsize * FAMILIES["edsr"].window_overhead
    cap = 192 + 2 + (3 * 1024 * 768 * 10 + int(400**2 * per_px)) // 2**20  # a window of about 400
    capped = run_worker("--input", photo, "--output", tmp_path / "capped.png", "--model", edsr_model_slow, "--json",
                        env={**env, "SR_WORKER_MEMORY_MB": str(cap)})
    assert capped.exit_code == 0, capped.stderr
    start = _events(capped)["start"]
    assert start["tile"] == tile_for_budget(window_budget(cap, 768, 1024, 3), per_px, 24), json.dumps(start)
    assert start["tiles"] >= 6 and 300 <= start["tile"] <= 400, json.dumps(start)
    a, b = read(tmp_path / "whole.png").astype(int), read(tmp_path / "capped.png").astype(int)
    assert a.shape == b.shape == (2304, 3072, 3)
    assert np.abs(a - b).max() <= 2
