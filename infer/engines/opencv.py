"""OpenCV dnn engine: runs the TensorFlow graph with OpenCV's own CPU (or, where built in, CUDA) backend."""

from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np

from infer.errors import ModelError, OutOfMemoryError, unusable_model
from infer import precision as precision_policy
from infer.modelspec import ModelSpec
from infer.precision import Precision
from infer.tiling import StepFn


def cuda_device_count() -> int:
    """CUDA devices this OpenCV build can use (0 for the wheels on the package index)."""
    try:
        return int(cv2.cuda.getCudaEnabledDeviceCount())
    except (AttributeError, cv2.error):
        return 0


def _is_oom(err: cv2.error) -> bool:
    text = str(err).lower()
    return "insufficient memory" in text or "failed to allocate" in text or "out of memory" in text


def usable(device: str) -> bool:
    return device == "cpu" or cuda_device_count() > 0


class OpenCVEngine:
    """cv2.dnn on the CPU (fp32 only), or on CUDA (fp32, fp16) only when OpenCV itself reports CUDA devices."""

    name = "opencv"

    def __init__(self, device: str = "cpu", precision: str = "auto", auto_half: tuple[str, ...] = ("fp16",)):
        if device == "cuda" and cuda_device_count() == 0:
            raise ModelError(
                "this OpenCV build has no CUDA support (the wheels on the package index never do); "
                "use --engine torch for the GPU, or --device cpu"
            )
        self.device = device
        self.note: str | None = None
        supported = (Precision.FP32, Precision.FP16) if device == "cuda" else (Precision.FP32,)
        self.precision = precision_policy.choose(
            precision, device, native_bf16=False, supported=supported, auto_half=auto_half, engine="OpenCV's engine"
        ).value
        self._net: cv2.dnn.Net | None = None
        self._tiles = 0

    def load(self, spec: ModelSpec) -> None:
        # Creating a DnnSuperResImpl registers dnn_superres's own DepthToSpace layer for the whole
        # process. Without it OpenCV's generic layer refuses these graphs ("blocksize is required"),
        # and with it the sub-pixel channel order is exactly dnn_superres's.
        cv2.dnn_superres.DnnSuperResImpl_create()
        try:
            net = cv2.dnn.readNetFromTensorflow(str(spec.path))
        except cv2.error as err:
            raise unusable_model(spec.path, f"OpenCV cannot read it: {_first_line(err)}") from err
        if net.empty():
            # OpenCV reads some damaged files as a graph with no layers rather than failing.
            raise unusable_model(spec.path, "OpenCV finds no network in it")
        if self.device == "cuda":
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            fp16 = self.precision == "fp16"
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA_FP16 if fp16 else cv2.dnn.DNN_TARGET_CUDA)
        else:
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self._net = net

    def run(self, tile: np.ndarray, on_step: StepFn | None = None) -> np.ndarray:
        # OpenCV's forward is one call: it cannot say how far it is, so `on_step` is never called.
        if self._net is None:
            raise RuntimeError("load() a model before run()")
        blob = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
        try:
            self._net.setInput(blob)
            out = self._net.forward()
        except cv2.error as err:
            if _is_oom(err):
                raise OutOfMemoryError(
                    f"ran out of memory on a {tile.shape[1]}x{tile.shape[0]} tile; try a smaller --tile"
                ) from err
            raise ModelError(f"the model failed to run ({_first_line(err)}); is it a super-resolution model?") from err
        self._tiles += 1
        if out.ndim != 4:
            raise ModelError(f"the model's output has shape {out.shape}; expected an image (N, C, H, W)")
        return out[0].transpose(1, 2, 0)

    def preferred_tile(self, spec: ModelSpec, budget: int | None = None) -> int | None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"tiles_run": self._tiles}

    def close(self) -> None:
        self._net = None


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(err).__name__
    print(f"opencv: {err}", file=sys.stderr)
    return msg[:200]
