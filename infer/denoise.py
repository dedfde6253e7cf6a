"""Noise and JPEG-artifact reduction before upscaling: OpenCV's non-local means at two strengths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from infer.contract import DENOISE_LEVELS, Denoise
from infer.errors import UsageError
from infer.images import DecodedImage

__all__ = ["DENOISE_LEVELS", "Denoise", "denoise_bgr", "denoise_image", "parse_level"]


@dataclass(frozen=True)
class NlmSettings:
    """Arguments of cv2.fastNlMeansDenoisingColored (strengths for luminance and colour, window edges)."""

    h: float
    h_color: float
    template: int = 7
    search: int = 21


# Chosen with bench/bench_denoise.py on real photos (docs/benchmarks.md, "Denoise levels"): light is the
# best setting for mild grain (+3.3 dB at sigma 10) and JPEG damage, and neutral on a quality-30 JPEG;
# strong is the best for heavy grain (+5.8 dB at sigma 20, +6.1 at 30) but smooths clean JPEGs. The
# 11-pixel search window runs twice as fast as OpenCV's 21 for the same or better PSNR.
SETTINGS: dict[Denoise, NlmSettings] = {
    Denoise.LIGHT: NlmSettings(h=5, h_color=5, template=7, search=11),
    Denoise.STRONG: NlmSettings(h=15, h_color=15, template=7, search=11),
}


def parse_level(value: str) -> Denoise:
    """The level for a flag value; UsageError (exit 2) listing the valid ones otherwise."""
    try:
        return Denoise(value.strip().lower())
    except ValueError:
        raise UsageError(f"--denoise must be one of {', '.join(DENOISE_LEVELS)}, not {value!r}") from None


def denoise_bgr(bgr: np.ndarray, level: Denoise, grayscale: bool = False) -> np.ndarray:
    """The denoised copy of a BGR uint8 picture (the same array for `off`)."""
    if level is Denoise.OFF:
        return bgr
    s = SETTINGS[level]
    if grayscale:
        gray = cv2.fastNlMeansDenoising(np.ascontiguousarray(bgr[:, :, 0]), None, s.h, s.template, s.search)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return cv2.fastNlMeansDenoisingColored(bgr, None, s.h, s.h_color, s.template, s.search)


def denoise_image(image: DecodedImage, level: Denoise) -> DecodedImage:
    """The photo with its colour denoised; alpha, profile and metadata untouched."""
    if level is Denoise.OFF:
        return image
    return dataclasses.replace(image, bgr=denoise_bgr(image.bgr, level, image.grayscale))
