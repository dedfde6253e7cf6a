"""How much memory one window of a job's network may take on the CPU, and the tile that fits it (standard library
only): the job's cap (SR_WORKER_MEMORY_MB) where one is set, else a default the machine can spare."""

from __future__ import annotations

import math
from pathlib import Path

# The job's cap, in MB of address space beyond what its libraries map; 0 or unset: no cap.
CAP_VARIABLE = "SR_WORKER_MEMORY_MB"
# Without a cap, one window's activations may take up to this much, or half the memory the machine has
# available where that is less. With the libraries and weights (about 0.45 GB resident for PyTorch and
# RealESRGAN_x4plus) a job then stays within 1.5 GB: docs/benchmarks.md, "Windows from memory".
DEFAULT_WINDOW_MB = 1024
# What a cap (an address-space limit) leaves aside beyond the photo's own arrays: the C allocator's per-thread
# arenas reserve 64 MB of address space each, and oneDNN its scratchpads. Measured with Compact on a 512x512
# photo: a 160 MB cap ran out with windows adding 45 MB resident, a 250 MB cap ran windows of 288.
_RESERVE_MB = 192
# Never plan a window smaller than this, whatever the budget says: below it the context dominates.
MIN_TILE = 64


def available_bytes(meminfo: str | None = None) -> int | None:
    """MemAvailable from /proc/meminfo (or the text given), None where it cannot be read."""
    try:
        text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            return int(value.split()[0]) * 1024
    return None


def photo_bytes(height: int, width: int, outscale: int) -> int:
    """The photo's own arrays while it is enlarged: the 8-bit input and the 8-bit result, three channels."""
    return 3 * height * width * (1 + outscale * outscale)


def window_budget(cap_mb: int, height: int, width: int, outscale: int, meminfo: str | None = None) -> int:
    """Bytes one window's forward may add: the cap less the photo's arrays and a reserve, else the default
    (bounded by half of what the machine has available)."""
    if cap_mb > 0:
        budget = (cap_mb - _RESERVE_MB) * 2**20 - photo_bytes(height, width, outscale)
    else:
        budget = DEFAULT_WINDOW_MB * 2**20
        free = available_bytes(meminfo)
        if free is not None:
            budget = min(budget, free // 2)
    return max(budget, 0)


def tile_for_budget(budget: int, bytes_per_px: float, pad: int, multiple: int = 16) -> int:
    """The input tile edge whose window (tile + 2 * pad, square) keeps within `budget` at `bytes_per_px` of
    the window, in steps of `multiple`; at least MIN_TILE."""
    edge = math.isqrt(int(budget / bytes_per_px)) if bytes_per_px > 0 else 0
    return max(MIN_TILE, (edge - 2 * pad) // multiple * multiple)
