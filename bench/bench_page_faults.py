"""Page faults and speed of a Compact-shaped network's forward under PyTorch's and glibc's allocation settings, one
child process per setting and window, rounds interleaved: what huge pages change (README "Engines and precision").

The network is Compact's layout with random weights: a 3x3 convolution to 64 channels, 16 more of 64 to 64 each
followed by a PReLU, one to 48 and a 4x pixel shuffle; channels-last fp32, 2 threads. Settings:
- `4k`: no huge pages (`THP_MEM_ALLOC_ENABLE=0`, `glibc.malloc.hugetlb=0`, as a capped worker runs): each allocation over 32 MB mapped on
  its own and faulted in 4 KB pages;
- `thp`: PyTorch's tensors of 2 MB and more aligned to and advised for 2 MB pages (`THP_MEM_ALLOC_ENABLE=1`, the
  default for a worker without a memory cap: infer/huge_pages.py);
- `no-mmap`: `glibc.malloc.mmap_max=0` with the heap never trimmed: freed memory is reused, never faulted again;
- `huge`: `glibc.malloc.hugetlb=1`, an operator's option: all of glibc's memory advised for 2 MB pages.

The first forward of a process (oneDNN builds its kernels; what a one-window job pays) and the second are timed
apart.

    .venv/bin/python bench/bench_page_faults.py --windows 256,384,1024 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ALLOCATION_SETTINGS, load_line  # noqa: E402
from infer.huge_pages import thp_mode  # noqa: E402

SETTINGS = {name: ALLOCATION_SETTINGS[name] for name in ("4k", "thp", "no-mmap", "huge")}


def child(window: int) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.PReLU(64)]
    for _ in range(16):
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.PReLU(64)]
    layers += [torch.nn.Conv2d(64, 48, 3, padding=1), torch.nn.PixelShuffle(4)]
    net = torch.nn.Sequential(*layers).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, window, window).contiguous(memory_format=torch.channels_last)
    mp = window * window / 1e6
    with torch.inference_mode():
        began = time.perf_counter()
        net(x)  # oneDNN builds its kernels
        first = time.perf_counter() - began
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        began = time.perf_counter()
        net(x)
        seconds = time.perf_counter() - began
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"first_s_per_mp": first / mp, "s_per_mp": seconds / mp, "faults": faults}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=lambda v: [int(x) for x in v.split(",")], default=[256, 384, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", type=lambda v: v.split(","), default=list(SETTINGS))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    rows: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for window in args.windows:
            for name in args.settings:
                env = {**os.environ, **SETTINGS[name]}
                done = subprocess.run([sys.executable, __file__, "--child", str(window)], env=env, check=True,
                                      capture_output=True, text=True)
                rows.setdefault((window, name), []).append(json.loads(done.stdout.splitlines()[-1]))
    print(load_line())
    print(f"transparent huge pages: {thp_mode() or 'none'}; {args.rounds} interleaved rounds, medians\n")
    print("| window | " + " | ".join(f"{name}: s per MP first / second, faults in the second" for name in args.settings)
          + " |")
    print("|---|" + "---|" * len(args.settings))
    for window in args.windows:
        cells = []
        for name in args.settings:
            runs = rows[(window, name)]
            cells.append(f"{statistics.median(r['first_s_per_mp'] for r in runs):.2f} / "
                         f"{statistics.median(r['s_per_mp'] for r in runs):.2f}, "
                         f"{statistics.median(r['faults'] for r in runs):,.0f}")
        print(f"| {window}x{window} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
