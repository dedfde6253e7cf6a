"""GPU benchmark for the torch engine: full-size EDSR x3 up to 2 MP, TFLOP/s against a measured matmul peak,
fp16 against fp32, and whole worker jobs with their gpu_seconds and device memory as NVML sees it from outside.

Run on any CUDA machine:  python bench/bench_gpu.py --json bench/out/gpu.json
(`--device cpu --sizes 32,48` is a smoke run of the same code paths on a machine without a GPU.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infer import REPO_ROOT  # noqa: E402
from infer.families import FAMILIES  # noqa: E402
from infer.modelspec import spec_from_path  # noqa: E402

DEFAULT_MODEL = REPO_ROOT / "bench" / "out" / "EDSR_x3.pb"
PHOTO = REPO_ROOT.parent / "shared" / "photos" / "astronaut.png"
WORKER = REPO_ROOT / "infer" / "sr_infer.py"
# Input edges: 0.25, 0.5, 1 and 2 megapixels.
DEFAULT_SIZES = "512,724,1024,1448"


def ensure_model(path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "tests.fixtures.edsr_graph", str(path)], check=True, cwd=REPO_ROOT)
    return path


def photo_bgr(edge: int) -> np.ndarray:
    """A real photo resized to edge x edge (bicubic), so outputs look like pictures and PSNR means something."""
    src = cv2.imread(str(PHOTO)) if PHOTO.exists() else np.random.default_rng(0).integers(0, 256, (512, 512, 3), np.uint8)
    return cv2.resize(src, (edge, edge), interpolation=cv2.INTER_CUBIC)


# --- device memory from outside the worker -----------------------------------------------------------


class DeviceMemory:
    """Used memory of GPU 0 and its compute processes, through NVML (nvidia-ml-py) or nvidia-smi."""

    def __init__(self, enabled: bool = True) -> None:
        self.source = "none"
        self._nvml = None
        if not enabled:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "NVML (pynvml)"
        except Exception:
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"

    def used_mb(self) -> float | None:
        if self._nvml is not None:
            return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
        if self.source == "nvidia-smi":
            out = subprocess.run(["nvidia-smi", "--id=0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
        return None

    def process_mb(self, pid: int) -> float | None:
        """Memory NVML attributes to `pid` (None when it holds none, i.e. it is not on the GPU)."""
        if self._nvml is not None:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == pid:
                    return (p.usedGpuMemory or 0) / 2**20
            return None
        if self.source == "nvidia-smi":
            out = subprocess.run(["nvidia-smi", "--id=0", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            for line in out.stdout.splitlines():
                fields = [f.strip() for f in line.split(",")]
                if fields and fields[0] == str(pid):
                    return float(fields[1])
        return None


@dataclass
class MemoryTrace:
    before_mb: float | None = None
    peak_mb: float | None = None
    peak_process_mb: float | None = None
    after_mb: float | None = None
    process_gone: bool | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)


def watch_job(cmd: list[str], memory: DeviceMemory, env: dict) -> tuple[subprocess.CompletedProcess, float, MemoryTrace]:
    """Run one worker, sampling device memory every 20 ms from this (separate) process."""
    trace = MemoryTrace(before_mb=memory.used_mb())
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.perf_counter()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            used = memory.used_mb()
            if used is not None:
                trace.samples.append((time.perf_counter() - t0, used))
                trace.peak_mb = max(trace.peak_mb or 0.0, used)
            mine = memory.process_mb(proc.pid)
            if mine is not None:
                trace.peak_process_mb = max(trace.peak_process_mb or 0.0, mine)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    # The driver frees a dead process's memory asynchronously: give it up to 5 s to come back to the baseline.
    deadline = time.perf_counter() + 5
    while True:
        trace.after_mb = memory.used_mb()
        settled = trace.before_mb is None or trace.after_mb is None or trace.after_mb <= trace.before_mb + 2
        if settled or time.perf_counter() > deadline:
            break
        time.sleep(0.1)
    trace.process_gone = memory.process_mb(proc.pid) is None if memory.source != "none" else None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, trace


# --- in-process measurements -----------------------------------------------------------------------------


def matmul_peak(torch, device: str, dtype, n: int = 8192, repeats: int = 10) -> float:
    """Dense matrix-multiply TFLOP/s: the ceiling convolutions are judged against."""
    if device == "cpu":
        n, repeats = 1024, 3
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(torch, device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(torch, device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e12


def sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bench_inference(model: Path, sizes: list[int], device: str, repeats: int) -> list[dict]:
    """Engine-level: one tile per image (the whole photo), fp16 and fp32, medians after a warm-up."""
    import torch

    from infer.engines.torch import TorchEngine

    spec = spec_from_path(model)
    mean = np.array(FAMILIES["edsr"].mean_bgr, np.float32)
    rows = []
    precisions = ("fp16", "fp32") if device == "cuda" else ("fp32",)
    engines = {}
    for precision in precisions:
        engine = TorchEngine(device=device, precision=precision)
        engine.load(spec)
        engines[precision] = engine
    macs = engines[precisions[0]]._plan.macs_per_pixel()
    for edge in sizes:
        x = photo_bgr(edge).astype(np.float32) - mean
        row: dict = {"edge": edge, "megapixels": edge * edge / 1e6, "tflop": 2 * macs * edge * edge / 1e12}
        images = {}
        for precision, engine in engines.items():
            engine.run(x)  # warm-up: cuDNN picks its kernels for this shape
            times = []
            for _ in range(repeats):
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                out = engine.run(x)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            row[precision] = {
                "median_s": med,
                "all_s": times,
                "tflops": row["tflop"] / med,
                "retries": engine.stats()["tile_retries"],
                "peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            }
            images[precision] = np.clip(np.rint(out + mean), 0, 255).astype(np.uint8)
            row.setdefault("_raw", {})[precision] = out
        if "fp16" in images:
            row["fp16_vs_fp32"] = {
                "max_abs_diff_float": float(np.abs(row["_raw"]["fp16"] - row["_raw"]["fp32"]).max()),
                "max_grey_diff": int(np.abs(images["fp16"].astype(int) - images["fp32"]).max()),
                "psnr_db": psnr(images["fp16"], images["fp32"]),
            }
        del row["_raw"]
        rows.append(row)
    for engine in engines.values():
        engine.close()
    return rows


def bench_jobs(model: Path, sizes: list[int], device: str, precision: str, memory: DeviceMemory) -> list[dict]:
    """Whole jobs through the real worker CLI, one process each, watched from outside."""
    rows = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    with tempfile.TemporaryDirectory() as tmp:
        for edge in sizes:
            src = Path(tmp) / f"in_{edge}.png"
            cv2.imwrite(str(src), photo_bgr(edge))
            out = Path(tmp) / f"out_{edge}.jpg"
            cmd = [sys.executable, str(WORKER), "--input", str(src), "--output", str(out), "--model", str(model),
                   "--engine", "torch", "--device", device, "--precision", precision]
            proc, wall, trace = watch_job(cmd, memory, env)
            if proc.returncode != 0:
                raise SystemExit(f"worker failed on {edge}x{edge}: {proc.stderr}")
            done = json.loads(proc.stdout.splitlines()[-1])
            gpu_s = done.get("gpu_seconds")
            infer_s = done["torch_seconds"]["inference"]
            rows.append({
                "edge": edge,
                "megapixels": edge * edge / 1e6,
                "wall_s": wall,
                "gpu_seconds": gpu_s,
                "inference_s": infer_s,
                "inference_share": infer_s / gpu_s if gpu_s else None,
                "tile": done["tile"],
                "tile_retries": done["tile_retries"],
                "seconds": done["seconds"],
                "torch_seconds": done["torch_seconds"],
                "device_memory_mb": done.get("device_memory_mb"),
                "nvml": {k: v for k, v in trace.__dict__.items() if k != "samples"},
            })
    return rows


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="default: full-size EDSR x3 layout (written on first use)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="input edges in pixels (square photos)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--jobs", default="fp16", help="precisions to run whole worker jobs at, comma-separated ('' to skip)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU is visible to PyTorch here; run this on a CUDA machine (or --device cpu for a smoke run)", file=sys.stderr)
        return 2
    model = ensure_model(args.model) if args.model == DEFAULT_MODEL else args.model
    sizes = [int(s) for s in args.sizes.split(",") if s]
    from infer.engines.weight_cache import load_plan

    load_plan(model)  # conversion once, outside every timing
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    result: dict = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "model": str(model)}

    # The matmul peak first, in a fresh context of this process; the worker jobs run in their own processes.
    peak16 = matmul_peak(torch, args.device, torch.float16) if args.device == "cuda" else None
    torch.backends.cuda.matmul.allow_tf32 = False
    peak32 = matmul_peak(torch, args.device, torch.float32)
    result["matmul_peak_tflops"] = {"fp16": peak16, "fp32": peak32}
    print(f"# {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; model {model.name}")
    print(f"matmul peak: fp16 {fmt(peak16, '.1f')} TFLOP/s, fp32 (no TF32) {fmt(peak32, '.1f')} TFLOP/s")

    rows = bench_inference(model, sizes, args.device, args.repeats)
    result["inference"] = rows
    print("\n| input | MP | TFLOP | fp16 s | fp16 TFLOP/s (% of peak) | fp32 s | fp32 TFLOP/s (% of peak) | fp16 vs fp32: max grey diff, PSNR dB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f16, f32 = r.get("fp16"), r["fp32"]
        cmp = r.get("fp16_vs_fp32")
        pct16 = f" ({100 * f16['tflops'] / peak16:.0f}%)" if f16 and peak16 else ""
        pct32 = f" ({100 * f32['tflops'] / peak32:.0f}%)" if peak32 else ""
        print(f"| {r['edge']}x{r['edge']} | {r['megapixels']:.2f} | {r['tflop']:.1f} | {fmt(f16 and f16['median_s'], '.3f')} | "
              f"{fmt(f16 and f16['tflops'], '.1f')}{pct16} | {f32['median_s']:.3f} | {f32['tflops']:.1f}{pct32} | "
              f"{(str(cmp['max_grey_diff']) + ', ' + fmt(cmp['psnr_db'], '.1f')) if cmp else 'n/a'} |")

    memory = DeviceMemory(enabled=args.device == "cuda")
    result["memory_source"] = memory.source
    for precision in [s for s in args.jobs.split(",") if s]:
        jobs = bench_jobs(model, sizes, args.device, precision, memory)
        result[f"jobs_{precision}"] = jobs
        print(f"\nworker jobs, --precision {precision} (device memory read by {memory.source}):")
        print("| input | wall s | gpu_seconds | inference s (share) | cuda init s | weights s | imports+start s | encode s | "
              "peak alloc / reserved MB | NVML before / peak / after MB | worker gone from GPU |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for j in jobs:
            dm = j["device_memory_mb"] or {}
            nv = j["nvml"]
            ts, s = j["torch_seconds"], j["seconds"]
            share = f" ({100 * j['inference_share']:.0f}%)" if j["inference_share"] else ""
            print(f"| {j['edge']}x{j['edge']} | {j['wall_s']:.2f} | {fmt(j['gpu_seconds'])} | {j['inference_s']:.2f}{share} | "
                  f"{ts['cuda_init']:.2f} | {ts['weights']:.2f} | {s['startup'] + s['imports'] + ts['import']:.2f} | {s['encode']:.2f} | "
                  f"{fmt(dm.get('peak_allocated'), '.0f')} / {fmt(dm.get('peak_reserved'), '.0f')} | "
                  f"{fmt(nv['before_mb'], '.0f')} / {fmt(nv['peak_mb'], '.0f')} / {fmt(nv['after_mb'], '.0f')} | {nv['process_gone']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
