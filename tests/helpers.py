"""Helpers shared by the worker tests: run the real worker process and read its events."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from infer import REPO_ROOT
from infer.contract import WORKER_SCRIPT
from tests.web.client import HttpClient

WORKER = WORKER_SCRIPT


@dataclass
class WorkerRun:
    """One run of the worker CLI: exit code, its JSON events, its stderr, and how long it took.
    Unpacks as `(exit_code, events, stderr)`."""

    exit_code: int
    events: list[dict]
    stderr: str
    seconds: float

    @property
    def last(self) -> dict:
        return self.events[-1] if self.events else {}

    def __iter__(self) -> Iterator[Any]:
        return iter((self.exit_code, self.events, self.stderr))


def run_worker(*args: str | Path, env: dict | None = None, preexec_fn: Callable[[], None] | None = None,
               timeout: float = 600, python_args: tuple[str, ...] | None = None) -> WorkerRun:
    """The worker as the service runs it: `infer/sr_infer.py ARGS` in its own process (or `python PYTHON_ARGS
    ARGS`), with no SR_* variables but those in `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    full_env.update(env or {})
    command = [sys.executable, *(python_args if python_args is not None else (str(WORKER),)), *map(str, args)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO_ROOT,
                          preexec_fn=preexec_fn, stdin=subprocess.DEVNULL)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return WorkerRun(proc.returncode, events, proc.stderr, time.monotonic() - started)


def auto_precision_on_cpu(done: dict, half_formats: tuple[str, ...] = ("bf16", "fp16")) -> str:
    """What `--precision auto` must have run on the CPU, from the convolution rates the worker reports measuring
    (none where the CPU has no native bf16 or the family takes no bf16: then fp32)."""
    from infer.engines.cpu_rates import BF16_LEAD

    rates = done.get("cpu_rates")
    if rates is None or "bf16" not in half_formats:
        return "fp32"
    fp32, bf16 = rates["fp32_gflops"], rates["bf16_gflops"]
    return "bf16" if fp32 > 0 and bf16 >= BF16_LEAD * fp32 else "fp32"


# The worker's libraries, which the front end must run without.
WORKER_LIBRARIES = ("cv2", "torch", "numpy", "spandrel")


def without_modules(code: str, blocked: tuple[str, ...] = WORKER_LIBRARIES) -> str:
    """`python -c` source that makes `blocked` (and their submodules) unimportable, then runs `code`.
    Only that process: the workers it starts import what they like."""
    return (
        "import importlib.abc, sys\n"
        "class _Blocked(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {tuple(blocked)!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)', name=name)\n"
        "sys.meta_path.insert(0, _Blocked())\n"
        f"{code}\n"
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def copy_checkout(target: Path) -> Path:
    """The tracked files and the untracked ones git does not ignore, as a clone has them (no venv, no data)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@dataclass(frozen=True)
class FreshInstall:
    """A virtualenv of its own (no system site-packages) with a copy of the checkout `pip install`ed into it."""

    env_dir: Path
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.env_dir / "bin" / "python"

    def installed(self, modules: tuple[str, ...]) -> list[str]:
        """Which of these top-level modules the virtualenv can import (found, not imported: one quick run)."""
        code = f"import importlib.util; print(' '.join(m for m in {modules!r} if importlib.util.find_spec(m)))"
        found = subprocess.run([str(self.python), "-c", code], env=self.env, capture_output=True, text=True,
                               timeout=120, check=True)
        return found.stdout.split()

    @contextlib.contextmanager
    def serve(self, log: Path, timeout: float = 90.0, **settings: str) -> Iterator[HttpClient]:
        """`sr-web --port 0` with these SR_* settings; stopped (and its exit status checked) afterwards."""
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(self.env_dir / "bin" / "sr-web"), "--port", "0"], env={**self.env, **settings},
                                    cwd=log.parent, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + timeout
            while not (found := re.search(rb"serving on http://127\.0\.0\.1:(\d+)/", log.read_bytes())):
                assert proc.poll() is None, f"sr-web exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
                assert time.monotonic() < deadline, f"sr-web did not start in {timeout} s:\n{log.read_text(errors='replace')}"
                time.sleep(0.1)
            yield HttpClient(f"http://127.0.0.1:{int(found.group(1))}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, log.read_text(errors="replace")


def install_fresh(tmp_path: Path, extras: str = "") -> FreshInstall:
    """`pip install .` (or `.[extras]`) of a copy of the checkout into a new virtualenv under `tmp_path`.
    pip's own cache (wheels downloaded and built before) keeps later runs fast."""
    checkout = copy_checkout(tmp_path / "checkout")
    env_dir = tmp_path / "venv"
    # Without pip of its own: this interpreter's pip installs into it (`--python`), which saves the
    # seconds ensurepip takes; the virtualenv still gets only the project and what it depends on.
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    # Nothing of the test's own environment: its PYTHONPATH would import this checkout instead.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SR_", "PYTHON", "VIRTUAL_ENV"))}
    target = f"{checkout}[{extras}]" if extras else str(checkout)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--disable-pip-version-check", "-q", target],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return FreshInstall(env_dir, env)


def install_face_model(gfpgan_file: Path, folder: Path) -> Path:
    """The scanned GFPGAN file hard-linked into `folder` (same size and time, so its record stays true) with its
    record beside it."""
    from infer.scans import record_path

    target = folder / gfpgan_file.name
    os.link(gfpgan_file, target)
    shutil.copy(record_path(gfpgan_file), record_path(target))
    return target


def dnn_superres(model: Path, algorithm: str, scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """The model run by OpenCV's dnn_superres in this process, on RGB uint8 arrays: the reference a result of the
    service or the worker is compared with."""
    net = cv2.dnn_superres.DnnSuperResImpl_create()
    net.readModel(str(model))
    net.setModel(algorithm, scale)
    return lambda rgb: net.upsample(np.ascontiguousarray(rgb[:, :, ::-1]))[:, :, ::-1]
