"""The engine interface: load a model, run one preprocessed tile, say where it runs."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from infer.modelspec import ModelSpec


class Engine(Protocol):
    """Runs the network on one tile; knows nothing of files, colours or tiling.

    `run` takes a network-space tile (H x W x C float32, already preprocessed: BGR minus
    the mean for EDSR, Y/255 for the others) and returns the network output
    (sH x sW x C float32). Tiles may differ in size from call to call.
    """

    name: str  # "opencv" or "torch"
    device: str  # "cpu" or "cuda"

    def load(self, spec: ModelSpec) -> None: ...

    def run(self, tile: np.ndarray) -> np.ndarray: ...

    def preferred_tile(self, spec: ModelSpec) -> int | None:
        """A tile size suited to this device (e.g. from free GPU memory), or None for the default."""
        ...

    def stats(self) -> dict[str, Any]:
        """Extra figures for the `done` event (device memory, tile retries...)."""
        ...

    def close(self) -> None:
        """Release the model and any device memory."""
        ...
