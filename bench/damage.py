"""A seeded generator of old-print damage for the repair benchmark: scratches, dust, a torn corner, fading.

Every choice comes from one `numpy.random.Generator`, so a seed gives the same damage on the same photo.

- Scratches: 4 straight and 3 curved (a quadratic Bezier through a random control point) a photo, 1-3 px wide,
  25-70% of the photo's shorter side long, each either bright (the emulsion scraped
  off: 225-255) or dark (dirt in the scratch: 10-45), laid over the photo at 85-100% opacity.
- Dust: 40 specks, 1-6 px across, round or slightly oval, bright or dark alike.
- A torn corner: one corner's jagged triangle, 12-20% of the shorter side deep, the colour of the paper behind it.
- Fading: each channel's contrast lowered to 55-75% around a mid level and shifted towards a warm cast (cyan dye
  fades first in aged prints, leaving them orange or magenta).

Scratches and dust are grey, as on real prints (paper base showing, dirt, dust); the detector relies on that
(infer/scratches.py, step 2), so coloured damage is outside what this benchmark measures. It relies too on
damage being about as light as the photo's white or as dark as its black (step 3): the shades here are, but a
mid-grey scratch would be missed, and this benchmark does not measure that either.

The damage mask (`Damage.mask`) holds every pixel the generator changed by more than `VISIBLE` grey levels in any
channel: a scratch drawn over pixels of its own colour changed nothing a detector could see, and is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

VISIBLE = 12  # grey levels: a pixel changed by less is not damage anyone could see
_SCRATCH_LENGTH = (0.25, 0.7)  # of the photo's shorter side
_PAPER = (236, 240, 243)  # BGR: the off-white card behind a torn print


@dataclass(frozen=True)
class Damage:
    """A damaged copy of a photo and where it was damaged (H x W bool), by kind."""

    bgr: np.ndarray
    scratches: np.ndarray
    dust: np.ndarray
    torn: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.scratches | self.dust | self.torn


def _shade(rng: np.random.Generator) -> float:
    return float(rng.uniform(225, 255)) if rng.random() < 0.5 else float(rng.uniform(10, 45))


def _lay(bgr: np.ndarray, drawn: np.ndarray, shade: float, opacity: float) -> None:
    """Lays a grey `shade` over the pixels `drawn` marks, in place."""
    where = drawn > 0
    bgr[where] = np.clip(bgr[where] * (1 - opacity) + shade * opacity, 0, 255).astype(np.uint8)


def _scratch_points(rng: np.random.Generator, h: int, w: int, curved: bool) -> np.ndarray:
    length = rng.uniform(*_SCRATCH_LENGTH) * min(h, w)
    angle = rng.uniform(0, np.pi)
    x0, y0 = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
    if not curved:
        return np.array([[x0, y0], [x1, y1]])
    bend = rng.uniform(0.15, 0.35) * length * rng.choice([-1, 1])
    cx, cy = (x0 + x1) / 2 - bend * np.sin(angle), (y0 + y1) / 2 + bend * np.cos(angle)
    t = np.linspace(0, 1, 40)[:, None]
    return (1 - t) ** 2 * [x0, y0] + 2 * (1 - t) * t * [cx, cy] + t**2 * [x1, y1]


def damage(bgr: np.ndarray, seed: int, scratches: bool = True, dust: bool = True, torn: bool = True) -> Damage:
    """The photo with the damage the flags ask for, seeded."""
    rng = np.random.default_rng(seed)
    h, w = bgr.shape[:2]
    out = bgr.copy()
    scratch_mask = np.zeros((h, w), np.uint8)
    dust_mask = np.zeros((h, w), np.uint8)
    torn_mask = np.zeros((h, w), np.uint8)
    if scratches:
        for curved in [False] * 4 + [True] * 3:
            drawn = np.zeros((h, w), np.uint8)
            points = np.round(_scratch_points(rng, h, w, curved)).astype(np.int32)
            cv2.polylines(drawn, [points], False, 255, int(rng.integers(1, 4)), lineType=cv2.LINE_8)
            _lay(out, drawn, _shade(rng), float(rng.uniform(0.85, 1.0)))
            scratch_mask |= drawn
    if dust:
        for _ in range(40):
            drawn = np.zeros((h, w), np.uint8)
            size = float(rng.uniform(1, 6))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if size < 2:
                drawn[centre[1], centre[0]] = 255
            else:
                axes = (max(1, round(size / 2)), max(1, round(size / 2 * rng.uniform(0.6, 1.0))))
                cv2.ellipse(drawn, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
            _lay(out, drawn, _shade(rng), float(rng.uniform(0.85, 1.0)))
            dust_mask |= drawn
    if torn:
        depth = rng.uniform(0.12, 0.2) * min(h, w)
        steps = np.linspace(0, 1, 14)
        edge = [(depth * s + rng.uniform(-0.08, 0.08) * depth, depth * (1 - s) + rng.uniform(-0.08, 0.08) * depth)
                for s in steps]
        polygon = np.array([(0, 0)] + [(max(0.0, x), max(0.0, y)) for x, y in edge], np.float64)
        corner = int(rng.integers(0, 4))
        if corner in (1, 2):
            polygon[:, 0] = w - 1 - polygon[:, 0]
        if corner in (2, 3):
            polygon[:, 1] = h - 1 - polygon[:, 1]
        cv2.fillPoly(torn_mask, [np.round(polygon).astype(np.int32)], 255)
        out[torn_mask > 0] = _PAPER
    changed = np.abs(out.astype(np.int16) - bgr).max(axis=2) > VISIBLE
    return Damage(out, (scratch_mask > 0) & changed, (dust_mask > 0) & changed & (scratch_mask == 0),
                  (torn_mask > 0) & changed)


@dataclass(frozen=True)
class Fading:
    """Per-channel (B, G, R) contrast and the level each channel fades towards."""

    contrast: tuple[float, float, float]
    towards: tuple[float, float, float]


def fading(seed: int) -> Fading:
    """A seeded warm fade: blue loses the most, red the least, all towards a yellow-orange-magenta veil."""
    rng = np.random.default_rng(seed)
    base = float(rng.uniform(0.55, 0.75))
    contrast = (base * rng.uniform(0.85, 0.95), base * rng.uniform(0.95, 1.05), min(0.9, base * rng.uniform(1.05, 1.2)))
    towards = (float(rng.uniform(90, 120)), float(rng.uniform(120, 150)), float(rng.uniform(160, 200)))
    return Fading(tuple(float(c) for c in contrast), towards)  # type: ignore[arg-type]


def fade(bgr: np.ndarray, how: Fading) -> np.ndarray:
    """The photo faded: each channel c becomes contrast * c + (1 - contrast) * towards."""
    out = bgr.astype(np.float32)
    for c in range(3):
        out[..., c] = how.contrast[c] * out[..., c] + (1 - how.contrast[c]) * how.towards[c]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
