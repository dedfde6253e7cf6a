"""A checkpoint's forward with its activations fused into its convolutions (infer/engines/fused_convs.py) and
without, side by side in one process, rounds interleaved: seconds per window megapixel and the ratio to the floor
(the network's FLOPs over the matrix-product rate measured before and after, in the precision that runs).

Both networks are built as the checkpoint engine builds them on the CPU (eval, the precision's number format,
channels-last, RRDBNet's tail in stripes); they differ only in the fusion. Each timing is one forward of one
window of astronaut, tiled to the window's size. A third timing, "fused, watched", runs the fused network with the
hooks that report progress within a window (infer/engines/step_progress.py), as a job runs it: their cost.

    .venv/bin/python bench/bench_fused_convs.py --models RealESRGAN_x4plus --windows 316 --precisions bf16,fp32
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_checkpoints import CHECKPOINTS, checkpoint, flops_per_mp, matmul_rate  # noqa: E402
from bench.common import load_line, median, photo_path, read_bgr, tiled_window  # noqa: E402


def _networks(name: str, dtype: object) -> tuple[object, object, int]:
    """(unfused, fused, count fused), as the engine builds them on the CPU."""
    import torch

    from infer import checkpoints
    from infer.engines.fused_convs import fuse_conv_activations
    from infer.engines.split_tail import split_tail

    descriptor, info = checkpoints.load(checkpoint(name))
    plain = descriptor.model.eval().to(dtype=dtype).to(memory_format=torch.channels_last)
    fused = copy.deepcopy(plain)
    count = fuse_conv_activations(fused)
    return (split_tail(plain, info.architecture) or plain), (split_tail(fused, info.architecture) or fused), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda v: v.split(","), default=list(CHECKPOINTS))
    parser.add_argument("--windows", type=lambda v: [int(s) for s in v.split(",")], default=[316])
    parser.add_argument("--precisions", type=lambda v: v.split(","), default=["bf16", "fp32"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from infer.engines.step_progress import ConvProgress

    torch.set_num_threads(args.threads)
    print(load_line())
    rates_before = {p: matmul_rate(p) for p in args.precisions}
    img = read_bgr(photo_path("astronaut"))
    rows = []
    for name in args.models:
        flops = flops_per_mp(CHECKPOINTS[name])
        for precision in args.precisions:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
            plain, fused, count = _networks(name, dtype)
            for size in args.windows:
                window = tiled_window(img, size).astype(np.float32)
                x = torch.from_numpy(window.transpose(2, 0, 1)[None] / 255.0).to(dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                times: dict[str, list[float]] = {"unfused": [], "fused": [], "watched": []}
                progress = ConvProgress(fused)
                with torch.inference_mode():
                    a, b = plain(x), fused(x)  # warm-up, and the difference
                    diff = (a.float() - b.float()).abs().max().item()
                    del a, b
                    for _ in range(args.rounds):
                        for label, net in (("unfused", plain), ("fused", fused), ("watched", fused)):
                            t = time.perf_counter()
                            with progress.watching(x, (lambda _f: None) if label == "watched" else None):
                                net(x)
                            times[label].append(time.perf_counter() - t)
                mp = size * size / 1e6
                rows.append((name, precision, size, count, {k: median(v) / mp for k, v in times.items()}, diff, flops))
            del plain, fused
    rates_after = {p: matmul_rate(p) for p in args.precisions}
    print(load_line())
    print("matrix products, GFLOP/s before / after: "
          + ", ".join(f"{p} {rates_before[p] / 1e9:.0f} / {rates_after[p] / 1e9:.0f}" for p in args.precisions))
    print(f"{args.rounds} interleaved rounds, {args.threads} threads, medians\n")
    print("| model | precision | window | convolutions fused | unfused s per MP | fused s per MP | speed-up "
          "| fused / floor | fused, watched s per MP | max difference (0..1) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, precision, size, count, per_mp, diff, flops in rows:
        rate = max(rates_before[precision], rates_after[precision])
        floor = flops / rate  # seconds per input megapixel at the faster measured rate
        print(f"| {name} | {precision} | {size} | {count} | {per_mp['unfused']:.1f} | {per_mp['fused']:.1f} "
              f"| {per_mp['unfused'] / per_mp['fused']:.2f}x | {per_mp['fused'] / floor:.2f}x | {per_mp['watched']:.1f} "
              f"| {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
