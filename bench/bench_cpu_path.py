"""The default CPU path, chosen by measurement: engines and precisions per window, the tile size, whole jobs, precision."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from infer import REPO_ROOT, resident
from infer.engines.weight_cache import load_plan

sys.path.insert(0, str(REPO_ROOT))
from bench.bench_checkpoints import matmul_rate  # noqa: E402
from bench.common import (  # noqa: E402
    OUT_DIR,
    centre_crop,
    edsr_fixture,
    load_line,
    log,
    max_abs_diff,
    median,
    photo_path,
    psnr,
    read_bgr,
    run_child,
    shared_model,
    time_forwards,
)

# engine configuration -> worker flags
CONFIGS = {
    "opencv": ("--engine", "opencv", "--precision", "fp32"),
    "torch-fp32": ("--engine", "torch", "--precision", "fp32"),
    "torch-bf16": ("--engine", "torch", "--precision", "bf16"),
    # The family's fixed tile instead of the window from the memory budget: what the budget saves.
    "torch-bf16-tile320": ("--engine", "torch", "--precision", "bf16", "--tile", "320"),
}
WARMUP_EDGE = 16
PAD = 24


def _engine(config: str):
    from infer.engines import create_engine

    flags = dict(zip(CONFIGS[config][::2], CONFIGS[config][1::2]))
    return create_engine(flags["--engine"], "cpu", flags["--precision"])


def window_child(model: Path, config: str, size: int, repeats: int) -> dict:
    """In a fresh process: load, warm up on a tiny window, then time `repeats` forwards of one window."""
    from infer.modelspec import spec_from_path

    engine = _engine(config)
    engine.load(spec_from_path(model))
    rng = np.random.default_rng(0)
    engine.run(rng.uniform(-100, 100, (WARMUP_EDGE, WARMUP_EDGE, 3)).astype(np.float32))
    window = rng.uniform(-100, 100, (size, size, 3)).astype(np.float32)
    wall, cpu = time_forwards(engine, window, repeats)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": resident.peak_rss_mb()}


def _windows(model: Path, configs: list[str], sizes: list[int], rounds: int) -> dict:
    """Fresh child per (config, size), configs interleaved within each size, order reversed every round."""
    res: dict = {c: {s: {"wall": [], "cpu": [], "rss": []} for s in sizes} for c in configs}
    for r in range(rounds):
        for size in sizes if r % 2 == 0 else sizes[::-1]:
            for config in configs if r % 2 == 0 else configs[::-1]:
                run = run_child([sys.executable, __file__, "window", "--model", str(model), "--config", config,
                                 "--size", str(size)]).check()
                out = json.loads(run.stdout.strip().splitlines()[-1])
                cell = res[config][size]
                cell["wall"] += out["wall_s"]
                cell["cpu"] += out["cpu_s"]
                cell["rss"].append(run.peak_rss_mb)
                log(f"round {r + 1}: {config} window {size}: {out['wall_s'][0]:.2f} s, peak {run.peak_rss_mb:.0f} MB; {load_line()}")
    return res


def cmd_windows(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    res = _windows(args.model, args.configs, sizes, args.rounds)
    print(f"\n{args.model.name}, one window per fresh process, {args.rounds} rounds interleaved, {os.cpu_count()} CPUs")
    print()
    print("| window | " + " | ".join(f"{c} s" for c in args.configs) + " | "
          + " | ".join(f"{c} vs opencv" for c in args.configs if c != "opencv") + " | "
          + " | ".join(f"{c} peak MB" for c in args.configs) + " |")
    print("|---|" + "---|" * (3 * len(args.configs) - 1))
    for s in sizes:
        med = {c: median(res[c][s]["wall"]) for c in args.configs}
        ratios = [f"{med['opencv'] / med[c]:.2f}x" for c in args.configs if c != "opencv"] if "opencv" in med else []
        print(f"| {s}x{s} | " + " | ".join(f"{med[c]:.2f}" for c in args.configs) + " | " + " | ".join(ratios)
              + " | " + " | ".join(f"{median(res[c][s]['rss']):.0f}" for c in args.configs) + " |")


def cmd_tiles(args: argparse.Namespace) -> None:
    tiles = [int(t) for t in args.tiles.split(",")]
    sizes = [t + 2 * PAD for t in tiles]
    res = _windows(args.model, [args.config], sizes, args.rounds)[args.config]
    print(f"\n{args.model.name}, {args.config}, tile + 2x{PAD} pad, {args.rounds} rounds")
    print()
    print("| tile | window | s per window | CPU s per window | CPU s per input MP (large photo) | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for t, s in zip(tiles, sizes):
        cpu = median(res[s]["cpu"])
        print(f"| {t} | {s} | {median(res[s]['wall']):.2f} | {cpu:.2f} | {cpu / (t * t) * 1e6:.0f} | {median(res[s]['rss']):.0f} |")


def _worker(photo: Path, out: Path, model: Path, *flags: str):
    return run_child([sys.executable, "-m", "infer.sr_infer", "--input", str(photo), "--output", str(out),
                      "--model", str(model), "--device", "cpu", *flags]).check()


def cmd_worker(args: argparse.Namespace) -> None:
    """Whole jobs (decode to encode) on a real photo, one fresh worker each, configs interleaved."""
    photo = centre_crop(args.photo, args.size) if args.size else photo_path(args.photo)
    height, width = read_bgr(photo).shape[:2]
    pixels = width * height
    runs: dict[str, list] = {c: [] for c in [*args.configs, "default"]}
    rates = {p: [matmul_rate(p)] for p in ("fp32", "bf16")}
    for r in range(args.rounds):
        for config in runs if r % 2 == 0 else list(runs)[::-1]:
            flags = () if config == "default" else CONFIGS[config]
            run = _worker(photo, OUT_DIR / f"worker_{config}.png", args.model, *flags)
            runs[config].append(run)
            log(f"round {r + 1}: {config}: {run.seconds:.1f} s, peak {run.peak_rss_mb:.0f} MB; {load_line()}")
    for p in rates:
        rates[p].append(matmul_rate(p))
    ref = read_bgr(OUT_DIR / "worker_opencv.png") if "opencv" in runs else None
    flop_per_px = 2 * load_plan(args.model).plan.macs_per_pixel()
    print(f"\n{args.model.name}, {photo.name} {width}x{height}, whole worker jobs, median of {args.rounds}; matrix "
          f"products before and after, GFLOP/s: " + ", ".join(f"{p} {r[0] / 1e9:.0f} and {r[1] / 1e9:.0f}" for p, r in rates.items()))
    print()
    print("| configuration | engine, precision, tile | windows | wall s | s per input MP | infer stage s per input MP | x its floor | CPU s per input MP | vs opencv | peak RSS MB | max diff vs opencv |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = median([r.seconds for r in runs["opencv"]]) if "opencv" in runs else None
    for config, rs in runs.items():
        done = rs[-1].event("done") or {}
        wall = median([r.seconds for r in rs])
        cpu = median([r.cpu_seconds for r in rs])
        infer = median([(r.event("done") or {}).get("seconds", {}).get("infer", float("nan")) for r in rs])
        diff = max_abs_diff(read_bgr(OUT_DIR / f"worker_{config}.png"), ref) if ref is not None else "-"
        # The floor at the better of the two matrix rates measured around the run, in the precision that ran.
        rate = max(rates.get(str(done.get("precision")), rates["fp32"]))
        floor = flop_per_px * pixels / rate
        windows = (rs[-1].event("start") or {}).get("tiles")
        print(f"| {config} | {done.get('engine')}, {done.get('precision')}, {done.get('tile')} | {windows} | {wall:.1f} | "
              f"{wall / pixels * 1e6:.0f} | {infer / pixels * 1e6:.0f} | {infer / floor:.2f}x | {cpu / pixels * 1e6:.0f} | {base / wall if base else 0:.2f}x | "
              f"{median([r.peak_rss_mb for r in rs]):.0f} | {diff} |")


def cmd_precision(args: argparse.Namespace) -> None:
    """bf16 and fp16 against fp32 through the worker (torch engine), on real photos."""
    models = [Path(m) if Path(m).suffix else shared_model(m) for m in args.models.split(",")]
    print(f"\nthe worker, --engine torch, default tile; {', '.join(args.photos.split(','))} crops {args.size}x{args.size}")
    print()
    print("| model | photo | bf16 PSNR vs fp32 dB | bf16 max diff | fp16 PSNR vs fp32 dB | fp16 max diff | fp16 tiles rerun in fp32 |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for name in args.photos.split(","):
            photo = centre_crop(name, args.size)
            outs, fallbacks = {}, None
            for p in ("fp32", "bf16", "fp16"):
                out = OUT_DIR / f"precision_{model.stem}_{name}_{p}.png"
                run = _worker(photo, out, model, "--engine", "torch", "--precision", p)
                outs[p] = read_bgr(out)
                if p == "fp16":
                    fallbacks = (run.event("done") or {}).get("precision_fallbacks")
            print(f"| {model.stem} | {name} | {psnr(outs['bf16'], outs['fp32']):.1f} | {max_abs_diff(outs['bf16'], outs['fp32'])} | "
                  f"{psnr(outs['fp16'], outs['fp32']):.1f} | {max_abs_diff(outs['fp16'], outs['fp32'])} | {fallbacks} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("window", help="(child) time one window")
    w.add_argument("--model", type=Path, required=True)
    w.add_argument("--config", choices=CONFIGS, required=True)
    w.add_argument("--size", type=int, required=True)
    w.add_argument("--repeats", type=int, default=1)
    for name, helptext in (("windows", "engines side by side per window size"), ("tiles", "tile sweep for one engine"),
                           ("worker", "whole worker jobs"), ("precision", "bf16/fp16 against fp32")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--model", type=Path, default=None, help="default: the full-size EDSR x3 fixture")
        s.add_argument("--rounds", type=int, default=2)
        s.add_argument("--configs", type=lambda v: v.split(","), default=list(CONFIGS))
    sub.choices["windows"].add_argument("--sizes", default="128,200,304")
    sub.choices["tiles"].add_argument("--tiles", default="128,192,256,320,384")
    sub.choices["tiles"].add_argument("--config", choices=CONFIGS, default="torch-bf16")
    sub.choices["worker"].add_argument("--photo", default="coffee")
    sub.choices["worker"].add_argument("--size", type=int, default=0, help="centre crop edge (0: the whole photo)")
    sub.choices["precision"].add_argument("--models", default="FSRCNN_x3,ESPCN_x3,LapSRN_x4")
    sub.choices["precision"].add_argument("--photos", default="coffee,chelsea")
    sub.choices["precision"].add_argument("--size", type=int, default=240)
    args = p.parse_args(argv)
    if args.cmd == "window":
        print(json.dumps(window_child(args.model, args.config, args.size, args.repeats)))
        return 0
    if args.model is None:
        args.model = edsr_fixture(full=True)
    log(f"{args.cmd}: {load_line()}")
    {"windows": cmd_windows, "tiles": cmd_tiles, "worker": cmd_worker, "precision": cmd_precision}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
