"""How far a forward is: a .pb plan's convolution work step by step, a checkpoint's through hooks on its
convolutions, both through the engine's `run` and its split after running out of memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infer.modelspec import spec_from_path
from tests.helpers import read


def _steps(engine, window: np.ndarray) -> tuple[np.ndarray, list[float]]:
    seen: list[float] = []
    out = engine.run(window, seen.append)
    return out, seen


def test_a_plan_says_its_share_of_the_convolution_work_after_each_convolution(edsr_model: Path) -> None:
    from infer.engines.torch import TorchEngine

    engine = TorchEngine(device="cpu", precision="fp32")
    engine.load(spec_from_path(edsr_model))
    window = np.random.default_rng(0).normal(size=(24, 20, 3)).astype(np.float32)
    out, seen = _steps(engine, window)
    plan = engine._plan
    convs = [s for s in plan.steps if s.kind in ("conv", "deconv")]
    assert len(seen) == len(convs) and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    # The first step's share is its own weights over the whole: the head convolution of 3 channels is a sliver.
    first = plan.step_macs_per_pixel(convs[0]) / plan.macs_per_pixel()
    assert seen[0] == pytest.approx(first) and 0 < seen[0] < 0.05
    np.testing.assert_array_equal(out, engine.run(window))  # saying so changes nothing


@pytest.mark.parametrize("key", ["compact", "x4plus"])
def test_a_checkpoint_says_how_far_it_is_and_knows_the_whole_after_one_window(
        key: str, realesrgan: dict[str, Path], shared_photos: Path) -> None:
    """The first window's whole is each convolution once at the window's size: x4plus's tail, enlarged, runs past
    it, held at 1; from the second window the whole is measured and the last convolution ends it exactly."""
    import torch

    from infer.engines.checkpoint import CheckpointEngine

    engine = CheckpointEngine(device="cpu", precision="fp32")
    engine.load(spec_from_path(realesrgan[key]))
    window = read(shared_photos / "astronaut.png")[100:132, 100:140, ::-1].astype(np.float32) / 255
    out_first, first = _steps(engine, window)
    out_second, second = _steps(engine, window)
    convs = [m for m in engine._net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert first == sorted(first) and second == sorted(second) and 0 < first[0] < 0.5
    assert len(first) == len(second) >= len(convs) and all(0 < f <= 1 for f in first)
    assert second[-1] == pytest.approx(1.0) and second[-2] < 1
    if key == "x4plus":
        assert first.count(1.0) > 1  # the tail past the first estimate
    assert not any(m._forward_hooks for m in engine._net.modules()), "hooks left on the network"
    np.testing.assert_array_equal(out_first, out_second)
    np.testing.assert_array_equal(out_first, engine.run(window))


def test_a_window_split_after_running_out_of_memory_says_its_parts_in_order(edsr_model: Path) -> None:
    from infer.engines.torch import TorchEngine

    engine = TorchEngine(device="cpu", precision="fp32")
    engine.load(spec_from_path(edsr_model))
    engine._window_limit = 96  # as after an out-of-memory error: windows of at most 96, context included
    window = np.random.default_rng(1).normal(size=(150, 130, 3)).astype(np.float32)
    _out, seen = _steps(engine, window)
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] == 1.0
    parts = engine.stats()["tiles_run"]
    assert parts > 1 and len(seen) > parts
