"""Split an image into overlapping tiles, upscale each, and stitch the cores back without seams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# How far the network is through the window it runs, 0..1: said within a long window.
StepFn = Callable[[float], None]
# Tiles done (a fraction within a window that said how far it is) and tiles in all.
ProgressFn = Callable[[float, int], None]
# A window's upscaled output; it may say how far through the window it is.
TileFn = Callable[[np.ndarray, StepFn | None], np.ndarray]
# Brings a core's output (H x W or H x W x C) down to (width, height): the reduction of a model's output to a
# smaller written scale.
ReduceFn = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class Tile:
    """One tile: the core it contributes to the output, and the larger window the network sees.

    Coordinates are input pixels, half-open: rows [y0, y1), columns [x0, x1).
    """

    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    window: tuple[int, int, int, int]


def _up(n: int, align: int) -> int:
    return -(-n // align) * align


def _spans(length: int, tile: int, pad: int, align: int = 1) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Core and window spans along one axis.

    The axis is cut into the fewest cores of at most `tile` pixels, all of (nearly) equal length,
    so a short leftover core never costs a whole window. Every window has the same length
    (core + 2*pad, at most the axis): one that would run past the edge is shifted back inside
    rather than cut short, so the network sees one tile shape for the whole image (no
    re-allocation between tiles) and every core keeps `pad` pixels of real context on each side
    that has any. With `align` (a multiple of which `length` is), cores and context are whole multiples of it,
    so every window starts on the grid the whole-photo forward partitions the image on.
    """
    if tile <= 0 or tile >= length:
        return [((0, length), (0, length))]
    count = -(-length // tile)
    core = _up(-(-length // count), align)
    pad = _up(pad, align)
    win = min(length, core + 2 * pad)
    spans = []
    for c0 in range(0, length, core):
        c1 = min(c0 + core, length)
        w0 = min(max(c0 - pad, 0), length - win)
        spans.append(((c0, c1), (w0, w0 + win)))
    return spans


def aligned_size(height: int, width: int, align: int) -> tuple[int, int]:
    """The image's size padded up to whole multiples of `align` (what `run_tiled` tiles)."""
    return _up(height, align), _up(width, align)


def plan_tiles(height: int, width: int, tile: int, pad: int, align: int = 1) -> list[Tile]:
    """Tiles in row-major order over the image padded to multiples of `align`; tile <= 0 means one tile covering
    the whole image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    pad = max(0, pad)
    height, width = aligned_size(height, width, align)
    tiles = []
    for (cy, wy) in _spans(height, tile, pad, align):
        for (cx, wx) in _spans(width, tile, pad, align):
            tiles.append(Tile(core=(cy[0], cy[1], cx[0], cx[1]), window=(wy[0], wy[1], wx[0], wx[1])))
    return tiles


# A window's progress stops short of its end, which is said once the tile is pasted.
_BEFORE_END = 0.999


def _within(on_progress: ProgressFn | None, index: int, count: int) -> StepFn | None:
    """Tile `index`'s share of the progress: a fraction of it, never the whole (its end is said once, after it)."""
    if on_progress is None:
        return None
    return lambda part: on_progress(index + min(max(part, 0.0), _BEFORE_END), count)


def run_tiled(
    image: np.ndarray,
    fn: TileFn,
    scale: int,
    tile: int,
    pad: int,
    on_progress: ProgressFn | None = None,
    out_dtype: np.dtype | type | None = None,
    outscale: int | None = None,
    reduce: ReduceFn | None = None,
    align: int = 1,
) -> np.ndarray:
    """Apply `fn` (a x`scale` upscaler of H x W x C arrays) tile by tile and stitch the result; `on_progress`
    hears of each tile done and, where `fn` says how far it is, of the way through one.

    Only one window and its output exist at a time besides the input and the output arrays,
    so memory used by `fn` is bounded by the tile size whatever the image size. With `outscale` below
    `scale`, `reduce` brings each core's output down to `outscale` as it is pasted, so the full-scale
    image never exists: a core's edges are whole input pixels, which fall on pixel edges at both scales,
    so each reduced core is what reducing the whole image gives there.
    """
    outscale = outscale or scale
    if outscale != scale and reduce is None:
        raise ValueError(f"writing x{outscale} from a x{scale} upscaler needs a reduce function")
    if image.ndim != 3:
        raise ValueError("run_tiled expects an H x W x C array")
    height, width = image.shape[:2]
    padded_h, padded_w = aligned_size(height, width, align)
    if (padded_h, padded_w) != (height, width):
        mode = "reflect" if padded_h - height < height and padded_w - width < width else "edge"
        image = np.pad(image, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode=mode)
    tiles = plan_tiles(height, width, tile, pad, align)
    out: np.ndarray | None = None
    for index, t in enumerate(tiles):
        wy0, wy1, wx0, wx1 = t.window
        cy0, cy1, cx0, cx1 = t.core
        result = fn(image[wy0:wy1, wx0:wx1], _within(on_progress, index, len(tiles)))
        expected = ((wy1 - wy0) * scale, (wx1 - wx0) * scale)
        if result.shape[:2] != expected:
            raise ValueError(f"tile function returned {result.shape[:2]}, expected {expected}")
        oy, ox = (cy0 - wy0) * scale, (cx0 - wx0) * scale
        core = result[oy : oy + (cy1 - cy0) * scale, ox : ox + (cx1 - cx0) * scale]
        if outscale != scale:
            assert reduce is not None
            core = reduce(core, (cx1 - cx0) * outscale, (cy1 - cy0) * outscale)
        if core.ndim == 2:
            core = core[:, :, None]
        if out is None:
            out = np.empty((padded_h * outscale, padded_w * outscale, core.shape[2]), dtype=out_dtype or core.dtype)
        out[cy0 * outscale : cy1 * outscale, cx0 * outscale : cx1 * outscale] = core
        del result, core
        if on_progress is not None:
            on_progress(index + 1, len(tiles))
    assert out is not None
    return out if (padded_h, padded_w) == (height, width) else np.ascontiguousarray(out[: height * outscale, : width * outscale])
