"""Colour handling around the network, exactly as OpenCV's dnn_superres does it, applied tile by tile."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import cv2
import numpy as np

from infer.engines import Engine
from infer.errors import ModelError
from infer.families import Colour
from infer.images import DecodedImage
from infer.modelspec import ModelSpec
from infer.tiling import ProgressFn, StepFn, TileFn, plan_tiles, run_tiled

_INV_255 = np.float32(1.0 / 255.0)
# Bilinear chroma upscaling needs one input pixel of context beyond each tile core.
_LUMA_MIN_PAD = 2
# Bicubic alpha reads two input pixels beyond each output pixel's position.
_ALPHA_PAD = 2


def _to_uint8(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """`x * scale` rounded half to even and saturated to 0..255, as bytes; overwrites `x` (always an array of
    its own here: the engine's fresh output). Two passes where rint, clip and astype take four with three
    temporary arrays: those were a fifth of a 2 MP photo's `infer` stage with the Compact model."""
    np.maximum(x, 0, out=x)  # convertScaleAbs takes the absolute value: what is below 0 must be 0 first
    return cv2.convertScaleAbs(x, alpha=scale)


def tile_function(engine: Engine, spec: ModelSpec) -> TileFn:
    """A function mapping a BGR uint8 window to its BGR uint8 upscaled window, saying how far the network is."""
    scale = spec.scale

    def check(out: np.ndarray, window: np.ndarray) -> np.ndarray:
        expected = (window.shape[0] * scale, window.shape[1] * scale)
        if out.shape[:2] != expected:
            got = out.shape[0] / max(window.shape[0], 1)
            raise ModelError(
                f"{spec.path.name} upscales x{got:g}, not x{scale}; "
                "pass the model's real factor with --scale or rename the file (e.g. EDSR_x3.pb)"
            )
        return out

    if spec.family.colour is Colour.RGB:
        # PyTorch checkpoints: RGB in 0..1 in and out.
        def rgb(window: np.ndarray, on_step: StepFn | None = None) -> np.ndarray:
            x = cv2.cvtColor(window, cv2.COLOR_BGR2RGB).astype(np.float32) * _INV_255
            out = check(engine.run(x, on_step), window)
            return cv2.cvtColor(_to_uint8(out, 255.0), cv2.COLOR_RGB2BGR)

        return rgb

    if not spec.uses_luma:
        # EDSR: BGR minus the family's mean (DIV2K's) in, the mean added back out.
        mean = np.array(spec.family.mean_bgr or (0.0, 0.0, 0.0), dtype=np.float32)

        def bgr(window: np.ndarray, on_step: StepFn | None = None) -> np.ndarray:
            out = check(engine.run(window.astype(np.float32) - mean, on_step), window)
            out += mean
            return _to_uint8(out)

        return bgr

    # ESPCN, FSRCNN, LapSRN: the network sees Y/255; Cr and Cb are resized bilinearly
    # (cv::resize's default, which is what dnn_superres uses).
    def luma(window: np.ndarray, on_step: StepFn | None = None) -> np.ndarray:
        ycc = cv2.cvtColor(window, cv2.COLOR_BGR2YCrCb).astype(np.float32) * _INV_255
        y = check(engine.run(ycc[:, :, :1], on_step), window)
        size = (window.shape[1] * scale, window.shape[0] * scale)
        cr = cv2.resize(ycc[:, :, 1], size, interpolation=cv2.INTER_LINEAR)
        cb = cv2.resize(ycc[:, :, 2], size, interpolation=cv2.INTER_LINEAR)
        merged = np.dstack([y.reshape(size[1], size[0]), cr, cb])
        return cv2.cvtColor(_to_uint8(merged, 255.0), cv2.COLOR_YCrCb2BGR)

    return luma


def effective_pad(spec: ModelSpec, tile_pad: int) -> int:
    return max(tile_pad, _LUMA_MIN_PAD) if spec.uses_luma else max(tile_pad, 0)


def count_tiles(height: int, width: int, tile: int, tile_pad: int, align: int = 1) -> int:
    return len(plan_tiles(height, width, tile, tile_pad, align))


def _area(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging, which neither rings nor aliases: how a model's output is brought down to a smaller scale."""
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


def upscale_bgr(
    bgr: np.ndarray,
    engine: Engine,
    spec: ModelSpec,
    tile: int,
    tile_pad: int,
    on_progress: ProgressFn | None = None,
    outscale: int | None = None,
) -> np.ndarray:
    """Upscale a BGR uint8 image by the model's factor, `tile` x `tile` input pixels at a time; with
    `outscale` below it, each tile's output is reduced to that scale as it is pasted."""
    fn = tile_function(engine, spec)
    return run_tiled(bgr, fn, spec.scale, tile, effective_pad(spec, tile_pad), on_progress, np.uint8,
                     outscale, _area, spec.family.tile_align)


def _upscale_alpha(alpha: np.ndarray, scale: int, tile: int, outscale: int) -> np.ndarray:
    """Alpha bicubically, over the same tiles as the colour (each window has the context bicubic reads, so the
    result is the whole-image resize's), reduced alike."""
    def cubic(window: np.ndarray, _on_step: StepFn | None = None) -> np.ndarray:
        size = (window.shape[1] * scale, window.shape[0] * scale)
        return cv2.resize(window, size, interpolation=cv2.INTER_CUBIC)

    return run_tiled(alpha[:, :, None], cubic, scale, tile, _ALPHA_PAD, None, np.uint8, outscale, _area)[:, :, 0]


@dataclass(frozen=True)
class TilePlan:
    """How a photo goes through the network: the input tile edge, its context, and the scale it is written at
    (None: the model's own)."""

    tile: int
    pad: int
    outscale: int | None = None


def upscale_image(image: DecodedImage, engine: Engine, spec: ModelSpec, plan: TilePlan,
                  on_progress: ProgressFn | None = None) -> DecodedImage:
    """Upscale colour through the network and alpha (if any) bicubically, written at the plan's scale;
    metadata rides along."""
    outscale = plan.outscale or spec.scale
    bgr = upscale_bgr(image.bgr, engine, spec, plan.tile, plan.pad, on_progress, outscale)
    alpha = None if image.alpha is None else _upscale_alpha(image.alpha, spec.scale, plan.tile, outscale)
    return dataclasses.replace(image, bgr=bgr, alpha=alpha)


def describe_run(spec: ModelSpec, outscale: int) -> str:
    """What ran, in words for the job and the page: "RealESRGAN Compact x4, reduced to 3x"."""
    name = spec.checkpoint.architecture_name if spec.checkpoint is not None else spec.family.display_name
    said = f"{name} x{spec.scale}"
    return said if outscale == spec.scale else f"{said}, reduced to {outscale}x"
