"""This CPU's measured convolution rates in fp32 and bf16, read once per machine: whether bf16 pays here.

A CPU flag says bf16 instructions exist, not that they are fast: an AMD EPYC with AVX512_BF16 multiplies matrices 2.5x
faster in bf16 than in fp32, while an Intel Xeon with the same flag and no AMX runs oneDNN's bf16 convolutions at
0.55x its fp32 ones (docs/benchmarks.md, "Precision by measurement"). So `--precision auto` runs bf16 on the CPU only where a probe
measured it faster. The probe is a 3x3 convolution of 64 channels, channels-last, the shape that dominates the
ESRGAN, Compact and EDSR families; it takes about 0.2 s and is kept per machine, PyTorch version and thread count
in a JSON file of the worker's cache folder. Never run it in the preloaded launcher itself: a tensor operation
there would start the OpenMP pool its forked jobs hang on (infer/zygote.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from infer import precision as precision_policy

# bf16 must beat fp32 by this much to be chosen: it costs accuracy (50-60 dB against fp32 on a trained EDSR,
# tests/test_precision.py), so a tie, or a lead within the probe's run-to-run spread (about 10% on a shared
# machine), goes to fp32.
BF16_LEAD = 1.15
CACHE_NAME = "cpu-rates.json"
_CHANNELS = 64
_SIZE = 96
_ROUNDS = 5  # interleaved; each format's best round counts, which load from other processes lowers least


@dataclass(frozen=True)
class ConvRates:
    """GFLOP/s of the probe convolution in each format, and whether they were read from the cache."""

    fp32: float
    bf16: float
    cached: bool = False

    @property
    def bf16_pays(self) -> bool:
        return self.fp32 > 0 and self.bf16 >= BF16_LEAD * self.fp32  # 0: not measured

    def to_json(self) -> dict[str, float]:
        return {"fp32_gflops": round(self.fp32, 1), "bf16_gflops": round(self.bf16, 1)}


def cache_dir() -> Path:
    """$SR_CACHE_DIR, else $XDG_CACHE_HOME/photo-upscaler, else ~/.cache/photo-upscaler."""
    explicit = os.environ.get("SR_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "photo-upscaler"


def machine_key(threads: int | None = None) -> str:
    """What the rates depend on: the CPU model and flags, the PyTorch version and the thread count."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    flags = hashlib.sha256(" ".join(sorted(precision_policy.cpu_flags())).encode()).hexdigest()[:12]
    return f"{model or 'unknown cpu'} | flags {flags} | torch {torch.__version__} | {threads or torch.get_num_threads()} threads"


def _rate(dtype: torch.dtype, conv: torch.nn.Module, x: torch.Tensor, flops: float) -> float:
    conv = conv.to(dtype)
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    conv(x)  # oneDNN builds its kernel on the first call
    t = time.perf_counter()
    conv(x)
    conv(x)
    return 2 * flops / (time.perf_counter() - t) / 1e9


def measure() -> ConvRates:
    """The probe, now: the best of `_ROUNDS` interleaved rounds in each format."""
    conv = torch.nn.Conv2d(_CHANNELS, _CHANNELS, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, _CHANNELS, _SIZE, _SIZE)
    flops = 2.0 * 9 * _CHANNELS * _CHANNELS * _SIZE * _SIZE
    best = {torch.float32: 0.0, torch.bfloat16: 0.0}
    with torch.inference_mode():
        for _ in range(_ROUNDS):
            for dtype in best:
                best[dtype] = max(best[dtype], _rate(dtype, conv, x, flops))
    return ConvRates(fp32=best[torch.float32], bf16=best[torch.bfloat16])


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict) -> None:
    """Atomically, or not at all: a cache that cannot be written only costs the probe again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cpu-rates-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:
        print(f"sr-infer: cannot keep the CPU's measured rates in {path} ({err}); measuring again next job", file=sys.stderr)


def rates() -> ConvRates:
    """This machine's rates from the cache, else measured now and kept."""
    path = cache_dir() / CACHE_NAME
    key = machine_key()
    data = _read(path)
    entry = data.get(key)
    try:
        return ConvRates(fp32=float(entry["fp32_gflops"]), bf16=float(entry["bf16_gflops"]), cached=True)
    except (TypeError, KeyError, ValueError):
        pass
    try:
        measured = measure()
    except (RuntimeError, MemoryError) as err:  # oneDNN says only "could not create a primitive" when memory is short
        print(f"sr-infer: could not time the CPU's convolutions ({type(err).__name__}: {err}); running fp32", file=sys.stderr)
        return ConvRates(fp32=0.0, bf16=0.0)
    _write(path, {**data, key: {**measured.to_json(), "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
    return measured


def bf16_pays() -> tuple[bool, ConvRates | None]:
    """Whether `auto` should run bf16 on this CPU, and the rates that decided it (None: no native bf16 at all)."""
    if not precision_policy.cpu_has_native_bf16():
        return False, None
    measured = rates()
    return measured.bf16_pays, measured

