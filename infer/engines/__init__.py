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


ENGINES = ("auto", "opencv", "torch")
DEVICES = ("auto", "cpu", "cuda")


def _nvidia_driver_present() -> bool:
    # Cheap check that avoids importing torch (about a second) on machines with no NVIDIA GPU.
    from pathlib import Path

    return Path("/proc/driver/nvidia/version").exists()


def torch_cuda_available() -> bool:
    """True when PyTorch is installed and sees a CUDA device."""
    import importlib.util

    if not _nvidia_driver_present() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def create_engine(engine: str = "auto", device: str = "auto", precision: str = "fp16") -> tuple[Engine, str | None]:
    """Build the engine asked for; returns it with a note when `auto` had to fall back.

    auto: PyTorch on CUDA when there is a GPU, else OpenCV's CPU engine.
    """
    from infer.errors import ModelError, UsageError

    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}")
    if device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")

    note = None
    if engine == "auto":
        from infer.engines.opencv import cuda_device_count

        if device in ("auto", "cuda") and torch_cuda_available():
            engine, device = "torch", "cuda"
        elif device in ("auto", "cuda") and cuda_device_count() > 0:
            engine, device = "opencv", "cuda"
        elif device == "cuda":
            raise ModelError(
                "--device cuda was asked for but no CUDA GPU is usable: install the NVIDIA driver and "
                "`pip install -e '.[gpu]'`, or use --device cpu"
            )
        else:
            if device == "auto":
                note = "no CUDA GPU found; running on the CPU"
            engine, device = "opencv", "cpu"

    if engine == "opencv":
        from infer.engines.opencv import OpenCVEngine, cuda_device_count

        if device == "auto":
            device = "cuda" if cuda_device_count() > 0 else "cpu"
            if device == "cpu":
                note = "no CUDA GPU found; running on the CPU"
        return OpenCVEngine(device=device, precision=precision), note

    # engine == "torch"
    try:
        from infer.engines.torch import TorchEngine
    except ImportError as err:
        raise ModelError(
            f"PyTorch is not installed ({err}); install it with `pip install -e '.[gpu]'` "
            "or use --engine opencv"
        ) from err
    torch_engine = TorchEngine(device=device, precision=precision)
    return torch_engine, note or torch_engine.note
