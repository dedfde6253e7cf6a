"""Helpers shared by the worker benchmarks: fixtures, test crops, child processes with their peak RSS, image metrics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from infer import REPO_ROOT
from infer.huge_pages import VARIABLE as THP_VARIABLE

sys.path.insert(0, str(REPO_ROOT))  # the fixture generator lives in tests/, which is not installed
from tests.fixtures.edsr_graph import write_edsr_graph  # noqa: E402

SHARED_DIR = REPO_ROOT.parent / "shared"
PHOTOS_DIR = SHARED_DIR / "photos"
SHARED_MODELS_DIR = SHARED_DIR / "models"
OUT_DIR = REPO_ROOT / "bench" / "out"
BENCH_DIR = REPO_ROOT / "bench"
# Allocation settings the huge-page benchmarks compare, as environments for a child process: `4k` none (a capped
# worker's), `thp` PyTorch's request for its tensors of 2 MB and more (an uncapped worker's), `huge` glibc's for
# all its memory, `heap` and `no-mmap` no separate mappings at all (the heap never trimmed), with and without
# glibc's huge pages.
_NEVER_TRIM = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
ALLOCATION_SETTINGS = {
    "4k": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", THP_VARIABLE: "0"},
    "thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", THP_VARIABLE: "1"},
    "huge": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", THP_VARIABLE: "0"},
    "heap": {"GLIBC_TUNABLES": f"glibc.malloc.hugetlb=1:{_NEVER_TRIM}", THP_VARIABLE: "0"},
    "no-mmap": {"GLIBC_TUNABLES": f"glibc.malloc.hugetlb=0:{_NEVER_TRIM}", THP_VARIABLE: "0"},
}
# The published EDSR_x3.pb: 32 residual blocks of 256 filters.
FULL_BLOCKS, FULL_FILTERS = 32, 256
# Photos with colour, used wherever a benchmark runs "on the shared photos".
COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea")


def edsr_fixture(full: bool = True, out_dir: Path = OUT_DIR) -> Path:
    """The EDSR-layout x3 fixture, written once and cached: full size (32x256) or tiny (2x16).

    Written under a temporary name and renamed, so an interrupted run never leaves half a model behind.
    """
    blocks, filters = (FULL_BLOCKS, FULL_FILTERS) if full else (2, 16)
    path = out_dir / ("edsr_full" if full else "edsr_tiny") / "EDSR_x3.pb"
    if not path.is_file():
        tmp = path.with_name(f".EDSR_x3.{os.getpid()}.pb")
        write_edsr_graph(tmp, blocks=blocks, filters=filters, scale=3, quantize=True, seed=0)
        os.replace(tmp, path)
    return path


def shared_model(name: str) -> Path:
    path = SHARED_MODELS_DIR / f"{name}.pb"
    if not path.is_file():
        raise SystemExit(f"{path} not found: put the shared test data folder beside the repository")
    return path


def photo_path(name: str) -> Path:
    """A shared photo by name (`astronaut`), or any image file given by its path."""
    if Path(name).suffix and Path(name).is_file():
        return Path(name)
    path = PHOTOS_DIR / f"{name}.png"
    if not path.is_file():
        raise SystemExit(f"{path} not found: put the shared test data folder beside the repository")
    return path


def read_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img


def tiled_window(bgr: np.ndarray, size: int) -> np.ndarray:
    """A size x size RGB window of `bgr`, the photo repeated where it is smaller than the window."""
    reps = -(-size // min(bgr.shape[:2]))
    return np.ascontiguousarray(np.tile(bgr, (reps, reps, 1))[:size, :size, ::-1])


def centre_crop(name: str, height: int, width: int | None = None, out_dir: Path = OUT_DIR / "inputs") -> Path:
    """A centre crop of a shared photo as a PNG file (cached); refuses crops larger than the photo."""
    width = width or height
    path = out_dir / f"{Path(name).stem}_{width}x{height}.png"
    if path.is_file():
        return path
    img = read_bgr(photo_path(name))
    h, w = img.shape[:2]
    if height > h or width > w:
        raise SystemExit(f"{name} is {w}x{h}; cannot crop {width}x{height}")
    y0, x0 = (h - height) // 2, (w - width) // 2
    out_dir.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img[y0 : y0 + height, x0 : x0 + width]):
        raise SystemExit(f"cannot write {path}")
    return path


@dataclass
class ChildRun:
    """One finished child process: exit status, wall time from spawn to exit, and its own peak RSS."""

    cmd: list[str]
    returncode: int
    seconds: float
    cpu_seconds: float  # user + system time of the child, all its threads
    peak_rss_mb: float | None  # the child's own (its last `peak_rss_mb`, infer/resident.py); None if it gave none
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)

    def check(self) -> ChildRun:
        if self.returncode != 0:
            raise SystemExit(f"{' '.join(self.cmd)} exited with {self.returncode}:\n{self.stderr[-2000:]}")
        return self


def run_child(cmd: list[str], cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> ChildRun:
    """Runs `cmd` and reaps it with wait4(), which returns the CPU time of that one child.

    The peak is the one the child reports (the worker's `done` event, a benchmark child's last line): its own
    high-water mark (`VmHWM`). wait4's ru_maxrss is not used: the kernel carries this process's peak over
    into the child at exec, so every child would read at least this process's size.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    events = []
    for line in stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    cpu = usage.ru_utime + usage.ru_stime
    peaks = [e["peak_rss_mb"] for e in events if isinstance(e, dict) and "peak_rss_mb" in e]
    return ChildRun(cmd, proc.returncode, seconds, cpu, peaks[-1] if peaks else None, stdout, stderr, events)


def worker_cmd(input_path: Path, output_path: Path, model: Path, *extra: str, engine: str = "opencv") -> list[str]:
    """The real worker on the CPU, as the web front end starts it (OpenCV's engine unless told otherwise)."""
    script = Path(sys.executable).with_name("sr-infer")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "infer.sr_infer"]
    return head + [
        "--input", str(input_path), "--output", str(output_path), "--model", str(model),
        "--engine", engine, "--device", "cpu", *extra,
    ]


def naive_cmd(input_path: Path, output_path: Path, model: Path, algo: str, scale: int) -> list[str]:
    """cv2.dnn_superres upsample() of the whole image in a fresh process (bench/dnn_superres_upsample.py)."""
    return [
        sys.executable, str(BENCH_DIR / "dnn_superres_upsample.py"),
        "--input", str(input_path), "--output", str(output_path), "--model", str(model),
        "--algo", algo, "--scale", str(scale),
    ]


def time_forwards(engine: Any, window: np.ndarray, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (all threads of this process) of `repeats` forwards of one window."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        engine.run(window)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB over every sample; inf when identical."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def fmt_psnr(value: float) -> str:
    return "identical" if value == float("inf") else f"{value:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
