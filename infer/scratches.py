"""Automatic detection of scratches and dust in a photo: thin lines and small specks against their surroundings.

How a pixel is marked (on the luminance, in grey levels; bright and dark damage each on its own):

1. Morphological top-hats with a 9 px disc find what is brighter (white top-hat: the photo minus its opening) or
   darker (black top-hat: its closing minus the photo) than its surroundings and narrower than the disc: lines up
   to about 7 px wide and specks up to about 8 px across. Edges between wide areas, and wider things (an eye, a
   letter's bowl), give nothing.
2. Damage is neutral: a scratch that took the emulsion off shows the white paper base, dirt in it and dust are
   grey or black. A pixel more colourful than `max_chroma` (CIELAB chroma) belongs to the picture: this is what
   keeps most of a colour photo's own thin lines (a coloured rim, a badge's outline, a suit's seam) unmarked.
   Coloured damage (a scratch down to a colour print's lower dye layer) is therefore not found; paint it. Grey
   damage laid over strong colour at less than full opacity keeps a part of that colour: a pixel with at most
   `faded_chroma` of the median chroma around it (over the top-hat's disc) counts as grey too. This raised
   coffee's recall from 0.81 to 0.84 (the dark scratches across its red saucer) for the same precision, and
   left the other photos within 0.002; a share of 0.15 found less (0.81), 0.25 lost precision (0.94); the median
   over 15 or 31 px instead of 9 lost precision on coffee (0.93) and astronaut (0.79 with 31). In a
   black-and-white photo every pixel is neutral and only the steps below decide.
3. Shade: a scratch to the paper base is about as light as the print's white, dirt and dust about as dark as
   its black. Bright damage must lie within `shade_margin` of the photo's range (its 0.5 and 99.5 percentiles
   of luminance) from its white point, dark damage as near its black point; a scratch over grey picture (the
   median chroma in the 31 px window around it no more than `max_chroma`) within `grey_shade_margin`. This is
   what keeps most of a black-and-white photo's own thin mid-grey lines unmarked, where step 2 cannot: measured
   before steps 6 and 8 took their present form, one margin of 0.3 raised precision from 0.33 to 0.47 on camera
   and from 0.54 to 0.80 on astronaut for a recall 0.02-0.04 lower (bench/bench_repair.py, seeds 1-3). With the
   other steps as they are, a scratch's margin of 0.2 instead of 0.3 raised camera's precision from 0.62 to
   0.75, the clean camera through the repair from 32.2 to 35.9 dB and the repair's gain from 5.4 to 6.2 dB, for
   a recall 0.89 to 0.83 (the tripod's lit legs, the collar and the coat's folds are a shade short of
   damage's). Applied everywhere, it cost astronaut's recall 0.81 to 0.80 (a dark scratch laid at 85-90% across the
   orange suit ends up lighter than that); held to grey picture, astronaut's recall is 0.83 and nothing else
   changes (within 9 px instead of 31: 0.815). A speck over grey picture lies within `grey_speck_margin`: at
   0.25 instead of 0.3 camera's precision rose from 0.75 to 0.76 and its clean photo through the repair from
   35.9 to 36.2 dB (the tripod handle's knob, dark bits of the trees and buildings on the horizon); at 0.2
   astronaut's dust recall fell from 0.80 to 0.76 (specks laid at 85% over picture of the other shade).
4. A pixel stands out where its top-hat is above `min_contrast` and above `texture_ratio` times the median
   top-hat in a 31 px window around it. Hair, fur, grass, fabric and text are thin and contrasted too, but they
   come many together, which raises their window's median (a scratch fills too little of it to); a scratch or
   a speck lies alone on smoother picture.
5. Line filter: a scratch is a long, nearly straight run of such pixels. An opening with a line `line_length` px
   long at 24 angles (every 7.5 degrees) keeps the pixels that lie on such a run whose two sides agree; a
   curved scratch bends little over that length. Short strokes (letters, single hairs, a fabric's weave) are
   shorter and go.
6. Pairs: a thin object in the picture is lit on one side and shaded on the other (a tripod's metal leg on
   camera: a dark line and a bright one side by side); a scratch lies on the picture alone. A run from step 5
   that has a run of the other polarity (its top-hat over `min_contrast`, neutral, on a line) within
   `pair_distance` px for more than half of its pixels is picture. Measured before step 8's present form, on
   camera this raised precision from 0.47 to 0.66 (recall 0.90 to 0.85) and the clean photo through the repair
   from 27.7 to 32.0 dB; on astronaut recall fell from 0.80 to 0.77, where slivers of the white shuttle cut by a
   dark scratch pair it.
7. Hysteresis: where a scratch crosses picture of nearly its own shade, or busier picture, it stands out by
   less. Runs found the same way with the lower thresholds `faint_contrast` and `faint_ratio` (and no colour
   or shade other than step 2's) are kept where they join a run from step 5 of the same shade, across gaps up to
   `GAP` px (where the scratch crosses an edge, neither top-hat sees it). A dark scratch over a black table is
   lighter than the table: a faint run of either polarity joins, as long as its pixels have the seed's shade.
   Nothing joins within `pair_distance` px of a run that step 6 took for picture.
8. Blob filter: a speck is a group of pixels standing out as in step 4 but from `speck_contrast` (a speck is
   judged as a whole: its size and its being alone), no larger than `max_speck_area` and no side over
   `max_speck_side`, with little else standing out within `speck_clearance` px (dust lies alone; fine detail
   does not): other standing-out pixels there up to `speck_company` of the speck's own area (a grain or the
   edge of a second speck beside it), and none within 2 px of a scratch found by steps 5-7 (dust lying on or
   beside a scratch is still dust). From 30 grey levels instead of 60, and up to 50 px instead of 40 (a round
   speck 8 px across), dust recall rose from 0.66 to 0.72 on astronaut, 0.75 to 0.87 on chelsea and 0.59 to 0.66
   on coffee, at a precision 0.01 lower. Not counting a found scratch as a neighbour raised recall from 0.78 to 0.79 on
   astronaut and coffee and 0.94 to 0.95 on chelsea (precision 0.01 lower on astronaut); then the company of
   a fifth of the area raised dust recall from 0.73 to 0.80 (astronaut), 0.91 to 0.95 (chelsea) and 0.70 to
   0.77 (coffee), precision 0.78 to 0.77 on astronaut and 0.63 to 0.61 on camera, the clean astronaut through
   the repair 36.95 to 36.73 dB (a quarter: recall +0.00-0.01 more, precision 0.75, a third: 0.74). Ignoring
   2 px around a scratch rather than 1 (step 3 at 0.2 everywhere, step 9 as it is): recall 0.796 to 0.803 on
   astronaut, dust recall 0.95 to 0.96 on chelsea.
9. Edge: a found pixel's neutral neighbours of a scratch's shade (step 3) whose top-hat is over `grow_ratio`
   times `min_contrast` (90 grey levels) join it: the pieces of a scratch that its line or speck filter dropped
   where it crossed busier picture. This is not a widening: a neighbour that does not stand out that much stays
   picture. Held to the shade (a margin of 0.3 then), the growth no longer runs along a black-and-white photo's
   own lines from what was found beside them: camera's precision rose from 0.61 to 0.63, its clean photo through
   the repair from 31.6 to 32.2 dB and the repair's gain from 4.9 to 5.4 dB; astronaut's precision from 0.77 to
   0.79 and its clean photo from 36.7 to 37.6 dB.

What it cannot tell apart: a thin straight neutral line that belongs to the picture and is as light or as dark
as damage and has no shaded side (step 6) is marked like a scratch.

The repair fills exactly this mask (see `infer.repair.auto_mask`). It never
marks a torn corner or a large stain: paint those into a repair mask. Measured with bench/bench_repair.py
(docs/benchmarks.md, "Repairing old photos").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

DISC = 9  # the top-hats' structuring element: wider than any speck or scratch it should find
WINDOW = 31  # the window whose median top-hat measures how busy the surroundings are
ANGLES = 24
PAIRED = 0.5  # a line beside a line of the other polarity for more than this part of its length is an object
GAP = 5  # px: a scratch's faint stretch joins its clear part across a gap this wide (where it crosses an edge)


@dataclass(frozen=True)
class Limits:
    """The thresholds and shape limits of the detection (defaults measured with bench/bench_repair.py)."""

    min_contrast: float = 60.0  # grey levels a pixel stands out from its surroundings
    texture_ratio: float = 4.0  # times the median top-hat around it
    line_length: int = 31
    max_speck_area: int = 50  # px: a round speck `max_speck_side` across
    max_speck_side: int = 8
    speck_clearance: int = 4
    speck_company: float = 0.2  # within the clearance, other standing-out pixels up to this part of a speck's area
    side_offset: int = 5  # px across a line to either side
    side_agreement: float = 0.5  # the sides may differ by this part of the line's top-hat
    max_chroma: float = 8.0  # CIELAB chroma: a pixel more colourful than this is picture, not damage
    faded_chroma: float = 0.2  # unless its chroma is at most this part of its surroundings' (grey laid over colour)
    grow_ratio: float = 1.5  # a found pixel's neutral neighbour joins where its top-hat is this many times min_contrast
    faint_contrast: float = 15.0  # a scratch's faint stretch: its top-hat over this, joined to a clear stretch
    faint_ratio: float = 3.0  # and over this many times the median top-hat around it
    speck_contrast: float = 30.0  # a speck's pixels stand out by this much (its shape and isolation decide)
    pair_distance: int = 3  # px: how near a line of the other polarity makes a pair (step 6)
    shade_margin: float = 0.3  # damage lies within this part of the photo's range from its white or black point
    grey_shade_margin: float = 0.2  # and a scratch over grey picture within this part
    grey_speck_margin: float = 0.25  # and a speck over grey picture within this part


LIMITS = Limits()


@lru_cache(maxsize=8)
def _line_kernels(length: int) -> tuple[np.ndarray, ...]:
    kernels = []
    half = (length - 1) / 2
    for i in range(ANGLES):
        angle = np.pi * i / ANGLES
        kernel = np.zeros((length, length), np.uint8)
        c = int(half)
        dx, dy = np.cos(angle) * half, np.sin(angle) * half
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1, 1, lineType=cv2.LINE_8)
        kernels.append(kernel)
    return tuple(kernels)


def _busy(tophat: np.ndarray) -> np.ndarray:
    # The median, not the mean: a scratch fills a few pixels of its window and does not raise it; texture does.
    return cv2.medianBlur(np.clip(tophat, 0, 255).astype(np.uint8), WINDOW).astype(np.float32)


def _standing_out(tophat: np.ndarray, busy: np.ndarray, contrast: float, ratio: float) -> np.ndarray:
    """Pixels of one top-hat above both thresholds (uint8 0/1)."""
    return (tophat > np.maximum(contrast, ratio * busy)).astype(np.uint8)


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The image at the points (x, y), bilinear, edges repeated."""
    rows, cols = image.shape
    x = np.clip(x, 0, cols - 1)
    y = np.clip(y, 0, rows - 1)
    x0 = np.minimum(x.astype(np.int32), cols - 2) if cols > 1 else np.zeros(x.shape, np.int32)
    y0 = np.minimum(y.astype(np.int32), rows - 2) if rows > 1 else np.zeros(y.shape, np.int32)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, cols - 1), np.minimum(y0 + 1, rows - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _lines(standing: np.ndarray, tophat: np.ndarray, smooth: np.ndarray, limits: Limits) -> np.ndarray:
    """Standing-out pixels on a straight run at least `line_length` long whose two sides agree (bool).

    The run may wander by a pixel. The sides are the photo `side_offset` px away across the run: a scratch
    crosses the picture, which goes on alike on both sides of it; an outline or a rim between two different
    areas (a collar, a plate's edge) has a different area on each side and is left alone."""
    loose = cv2.dilate(standing, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(standing)
    x, y = xs.astype(np.float32), ys.astype(np.float32)
    level = tophat[ys, xs] * limits.side_agreement
    kept = np.zeros(ys.size, bool)
    d = limits.side_offset
    for i, kernel in enumerate(_line_kernels(limits.line_length)):
        on_line = cv2.dilate(cv2.erode(loose, kernel), kernel)[ys, xs] > 0
        todo = np.flatnonzero(on_line & ~kept)
        if todo.size == 0:
            continue
        angle = np.pi * i / ANGLES
        nx, ny = -np.sin(angle) * d, np.cos(angle) * d
        # Only the candidates' sides are read: a full shifted copy of the photo per angle cost most of the time.
        tx, ty = x[todo], y[todo]
        sides = np.abs(_sample(smooth, tx + nx, ty + ny) - _sample(smooth, tx - nx, ty - ny))
        kept[todo[sides < level[todo]]] = True
    found = np.zeros(standing.shape, bool)
    found[ys[kept], xs[kept]] = True
    return found


def _specks(standing: np.ndarray, limits: Limits) -> np.ndarray:
    """Small groups of standing-out pixels with little else standing out within the clearance (bool)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(standing, connectivity=8)
    x, y, w, h, area = (stats[:, i] for i in range(5))
    small = (area <= limits.max_speck_area) & (np.maximum(w, h) <= limits.max_speck_side)
    small[0] = False
    # Alone: the standing-out pixels in the group's box widened by the clearance are the group's own, but for a
    # grain or two beside a larger speck.
    summed = cv2.integral(standing)
    c = limits.speck_clearance
    rows, cols = standing.shape
    x0, y0 = np.clip(x - c, 0, cols), np.clip(y - c, 0, rows)
    x1, y1 = np.clip(x + w + c, 0, cols), np.clip(y + h + c, 0, rows)
    around = summed[y1, x1] - summed[y0, x1] - summed[y1, x0] + summed[y0, x0]
    keep = small & (around <= area * (1 + limits.speck_company))
    return keep[labels]


def _linked(candidates: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 8-connected groups of `candidates | seeds` that hold a seed (bool): hysteresis."""
    both = candidates | seeds
    bridged = cv2.dilate(both.astype(np.uint8), np.ones((GAP, GAP), np.uint8))
    count, labels = cv2.connectedComponents(bridged, connectivity=8)
    held = np.zeros(count, bool)
    held[labels[seeds]] = True
    held[0] = False
    return held[labels] & both


def _unpaired(lines: np.ndarray, beside: np.ndarray) -> np.ndarray:
    """The groups of `lines` (8-connected) that have a line of the other polarity beside them for at most half of
    their pixels (bool)."""
    count, labels = cv2.connectedComponents(lines.astype(np.uint8), connectivity=8)
    total = np.bincount(labels.ravel(), minlength=count)
    along = np.bincount(labels[beside], minlength=count)
    keep = along <= PAIRED * total
    keep[0] = False
    return keep[labels]


def _chroma_around(chroma: np.ndarray, size: int) -> np.ndarray:
    """The median chroma in a `size` px window around each pixel: a scratch or a speck fills less than half of it."""
    return cv2.medianBlur(np.clip(chroma, 0, 255).astype(np.uint8), size).astype(np.float32)


def _neutral(chroma: np.ndarray, limits: Limits) -> np.ndarray:
    """Pixels grey enough to be damage (bool): of little chroma, or of much less than the picture around them."""
    return (chroma <= limits.max_chroma) | (chroma <= limits.faded_chroma * _chroma_around(chroma, DISC))


def _shades(gray: np.ndarray, low: float, high: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Where bright damage and where dark damage may lie: within `margin` of the range from its white or black point."""
    reach = margin * max(high - low, 1.0)
    return gray >= high - reach, gray <= low + reach


def _either(where: np.ndarray, these: tuple[np.ndarray, ...], those: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """`these` where `where` holds, else `those`, mask by mask."""
    return tuple(np.where(where, a, b) for a, b in zip(these, those))


def detect_damage(bgr: np.ndarray, limits: Limits = LIMITS) -> np.ndarray:
    """H x W bool: the scratches and dust found in a BGR uint8 photo (a grey photo as three equal channels)."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (DISC, DISC))
    smooth = cv2.blur(gray, (3, 3))
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab).astype(np.float32)
    chroma = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128)
    neutral = _neutral(chroma, limits)
    low, high = (float(v) for v in np.percentile(gray[::2, ::2], [0.5, 99.5]))
    # Over colourful picture step 2 already tells damage from picture; over grey picture the shade must.
    over_grey = _chroma_around(chroma, WINDOW) <= limits.max_chroma
    over_colour = _shades(gray, low, high, limits.shade_margin)
    shades = _either(over_grey, _shades(gray, low, high, limits.grey_shade_margin), over_colour)
    speck_shades = _either(over_grey, _shades(gray, low, high, limits.grey_speck_margin), over_colour)
    tophats = [cv2.morphologyEx(gray, op, disc) for op in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT)]
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * limits.pair_distance + 1, 2 * limits.pair_distance + 1))
    contrasted = [_lines((t > limits.min_contrast).astype(np.uint8) & neutral, t, smooth, limits) for t in tophats]
    paired = [cv2.dilate(c.astype(np.uint8), near) > 0 for c in contrasted[::-1]]
    seeds, faint, dots = [], [], []
    edge = np.zeros(gray.shape, bool)
    for tophat, shaded, speck_shaded, beside in zip(tophats, shades, speck_shades, paired):
        busy = _busy(tophat)
        standing = _standing_out(tophat, busy, limits.min_contrast, limits.texture_ratio) & neutral & shaded
        dots.append(_standing_out(tophat, busy, limits.speck_contrast, limits.texture_ratio) & neutral & speck_shaded)
        lines = _lines(standing, tophat, smooth, limits)
        seeds.append(_unpaired(lines, beside))
        dropped = cv2.dilate((lines & ~seeds[-1]).astype(np.uint8), near) > 0
        weak = _standing_out(tophat, busy, limits.faint_contrast, limits.faint_ratio) & neutral & ~dropped
        faint.append(_lines(weak, tophat, smooth, limits))
        edge |= (tophat > limits.grow_ratio * limits.min_contrast) & neutral & shaded
    # A scratch keeps its shade along its length, whatever it crosses: over picture darker than itself it is a
    # bright line, over lighter picture a dark one.
    either = faint[0] | faint[1]
    scratches = _linked(either & shades[0], seeds[0]) | _linked(either & shades[1], seeds[1])
    # A scratch found is no speck's neighbour: dust lying on or beside a scratch is still dust.
    off_scratch = ~(cv2.dilate(scratches.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    specks = _specks(dots[0] & off_scratch, limits) | _specks(dots[1] & off_scratch, limits)
    seen = specks | scratches
    # The damage's own edge (step 9).
    return seen | (cv2.dilate(seen.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & edge
