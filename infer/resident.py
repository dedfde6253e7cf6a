"""This process's own resident memory, now and at its peak, for the `done` event and the benchmarks (standard
library only).

The peak is Linux's `VmHWM`, the high-water mark of this process's address space, which starts afresh at exec.
`getrusage`'s `ru_maxrss` does not: the kernel carries the spawning process's peak over into the new program, so
a worker started from a test runner holding 3 GB reported a 3 GB peak for a job that took 1.9, and a benchmark's
children all read at least their parent's size.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str, status: str | None) -> float | None:
    try:
        text = status if status is not None else STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return int(value.split()[0]) / 1024.0
    return None


def peak_rss_mb(status: str | None = None) -> float:
    """The most memory this process has held resident, in MB: `VmHWM` (or the text given), else `ru_maxrss`
    where there is no /proc (which then may include the spawning process's peak)."""
    peak = _status_mb("VmHWM", status)
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024.0  # bytes on macOS, KB on Linux
    return round(peak, 1)


def rss_mb(status: str | None = None) -> float:
    """The memory this process holds resident now, in MB (`VmRSS`); 0 where there is no /proc."""
    return round(_status_mb("VmRSS", status) or 0.0, 1)


def reset_peak() -> bool:
    """Starts the peak afresh from what is resident now (Linux 4.0 and later); False where it cannot."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
