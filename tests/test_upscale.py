"""Results to bytes around the network: rounded half to even and saturated, the same bytes as the plain numpy way."""

from __future__ import annotations

import numpy as np
import pytest

from infer.upscale import _to_uint8


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_results_round_half_to_even_and_saturate(scale: float):
    rng = np.random.default_rng(3)
    values = rng.uniform(-40, 300, (64, 96, 3)).astype(np.float32) / np.float32(scale)
    # Exact halves (2.5 -> 2, 3.5 -> 4), the ends and just past them.
    edges = np.array([-0.5, 0.49, 0.5, 1.5, 2.5, 3.5, 254.5, 255.0, 255.5, 256.0, 1e6, -1e6], np.float32)
    values[0, : edges.size, 0] = edges / np.float32(scale)
    expected = np.clip(np.rint(values * np.float32(scale)), 0, 255).astype(np.uint8)
    got = _to_uint8(values.copy(), scale)
    assert got.dtype == np.uint8 and got.shape == values.shape
    assert np.array_equal(got, expected)
    assert list(got[0, : edges.size, 0]) == [0, 0, 0, 2, 2, 4, 254, 255, 255, 255, 255, 0]
