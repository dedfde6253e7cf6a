"""Tile planning covers every pixel once and stitching reproduces whole-image results."""

import numpy as np
import pytest

from infer.tiling import plan_tiles, run_tiled


def nearest_x3(a: np.ndarray) -> np.ndarray:
    return a.repeat(3, axis=0).repeat(3, axis=1)


def box_then_nearest(a: np.ndarray, on_step=None) -> np.ndarray:
    """A 3x3 mean with zero padding (like a SAME convolution), then x3: receptive radius 1."""
    p = np.pad(a.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    h, w = a.shape[:2]
    acc = sum(p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    return nearest_x3(acc)


@pytest.mark.parametrize("h,w,tile,pad", [(1, 1, 4, 2), (1, 9, 4, 2), (37, 53, 16, 5), (64, 64, 16, 0), (10, 10, 64, 8), (33, 17, 8, 20)])
def test_cores_cover_every_pixel_exactly_once(h, w, tile, pad):
    count = np.zeros((h, w), dtype=int)
    tiles = plan_tiles(h, w, tile, pad)
    shapes = set()
    for t in tiles:
        cy0, cy1, cx0, cx1 = t.core
        wy0, wy1, wx0, wx1 = t.window
        count[cy0:cy1, cx0:cx1] += 1
        assert 0 <= wy0 <= cy0 < cy1 <= wy1 <= h and 0 <= wx0 <= cx0 < cx1 <= wx1 <= w
        # every side keeps `pad` pixels of context unless it touches the image border
        assert cy0 - wy0 >= pad or wy0 == 0
        assert wy1 - cy1 >= pad or wy1 == h
        assert cx0 - wx0 >= pad or wx0 == 0
        assert wx1 - cx1 >= pad or wx1 == w
        shapes.add((wy1 - wy0, wx1 - wx0))
    assert (count == 1).all()
    assert len(shapes) == 1, "all windows share one shape so the network never re-allocates"


def test_zero_tile_means_whole_image():
    assert len(plan_tiles(300, 200, 0, 10)) == 1


def test_stitching_is_exact_when_pad_covers_the_receptive_field():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(41, 67, 3)).astype(np.float64)
    whole = box_then_nearest(img)
    seen = []
    tiled = run_tiled(img, box_then_nearest, 3, tile=16, pad=1, on_progress=lambda d, t: seen.append((d, t)))
    assert tiled.shape == (123, 201, 3)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-9)
    assert seen == [(i + 1, len(seen)) for i in range(len(seen))] and len(seen) == 3 * 5


def test_stitching_without_context_shows_seams():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(40, 40, 3)).astype(np.float64)
    tiled = run_tiled(img, box_then_nearest, 3, tile=16, pad=0)
    assert np.abs(tiled - box_then_nearest(img)).max() > 1.0


def test_wrong_scale_from_tile_function_is_reported():
    with pytest.raises(ValueError, match="expected"):
        run_tiled(np.zeros((8, 8, 1)), lambda a, _on_step: a, 3, tile=4, pad=1)


def test_leftover_cores_are_spread_not_padded_to_a_whole_window():
    # 288 px at tile 256: two cores of 144, not one of 256 plus one of 32 in a full window each.
    tiles = plan_tiles(288, 288, 256, 24)
    assert len(tiles) == 4
    assert {t.core[1] - t.core[0] for t in tiles} == {144}
    wy0, wy1, wx0, wx1 = tiles[0].window
    assert (wy1 - wy0, wx1 - wx0) == (192, 192)


@pytest.mark.parametrize("h,w,tile,pad,align", [(71, 157, 40, 8, 8), (71, 157, 40, 8, 32), (47, 61, 24, 16, 16)])
def test_aligned_windows_start_on_the_grid_and_crop_back_exactly(h, w, tile, pad, align):
    """A window-attention network's tiles: every window starts on the align grid of the photo padded to it, and
    the stitched result is the unpadded photo's size, equal to the whole-image result of a local function."""
    for t in plan_tiles(h, w, tile, pad, align):
        assert all(v % align == 0 for v in (*t.core, *t.window)), t
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3)).astype(np.float64)
    out = run_tiled(image, box_then_nearest, 3, tile, pad, align=align)
    padded = np.pad(image, ((0, -h % align), (0, -w % align), (0, 0)), mode="reflect")
    assert out.shape == (h * 3, w * 3, 3)
    np.testing.assert_allclose(out, box_then_nearest(padded)[: h * 3, : w * 3])


def test_a_window_that_says_how_far_it_is_moves_progress_within_its_tile_never_to_its_end():
    """Each window reports halfway and then past its end; progress hears the first as half a tile and the second
    held short of the tile's end, which is said once, after the tile is pasted."""
    def reporting(a, on_step):
        on_step(0.5)
        on_step(1.0)
        return box_then_nearest(a)

    seen = []
    run_tiled(np.zeros((20, 20, 1)), reporting, 3, tile=10, pad=1, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[:3] == [(0.5, 4), (0.999, 4), (1, 4)]
    assert [d for d, _ in seen] == [i + f for i in range(4) for f in (0.5, 0.999, 1)]
    assert sorted(d for d, _ in seen) == [d for d, _ in seen]
