"""CPU engines side by side: OpenCV dnn against PyTorch on the same tiles and the same worker jobs, in one run."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infer import REPO_ROOT  # noqa: E402
from infer.engines.opencv import OpenCVEngine  # noqa: E402
from infer.engines.torch import TorchEngine  # noqa: E402
from infer.engines.weight_cache import load_plan  # noqa: E402
from infer.families import FAMILIES  # noqa: E402
from infer.modelspec import spec_from_path  # noqa: E402

DEFAULT_MODEL = REPO_ROOT / "bench" / "out" / "EDSR_x3.pb"
PHOTO = REPO_ROOT.parent / "shared" / "photos" / "astronaut.png"


def ensure_model(path: Path) -> Path:
    """The full-size EDSR x3 layout (32 blocks x 256 filters) from the test fixture generator, written once."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "tests.fixtures.edsr_graph", str(path)], check=True, cwd=REPO_ROOT)
    return path


def network_tile(size: int, channels: int) -> np.ndarray:
    """A crop of a real photo in network space: BGR minus the DIV2K mean (EDSR) or Y/255 (the others)."""
    bgr = cv2.imread(str(PHOTO)) if PHOTO.exists() else np.random.default_rng(0).integers(0, 256, (512, 512, 3), np.uint8)
    crop = np.ascontiguousarray(bgr[100 : 100 + size, 150 : 150 + size])
    if channels == 3:
        return crop.astype(np.float32) - np.array(FAMILIES["edsr"].mean_bgr, np.float32)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb)[:, :, :1].astype(np.float32) / 255.0


def bench_tiles(model: Path, sizes: list[int], repeats: int) -> list[dict]:
    spec = spec_from_path(model)
    plan = load_plan(model).plan  # also writes the weight cache, so load times below are steady-state
    engines = {"opencv": OpenCVEngine(device="cpu"), "torch": TorchEngine(device="cpu", precision="fp32")}
    load_s = {}
    for name, engine in engines.items():
        t = time.perf_counter()
        engine.load(spec)
        load_s[name] = time.perf_counter() - t
    rows = []
    for size in sizes:
        x = network_tile(size, spec.channels)
        first, times, outs = {}, {name: [] for name in engines}, {}
        for name, engine in engines.items():
            t = time.perf_counter()
            outs[name] = engine.run(x)
            first[name] = time.perf_counter() - t
        for _ in range(repeats):  # interleaved, so both engines see the same machine load
            for name, engine in engines.items():
                t = time.perf_counter()
                engine.run(x)
                times[name].append(time.perf_counter() - t)
        flop = 2 * plan.macs_per_pixel() * size * size
        med = {name: statistics.median(v) for name, v in times.items()}
        rows.append({
            "size": size,
            "tflop": flop / 1e12,
            "first_s": first,
            "median_s": med,
            "all_s": times,
            "gflops": {name: flop / med[name] / 1e9 for name in engines},
            "torch_over_opencv": med["torch"] / med["opencv"],
            "max_abs_diff": float(np.abs(outs["torch"] - outs["opencv"]).max()),
            "load_s": load_s,
        })
    for engine in engines.values():
        engine.close()
    return rows


def bench_worker(model: Path, size: int, repeats: int) -> dict:
    """Whole jobs through the real worker: interpreter start, imports, load, infer, encode."""
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "in.png"
        bgr = cv2.imread(str(PHOTO)) if PHOTO.exists() else np.full((512, 512, 3), 128, np.uint8)
        cv2.imwrite(str(photo), bgr[100 : 100 + size, 150 : 150 + size])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
        walls: dict[str, list[float]] = {"opencv": [], "torch": []}
        seconds: dict[str, dict] = {}
        for _ in range(repeats):
            for engine in walls:
                out = Path(tmp) / f"{engine}.png"
                cmd = [sys.executable, str(REPO_ROOT / "infer" / "sr_infer.py"), "--input", str(photo), "--output", str(out),
                       "--model", str(model), "--engine", engine, "--device", "cpu"]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                walls[engine].append(time.perf_counter() - t)
                if proc.returncode != 0:
                    raise SystemExit(f"worker failed ({engine}): {proc.stderr}")
                seconds[engine] = json.loads(proc.stdout.splitlines()[-1])["seconds"]
        a, b = (cv2.imread(str(Path(tmp) / f"{e}.png")).astype(int) for e in ("opencv", "torch"))
        med = {e: statistics.median(v) for e, v in walls.items()}
        return {"size": size, "median_wall_s": med, "all_wall_s": walls, "last_seconds": seconds,
                "torch_over_opencv": med["torch"] / med["opencv"], "max_grey_diff": int(np.abs(a - b).max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="default: the full-size EDSR x3 fixture (written on first use)")
    p.add_argument("--sizes", default="64,96", help="tile edges in input pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker-size", type=int, default=48, help="photo edge for whole worker jobs (0 to skip)")
    p.add_argument("--worker-repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    args = p.parse_args(argv)

    model = ensure_model(args.model) if args.model == DEFAULT_MODEL else args.model
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"# {model.name}: cv2 {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"torch {__import__('torch').__version__} ({__import__('torch').get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    rows = bench_tiles(model, sizes, args.repeats)
    print("\n| tile | TFLOP | OpenCV median s | torch median s | torch / OpenCV | OpenCV nominal GFLOP/s | torch nominal GFLOP/s | first call OpenCV / torch s | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['tflop']:.3f} | {r['median_s']['opencv']:.2f} | {r['median_s']['torch']:.2f} | "
              f"{r['torch_over_opencv']:.2f} | {r['gflops']['opencv']:.0f} | {r['gflops']['torch']:.0f} | "
              f"{r['first_s']['opencv']:.2f} / {r['first_s']['torch']:.2f} | {r['max_abs_diff']:.4f} |")
    print("\nnominal GFLOP/s: 2 x the multiply-adds of direct convolution / time (a Winograd kernel does fewer).")
    print(f"model load: OpenCV {rows[0]['load_s']['opencv']:.2f} s, torch {rows[0]['load_s']['torch']:.2f} s (weights from the cache)")
    result = {"tiles": rows}
    if args.worker_size:
        w = bench_worker(model, args.worker_size, args.worker_repeats)
        result["worker"] = w
        print(f"\nworker job, {w['size']}x{w['size']} photo, median of {args.worker_repeats}: "
              f"OpenCV {w['median_wall_s']['opencv']:.2f} s, torch {w['median_wall_s']['torch']:.2f} s "
              f"(torch / OpenCV {w['torch_over_opencv']:.2f}), outputs differ by at most {w['max_grey_diff']} grey level(s)")
        for engine, secs in w["last_seconds"].items():
            print(f"  {engine} stages: {json.dumps(secs)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
