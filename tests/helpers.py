"""Helpers shared by the worker tests: run the real worker process and read its events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from infer import REPO_ROOT

WORKER = REPO_ROOT / "infer" / "sr_infer.py"


def run_worker(*args: str | Path, env: dict | None = None, preexec_fn=None, timeout: float = 600) -> tuple[int, list[dict], str]:
    """Runs `infer/sr_infer.py` with no SR_* variables but those given; returns exit code, events, stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(WORKER), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env, preexec_fn=preexec_fn,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, events, proc.stderr


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image
