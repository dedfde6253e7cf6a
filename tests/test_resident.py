"""A process's own resident memory: the worker's reported peak is its own, whatever started it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from infer import resident
from tests.helpers import REPO_ROOT, WORKER

# A parent far larger than the job: the job's peak (FSRCNN on a 600x400 photo, about 240 MB) must not read as it.
PARENT_MB = 1500

_PARENT = """
import json, subprocess, sys
import numpy as np
held = np.ones({mb} * 2**20, dtype=np.uint8)  # resident while the worker is spawned and runs
proc = subprocess.run([sys.executable, *sys.argv[1:]], capture_output=True, text=True)
assert proc.returncode == 0, proc.stderr
done = json.loads(proc.stdout.splitlines()[-1])
status = open("/proc/self/status").read()
print(json.dumps({{"worker_peak_mb": done["peak_rss_mb"], "held": int(held[-1]),
                  "parent_peak_mb": [int(l.split()[1]) / 1024 for l in status.splitlines() if l.startswith("VmHWM")][0]}}))
"""


def test_a_workers_peak_is_its_own_not_the_process_that_started_it(shared_models: Path, shared_photos: Path,
                                                                   tmp_path: Path) -> None:
    """Spawned from a process holding 1.5 GB (as a test runner or a Ray worker may), the job reports what it took."""
    out = tmp_path / "coffee_x3.png"
    proc = subprocess.run([sys.executable, "-c", _PARENT.format(mb=PARENT_MB), str(WORKER), "--input",
                           str(shared_photos / "coffee.png"), "--output", str(out), "--model",
                           str(shared_models / "FSRCNN_x3.pb"), "--engine", "opencv", "--json"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["parent_peak_mb"] > PARENT_MB
    assert 30 < got["worker_peak_mb"] < PARENT_MB / 2, got
    assert out.stat().st_size > 0


def test_the_peak_follows_memory_held_and_starts_afresh_when_reset() -> None:
    resident.reset_peak()
    start = resident.rss_mb()
    block = np.ones(256 * 2**20, dtype=np.uint8)  # touched: all of it resident
    held = resident.rss_mb()
    del block
    after = resident.rss_mb()
    peak = resident.peak_rss_mb()
    assert held - start > 200 and peak > held - 5 and after < held - 200, (start, held, after, peak)
    assert resident.reset_peak()
    assert resident.peak_rss_mb() < peak - 200


def test_the_peak_is_read_from_the_status_the_kernel_gives() -> None:
    status = "Name:\tpython\nVmPeak:\t 9000000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t  262144 kB\n"
    assert resident.peak_rss_mb(status) == 512.0 and resident.rss_mb(status) == 256.0
