"""Restoring faded colour before enlarging: each channel's black and white points (white balance and levels)."""

from __future__ import annotations

import dataclasses

import numpy as np

from infer.images import DecodedImage

# Percentiles taken as each channel's black and white points: the darkest and brightest 0.5% may clip, so that
# a few specks of dust or a glint do not decide the levels.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# The sign of fading looked for is lost blacks: the darkest part of an aged print turns grey or coloured in every
# channel. Below FADED_FROM grey levels (the channels' black points on average) a photo is left exactly as it is;
# from FULLY_FADED up it is restored fully; between, the restored and the original are blended. A photo with deep
# shadows is thus visibly unchanged, even a dim one without whites (chelsea: black points 6, 17, 25); the average,
# not the darkest, so that a strong cast that kept one channel's blacks still counts.
FADED_FROM = 18.0
FULLY_FADED = 32.0
MAX_GAIN = 3.0  # a channel is never stretched more than this (a photo of one colour keeps it)
# Channels closer than this on average (grey levels) are a black-and-white photo scanned in colour.
GREY_SPREAD = 2.0
_SAMPLE = 1_000_000  # pixels the percentiles are read from


def _sample(bgr: np.ndarray) -> np.ndarray:
    """Up to about `_SAMPLE` pixels of the photo (N x 3), evenly spread."""
    flat = bgr.reshape(-1, 3)
    step = max(1, flat.shape[0] // _SAMPLE)
    return flat[::step]


def is_grey(bgr: np.ndarray) -> bool:
    """Whether a BGR photo has no colour to speak of."""
    sample = _sample(bgr).astype(np.int16)
    spread = np.abs(sample[:, 0] - sample[:, 1]).mean() + np.abs(sample[:, 1] - sample[:, 2]).mean()
    return float(spread) / 2 < GREY_SPREAD


def _levels(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(low), float(high)


def restore_bgr(bgr: np.ndarray, grayscale: bool = False) -> np.ndarray:
    """The photo with its faded colour restored, or the same array where it shows no fading.

    Each channel's black and white points are stretched to 0 and 255: an aged print's colour cast (a dye faded
    more than the others) and its lowered contrast both undo so. A faded photo that was dim to begin with comes
    back brighter than it was: nothing in it tells how bright its whites were. A grey photo (or a colour scan of
    one) gets one stretch for all three channels and stays grey."""
    sample = _sample(bgr)
    grey = grayscale or is_grey(bgr)
    if grey:
        points = [_levels(sample.mean(axis=1))] * 3
    else:
        points = [_levels(sample[:, c]) for c in range(3)]
    lifted = sum(low for low, _ in points) / 3
    strength = float(np.clip((lifted - FADED_FROM) / (FULLY_FADED - FADED_FROM), 0.0, 1.0))
    if strength == 0.0:
        return bgr
    table = np.empty((3, 256), np.uint8)
    levels = np.arange(256, dtype=np.float32)
    for c, (low, high) in enumerate(points):
        gain = min(MAX_GAIN, 255.0 / max(high - low, 1.0))
        stretched = np.clip((levels - low) * gain, 0, 255)
        table[c] = np.rint(levels + strength * (stretched - levels)).astype(np.uint8)
    out = np.empty_like(bgr)
    for c in range(3):
        out[..., c] = table[c][bgr[..., c]]
    return out


def restore_image(image: DecodedImage) -> DecodedImage:
    """The photo with its colour restored; alpha, profile and metadata untouched."""
    restored = restore_bgr(image.bgr, image.grayscale)
    return image if restored is image.bgr else dataclasses.replace(image, bgr=restored)
