"""Checkpoint engine: a spandrel-loaded PyTorch model, with the torch engine's precision fallback and OOM halving."""

from __future__ import annotations

import copy
import math
import time
import weakref
from typing import Any

import numpy as np
import torch

from infer import checkpoints
from infer.engines.fused_convs import fuse_conv_activations
from infer.engines.split_tail import split_tail
from infer.engines.step_progress import ConvProgress
from infer.memory_budget import tile_for_budget
from infer.engines.torch import TorchEngine, usable  # noqa: F401  (usable: the registry's check)
from infer.errors import ModelError, UsageError
from infer.modelspec import ModelSpec
from infer.tiling import StepFn


def pad_to_requirements(height: int, width: int, minimum: int, multiple_of: int, square: bool) -> tuple[int, int]:
    """The smallest (height, width) at least the tile's that meets an architecture's size requirements."""

    def fit(n: int) -> int:
        n = max(n, minimum, 1)
        return -(-n // multiple_of) * multiple_of

    h, w = fit(height), fit(width)
    if square:
        h = w = max(h, w)
    return h, w


class CheckpointEngine(TorchEngine):
    """Runs a checkpoint's network as the torch engine runs a .pb plan: same devices, precisions, fp32 re-run
    of a non-finite half-precision tile, and tiles split in half on running out of memory."""

    name = "spandrel"

    def __init__(self, device: str = "auto", precision: str = "auto", auto_half: tuple[str, ...] = ("bf16", "fp16")):
        if precision in ("bf16", "fp16") and precision not in auto_half:
            safe = ", ".join(("fp32", *auto_half))
            raise UsageError(f"this checkpoint's architecture is not safe in {precision} (spandrel says so); use --precision {safe} or auto")
        super().__init__(device=device, precision=precision, auto_half=auto_half)
        self._info: checkpoints.CheckpointInfo | None = None
        # Each network's (this precision's, the fp32 fallback's) measure of its whole forward.
        self._progress: weakref.WeakKeyDictionary[Any, ConvProgress] = weakref.WeakKeyDictionary()

    def _plan_for(self, spec: ModelSpec) -> Any:
        """The fp32 model on the CPU, read once; both precisions' networks are copies of it."""
        if self._plan is not None and self._spec == spec:
            return self._plan
        t = time.perf_counter()
        descriptor, info = checkpoints.load(spec.path, denoise_strength=spec.denoise_strength)
        if info.scale != spec.scale:
            raise ModelError(f"{spec.path.name} upscales x{info.scale}, not x{spec.scale}; it changed since it was inspected")
        self._seconds["weights"] = round(time.perf_counter() - t, 4)
        self._spec, self._plan, self._info = spec, descriptor.model, info
        self._plan_source = f"{info.architecture_name} checkpoint"
        self._split_pad = max(spec.family.tile_pad, 8)
        return descriptor.model

    def _build(self, plan: Any, dtype: torch.dtype) -> Any:
        # .to() changes a module in place: the half-precision network is a copy, so the fp32 fallback keeps fp32 weights.
        net = self._place(plan if dtype == torch.float32 and self.device == "cpu" else copy.deepcopy(plan), dtype)
        assert self._info is not None
        if self.device == "cpu":
            fuse_conv_activations(net)  # each activation applied as its convolution writes, not in a pass of its own
        # The enlarged tail in stripes: the same result, and a window's memory is then mostly the body's.
        return split_tail(net, self._info.architecture) or net

    def preferred_tile(self, spec: ModelSpec, budget: int | None = None) -> int | None:
        """On the CPU, the largest window `budget` allows at the architecture's measured bytes per window pixel
        (`CpuFacts`, in the precision that runs), on the architecture's grid, and no larger
        than its tile where that was measured fastest (attention); else the architecture's default tile (an
        architecture that is not tiled stays whole). On CUDA the out-of-memory halving finds the limit."""
        info = spec.checkpoint
        if self.device == "cuda" or budget is None or info is None or spec.family.tile == 0:
            return None
        facts = checkpoints.cpu_facts(info)
        per_px = facts.window_bytes_per_px
        if self._dtype == torch.float32:
            per_px = facts.window_bytes_per_px_fp32 or 2 * facts.window_bytes_per_px
        if per_px <= 0:
            return None
        grid = math.lcm(16, info.size_multiple_of, facts.align)
        tile = tile_for_budget(budget, per_px, spec.family.tile_pad, multiple=grid)
        return min(tile, spec.family.tile) if facts.fastest_tile else tile

    def _infer(self, net: Any, tile: np.ndarray, dtype: torch.dtype, on_step: StepFn | None = None) -> np.ndarray:
        """Pads the tile (reflecting its edges) to the architecture's size requirements and crops the result."""
        assert self._info is not None and self._spec is not None
        h, w = tile.shape[:2]
        info = self._info
        ph, pw = pad_to_requirements(h, w, info.size_minimum, info.size_multiple_of, info.size_square)
        if (ph, pw) != (h, w):
            mode = "reflect" if ph - h < h and pw - w < w else "edge"
            tile = np.pad(tile, ((0, ph - h), (0, pw - w), (0, 0)), mode=mode)
        out = super()._infer(net, tile, dtype, on_step)
        scale = self._spec.scale
        return np.ascontiguousarray(out[: h * scale, : w * scale])

    def _run_net(self, net: Any, x: torch.Tensor, on_step: StepFn | None) -> torch.Tensor:
        """The network's output for `x`; hooks on its convolutions say how far it is."""
        progress = self._progress.get(net)
        if progress is None:
            progress = self._progress[net] = ConvProgress(net)
        with progress.watching(x, on_step):
            return net(x)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self._info is not None:
            out["architecture"] = self._info.architecture
        return out
