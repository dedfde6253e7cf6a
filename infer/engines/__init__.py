"""The engine interface and registry: one module and one registry line per engine; `create_engine` picks one."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from infer.families import Family
from infer.modelspec import ModelSpec
from infer.tiling import StepFn


class Engine(Protocol):
    """Runs the network on one tile; knows nothing of files, colours or tiling.

    `run` takes a network-space tile (H x W x C float32, already preprocessed: BGR minus
    the mean for EDSR, Y/255 for the others) and returns the network output
    (sH x sW x C float32). Tiles may differ in size from call to call. An engine that can tell how far a
    forward is calls `on_step` with the fraction done as it goes (a whole photo in one window takes minutes on a
    CPU); one that cannot never calls it.
    """

    name: str  # a key of ENGINES
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "bf16" or "fp16": what really runs
    note: str | None  # said once on stderr, e.g. why a fallback was taken

    def load(self, spec: ModelSpec) -> None: ...

    def run(self, tile: np.ndarray, on_step: StepFn | None = None) -> np.ndarray: ...

    def preferred_tile(self, spec: ModelSpec, budget: int | None = None) -> int | None:
        """A tile size suited to this device (e.g. from free GPU memory), or None for the family's default."""
        ...

    def stats(self) -> dict[str, Any]:
        """Extra figures for the `done` event (device memory, tile retries...)."""
        ...

    def close(self) -> None:
        """Release the model and any device memory."""
        ...


@dataclass(frozen=True)
class EngineEntry:
    """Where an engine lives and what it needs; its module holds the class and `usable(device)`."""

    name: str
    module: str
    cls: str
    requires: str  # the import that must succeed, for a clear message when it does not
    formats: tuple[str, ...] = ("pb",)  # the model formats it runs (ModelSpec.format)


# `--engine auto` takes the first usable entry for the device: on the CPU the torch engine is 1.5x
# (fp32) to 2.7x (bf16) faster than OpenCV's at the default window (docs/benchmarks.md).
ENGINES: dict[str, EngineEntry] = {
    e.name: e
    for e in (
        EngineEntry("torch", "infer.engines.torch", "TorchEngine", requires="torch"),
        EngineEntry("opencv", "infer.engines.opencv", "OpenCVEngine", requires="cv2"),
        # PyTorch checkpoints (.pth, .safetensors, .ckpt): the only engine for them.
        EngineEntry("spandrel", "infer.engines.checkpoint", "CheckpointEngine", requires="spandrel", formats=("checkpoint",)),
    )
}
ENGINE_CHOICES = ("auto", *ENGINES)
DEVICES = ("auto", "cpu", "cuda")
INSTALL_HINT = "install the worker's engines with `pip install -e '.[worker]'`"


def _nvidia_driver_present() -> bool:
    # Cheap check that avoids importing torch (about a second) on machines with no NVIDIA GPU.
    return Path("/proc/driver/nvidia/version").exists()


def installed(entry: EngineEntry) -> bool:
    return importlib.util.find_spec(entry.requires) is not None


def _engine_module(entry: EngineEntry) -> Any:
    from infer.errors import ModelError

    try:
        return importlib.import_module(entry.module)
    except ImportError as err:
        raise ModelError(f"the {entry.name} engine cannot start ({err}); {INSTALL_HINT}, or use another --engine") from err


def _usable(entry: EngineEntry, device: str) -> bool:
    if not installed(entry) or (device == "cuda" and not _nvidia_driver_present()):
        return False
    return bool(_engine_module(entry).usable(device))


def create_engine(engine: str = "auto", device: str = "auto", precision: str = "auto", family: Family | None = None,
                  model_format: str = "pb") -> Engine:
    """Build the engine asked for on the device asked for; `auto` means the fastest usable one for the
    model family (its `cpu_engines` order on the CPU, the registry's order on CUDA) among those that run
    the model's format.

    The engine's `note` says when `auto` fell back (no GPU, or PyTorch missing)."""
    from infer.errors import ModelError, UsageError

    if engine not in ENGINE_CHOICES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}")
    if device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")

    notes: list[str] = []
    runs_format = [e for e in ENGINES.values() if model_format in e.formats]
    if engine != "auto" and ENGINES[engine] not in runs_format:
        raise UsageError(
            f"the {engine} engine does not run {model_format} models; use --engine "
            f"{' or '.join(e.name for e in runs_format)} (or auto)"
        )
    candidates = runs_format if engine == "auto" else [ENGINES[engine]]
    if device == "auto":
        device = "cuda" if any(_usable(e, "cuda") for e in candidates) else "cpu"
        if device == "cpu":
            notes.append("no CUDA GPU found; running on the CPU")
    if engine == "auto":
        if device == "cpu" and family is not None:
            candidates = [ENGINES[name] for name in family.cpu_engines]
        # The first usable one only: checking an engine imports it (PyTorch takes over a second).
        chosen = next((e for e in candidates if _usable(e, device)), None)
        if chosen is None:
            if device == "cuda":
                raise ModelError(
                    "--device cuda was asked for but no CUDA GPU is usable: install the NVIDIA driver and a CUDA "
                    f"build of PyTorch ({INSTALL_HINT}), or use --device cpu"
                )
            raise ModelError(f"no engine is installed; {INSTALL_HINT}")
        skipped = [e.name for e in candidates[: candidates.index(chosen)] if not installed(e)]
        if skipped:
            notes.append(f"{', '.join(skipped)} not installed, so the slower {chosen.name} engine runs ({INSTALL_HINT})")
    else:
        chosen = ENGINES[engine]
    auto_half = family.auto_half if family is not None else ("bf16", "fp16")
    built = getattr(_engine_module(chosen), chosen.cls)(device=device, precision=precision, auto_half=auto_half)
    built.note = "; ".join(notes + ([built.note] if built.note else [])) or None
    return built
