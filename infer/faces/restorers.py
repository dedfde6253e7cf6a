"""Face restorers: the protocol the face stage calls, and GFPGAN loaded through spandrel (weights only, never code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from infer.errors import ModelError, OutOfMemoryError
from infer.faces.options import FACE_ARCHITECTURE, FACE_PURPOSE, GFPGAN_NAME

_CHECKPOINT_SUFFIXES = (".pth", ".safetensors")
# Peak memory each 512x512 face adds while GFPGAN runs in fp32 (activations and workspace): about 650 MB
# on the CPU (peak RSS 2514 MB at batch 2, 3822 MB at batch 4: bench/bench_faces.py, docs/benchmarks.md
# "Faces"), rounded up. On a GPU the batch is sized from it and the free memory; on the CPU faces go one at
# a time, since batches of 2 and 4 were no faster there (3.9 and 3.8 s a face against 3.5 s).
FACE_BYTES_FP32 = 700 << 20
MAX_BATCH = 8


class Restorer(Protocol):
    """Restores aligned 512x512 faces: N x 512 x 512 x 3 uint8 BGR in, the same shape out."""

    name: str  # what the worker reports: the model file's name
    device: str
    precision: str

    def batch_size(self) -> int:
        """How many faces one call may take in the device's free memory."""
        ...

    def restore(self, faces: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def check_face_file(path: Path) -> None:
    """The cheap checks before any work: the GFPGAN file is there, not empty, and a weights-only kind."""
    if not path.is_file():
        raise ModelError(
            f"face restoration needs {path}, which is not installed; fetch it with `sr-models fetch {GFPGAN_NAME}` "
            "(348.6 MB), or run without --faces"
        )
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty; fetch it again with `sr-models fetch {GFPGAN_NAME}`")
    if path.suffix.lower() not in _CHECKPOINT_SUFFIXES:
        raise ModelError(f"{path.name} is not a GFPGAN checkpoint (.pth or .safetensors); fetch `sr-models fetch {GFPGAN_NAME}`")


def _load_descriptor(path: Path) -> Any:
    """spandrel's descriptor for a GFPGAN file, through the checkpoint loader (which refuses code: .pth files
    are read only by PyTorch's weights-only unpickler)."""
    from infer import checkpoints

    check_face_file(path)
    broken = f"{path} is not a usable GFPGAN checkpoint"
    hint = f"fetch it again with `sr-models fetch {GFPGAN_NAME}`"
    try:
        descriptor, info = checkpoints.load(path, purposes=(FACE_PURPOSE,))
    except checkpoints.LoaderMissing:
        raise
    except ModelError as err:
        raise ModelError(f"{broken} ({err.message}); {hint}") from None
    if info.architecture != FACE_ARCHITECTURE:
        raise ModelError(f"{broken}: it holds a {info.architecture_name} network; {hint}")
    return descriptor


def _device(requested: str) -> str:
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelError("--device cuda was asked for but no CUDA GPU is usable for face restoration; use --device cpu")
        return "cuda"
    return "cpu"


def _precision(device: str, descriptor: Any) -> str:
    """fp32 on the CPU; on a GPU bf16 where the GPU has it, else fp16, each only where spandrel says the
    architecture is safe in it (GFPGAN: bf16 yes, fp16 no)."""
    import torch

    if device != "cuda":
        return "fp32"
    if descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
        return "bf16"
    if descriptor.supports_half:
        return "fp16"
    return "fp32"


class GFPGANRestorer:
    """GFPGAN v1.4 (TencentARC) as spandrel builds it; inputs and outputs in [-1, 1] RGB, as it was trained."""

    def __init__(self, path: Path, device: str = "auto"):
        import torch

        self._torch = torch
        descriptor = _load_descriptor(Path(path))
        self.name = Path(path).name
        self.device = _device(device)
        self.precision = _precision(self.device, descriptor)
        self._dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self._net = descriptor.model.eval().to(self.device, self._dtype)
        del descriptor

    def batch_size(self) -> int:
        torch = self._torch
        if self.device != "cuda":
            return 1
        free, _ = torch.cuda.mem_get_info()
        per_face = FACE_BYTES_FP32 // (2 if self.precision != "fp32" else 1)
        # Half of what is free, so the photo's own arrays and other processes keep room.
        return int(max(1, min(MAX_BATCH, (free // 2) // per_face)))

    def restore(self, faces: np.ndarray) -> np.ndarray:
        torch = self._torch
        rgb = np.ascontiguousarray(faces[..., ::-1].transpose(0, 3, 1, 2))
        x = torch.from_numpy(rgb).to(self.device).to(self._dtype) / 127.5 - 1.0
        try:
            with torch.inference_mode():
                out = self._net(x, return_rgb=False)[0]
        except torch.cuda.OutOfMemoryError:
            raise OutOfMemoryError("the GPU ran out of memory restoring faces; run with fewer jobs at once or --device cpu") from None
        out = ((out.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return np.ascontiguousarray(out.cpu().numpy().transpose(0, 2, 3, 1)[..., ::-1])

    def close(self) -> None:
        self._net = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()
