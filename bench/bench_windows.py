"""Memory one window of a checkpoint's forward adds on the CPU, in bytes per window pixel, and its speed per
window megapixel: what `CpuFacts.window_bytes_per_px` declares and the window a memory budget allows rests on.

Each (model, precision, window) runs in a fresh child process through the worker's own engine (the checkpoint
engine, as a job loads it), one window forwarded twice; the figure is the child's peak resident memory less its
resident memory just before the first forward, over the window's pixels.

    .venv/bin/python bench/bench_windows.py --windows 256,512 --precisions auto,fp32
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_checkpoints import CHECKPOINTS, checkpoint  # noqa: E402
from bench.common import load_line, photo_path, read_bgr, run_child  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def window_child(name: str, precision: str, size: int) -> None:
    """Loads the model as a job does, forwards one size x size window twice; prints the figures as JSON."""
    from infer.engines.checkpoint import CheckpointEngine
    from infer.modelspec import spec_from_path

    spec = spec_from_path(checkpoint(name))
    engine = CheckpointEngine(device="cpu", precision=precision, auto_half=spec.family.auto_half)
    engine.load(spec)
    img = read_bgr(photo_path("astronaut"))
    reps = -(-size // min(img.shape[:2]))
    window = np.ascontiguousarray(np.tile(img, (reps, reps, 1))[:size, :size, ::-1])
    before = _rss_mb()
    times = []
    for _ in range(2):
        t = time.perf_counter()
        engine.run(window)
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mb": before, "peak_mb": peak, "seconds": min(times),
                      "precision": engine.stats().get("precision", precision)}))


def cmd_compare(args: argparse.Namespace) -> None:
    print(load_line())
    print("| model | precision | window | added peak MB | bytes per window pixel | s per window MP | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for precision in args.precisions:
            for size in args.windows:
                child = run_child([sys.executable, __file__, "child", "--model", name, "--precision", precision,
                                   "--size", str(size)]).check()
                got = json.loads(child.stdout.strip().splitlines()[-1])
                added = got["peak_mb"] - got["before_mb"]
                print(f"| {name} | {precision} | {size} | {added:.0f} | {added * 2**20 / size**2:.0f} | "
                      f"{got['seconds'] / (size * size / 1e6):.1f} | {got['peak_mb']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child")
    child.add_argument("--model", choices=list(CHECKPOINTS), required=True)
    child.add_argument("--precision", default="auto")
    child.add_argument("--size", type=int, required=True)
    parser.add_argument("--models", type=lambda v: v.split(","), default=list(CHECKPOINTS))
    parser.add_argument("--precisions", type=lambda v: v.split(","), default=["auto"])
    parser.add_argument("--windows", type=lambda v: [int(s) for s in v.split(",")], default=[256, 512])
    args = parser.parse_args(argv)
    if args.command == "child":
        window_child(args.model, args.precision, args.size)
    else:
        cmd_compare(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
