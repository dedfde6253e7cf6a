"""Memory one window of a network's forward adds on the CPU, in bytes per window pixel, and its speed per window
megapixel: what `CpuFacts.window_bytes_per_px` declares for checkpoints and the window a memory budget allows rests
on; for a `.pb` graph (`EDSR_x3`: the full-size EDSR fixture, on the PyTorch engine), how far its window's memory
is from the graph's own count of live activations, which a window from memory would be sized by.

Each (model, precision, window) runs in a fresh child process through the worker's own engine (the checkpoint
engine, or the PyTorch engine for a graph, as a job loads it), one window forwarded twice; the figure is the
child's peak resident memory less its resident memory just before the first forward, over the window's pixels.
For a graph, the last column is that figure over the graph's own count (`GraphPlan.peak_values_per_pixel` at
the precision's bytes per value).

    .venv/bin/python bench/bench_windows.py --windows 256,512 --precisions auto,fp32
    .venv/bin/python bench/bench_windows.py --models EDSR_x3 --windows 200,320 --precisions bf16,fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_checkpoints import CHECKPOINTS, checkpoint  # noqa: E402
from infer import resident  # noqa: E402
from bench.common import edsr_fixture, load_line, photo_path, read_bgr, run_child, tiled_window  # noqa: E402

GRAPHS = ("EDSR_x3",)


def window_child(name: str, precision: str, size: int) -> None:
    """Loads the model as a job does, forwards one size x size window twice; prints the figures as JSON."""
    from infer.engines.checkpoint import CheckpointEngine
    from infer.engines.torch import TorchEngine
    from infer.modelspec import spec_from_path

    estimate = None
    if name in GRAPHS:
        spec = spec_from_path(edsr_fixture())
        engine = TorchEngine(device="cpu", precision=precision, auto_half=spec.family.auto_half)
        engine.load(spec)
        estimate = engine.activation_bytes_per_px(spec)
    else:
        spec = spec_from_path(checkpoint(name))
        engine = CheckpointEngine(device="cpu", precision=precision, auto_half=spec.family.auto_half)
        engine.load(spec)
    img = read_bgr(photo_path("astronaut"))
    window = tiled_window(img, size)
    before = resident.rss_mb()
    times = []
    for _ in range(2):
        t = time.perf_counter()
        engine.run(window)
        times.append(time.perf_counter() - t)
    print(json.dumps({"before_mb": before, "peak_rss_mb": resident.peak_rss_mb(), "seconds": min(times),
                      "estimate": estimate, "precision": engine.stats().get("precision", precision)}))


def cmd_compare(args: argparse.Namespace) -> None:
    print(load_line())
    print("| model | precision | window | added peak MB | bytes per window pixel | s per window MP | peak RSS MB | "
          "over the graph's count |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for precision in args.precisions:
            for size in args.windows:
                child = run_child([sys.executable, __file__, "child", "--model", name, "--precision", precision,
                                   "--size", str(size)]).check()
                got = json.loads(child.stdout.strip().splitlines()[-1])
                added = got["peak_rss_mb"] - got["before_mb"]
                per_px = added * 2**20 / size**2
                over = f"{per_px / got['estimate']:.2f}x" if got["estimate"] else ""
                print(f"| {name} | {got['precision']} | {size} | {added:.0f} | {per_px:.0f} | "
                      f"{got['seconds'] / (size * size / 1e6):.1f} | {got['peak_rss_mb']:.0f} | {over} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child")
    child.add_argument("--model", choices=[*CHECKPOINTS, *GRAPHS], required=True)
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
