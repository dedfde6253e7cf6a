"""Filling a repair mask with an inpainting network (LaMa through spandrel) instead of OpenCV, for `--repair-model`.

The checkpoint is read as every checkpoint is (infer/checkpoints.py: safetensors or a weights-only pickle; a
TorchScript archive such as the usual `big-lama.pt` is refused). No plain-weights LaMa with a published checksum
is known (README, "Repairing old photos"), so the catalog has none and the service never passes this flag; it is
tested with random weights of LaMa's architecture.

The network sees the masked area's bounding box with `CONTEXT` px of picture around it, reduced where that is over
`MAX_SIDE` px a side (LaMa was trained at 256-512 px, and its memory grows with the area); only the masked pixels
of its output are taken, enlarged back where it was reduced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from infer.checkpoints import INPAINT_PURPOSE, load

CONTEXT = 64
MAX_SIDE = 1024


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the masked pixels widened by CONTEXT, within the photo."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    height, width = mask.shape
    return (max(0, int(rows[0]) - CONTEXT), min(height, int(rows[-1]) + 1 + CONTEXT),
            max(0, int(cols[0]) - CONTEXT), min(width, int(cols[-1]) + 1 + CONTEXT))


@dataclass
class NetworkFill:
    """An inpainting checkpoint, loaded once for the run on the CPU or a CUDA device."""

    path: Path
    device: str = "auto"  # the worker's --device
    _descriptor: Any = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        """The architecture's name for the events ("LaMa"), once loaded."""
        return self._descriptor.architecture.name if self._descriptor is not None else self.path.name

    def load(self) -> None:
        """Reads the checkpoint (ModelError, exit 5, for one that is not an inpainting network)."""
        if self._descriptor is not None:
            return
        import torch

        descriptor, _ = load(self.path, purposes=(INPAINT_PURPOSE,))
        if self.device != "cpu" and torch.cuda.is_available():
            descriptor.to("cuda")
        self._descriptor = descriptor

    def fill(self, bgr: np.ndarray, mask: np.ndarray, grayscale: bool = False) -> np.ndarray:
        """A copy of the BGR photo with the masked pixels filled by the network; every other pixel as it was."""
        import torch

        self.load()
        top, bottom, left, right = _box(mask)
        crop, holes = bgr[top:bottom, left:right], mask[top:bottom, left:right]
        height, width = holes.shape
        factor = min(1.0, MAX_SIDE / max(height, width))
        if factor < 1.0:
            size = (max(8, round(width * factor)), max(8, round(height * factor)))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            holes = cv2.resize(holes.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        device = next(self._descriptor.model.parameters()).device
        image = torch.from_numpy(np.ascontiguousarray(crop[:, :, ::-1])).permute(2, 0, 1)[None].float().div(255)
        marked = torch.from_numpy(holes.astype(np.float32))[None, None]
        with torch.inference_mode():
            out = self._descriptor(image.to(device), marked.to(device))
        rgb = out[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).byte().cpu().numpy()
        filled = np.ascontiguousarray(rgb[:, :, ::-1])
        if factor < 1.0:
            filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_CUBIC)
        if grayscale:
            filled = np.repeat(cv2.cvtColor(filled, cv2.COLOR_BGR2GRAY)[:, :, None], 3, axis=2)
        out_bgr = bgr.copy()
        region = out_bgr[top:bottom, left:right]
        inside = mask[top:bottom, left:right]
        region[inside] = filled[inside]
        return out_bgr
