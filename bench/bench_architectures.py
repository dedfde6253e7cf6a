"""Community architectures (RealPLKSR, DAT, SPAN, SwinIR, HAT, OmniSR) on the CPU at their published sizes.

Random weights (spandrel's own classes and initialisation, seeded, the last convolution calibrated to a photo's
colour statistics: tests/fixtures/architectures.py). For each architecture: FLOPs per input megapixel
(FlopCounterMode on a 64x64 forward), the seconds and peak RSS of one window forward at each window edge in a
fresh process (the engine at the default precision, after a small warm-up), the context (tile pad) at which a
tiled run matches the whole photo, and from these the tile, pad and seconds per input MP the service declares
(infer/checkpoints.py `_CPU_FACTS`), with the floor: FLOPs over the fp32/bf16 matrix-product rate of this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_checkpoints import matmul_rate  # noqa: E402
from bench.common import OUT_DIR, PHOTOS_DIR, load_line, log, max_abs_diff, photo_path, psnr, read_bgr, run_child  # noqa: E402
from infer import resident  # noqa: E402
from tests.fixtures.architectures import ARCHITECTURES, write_checkpoint  # noqa: E402

WINDOWS = (64, 128, 192, 256)
PADS = (8, 16, 24, 32)
# A window whose forward grows the process by more than this is not a sane CPU tile (RRDBNet's 256 window
# stays near 1.45 GB in all).
MEMORY_BOUND_MB = 2048.0
SEAM_TOLERANCE = 2  # grey levels: tiled equals whole within this


def checkpoint(name: str) -> Path:
    """The published-size random checkpoint, written once under bench/out/architectures/."""
    path = OUT_DIR / "architectures" / f"{name}.pth"
    if not path.is_file():
        write_checkpoint(name, path, PHOTOS_DIR)
    return path


def _engine(name: str, threads: int):  # noqa: ANN202  (the torch engine, imported late)
    import torch

    from infer.engines.checkpoint import CheckpointEngine
    from infer.modelspec import spec_from_path

    torch.set_num_threads(threads)
    spec = spec_from_path(checkpoint(name))
    assert spec.checkpoint is not None
    engine = CheckpointEngine(device="cpu", precision="auto", auto_half=spec.checkpoint.half_formats)
    engine.load(spec)
    return engine, spec


def window_child(name: str, edge: int, threads: int) -> dict:
    """In this (fresh) process: the engine loaded, a forward of an edge x edge window of the photo, then that
    forward again, timed: the first pays the shape's one-time set-up, once a job since all its windows have one
    shape. Peak RSS is reset just before the first (Linux's clear_refs), so its growth over the resident set of
    the loaded model is the window's own memory, not the load's transient peak."""
    engine, _spec = _engine(name, threads)
    rgb = read_bgr(photo_path("astronaut"))[:, :, ::-1].astype(np.float32) / 255.0
    window = np.ascontiguousarray(rgb[100 : 100 + edge, 100 : 100 + edge])
    resident.reset_peak()
    before = resident.rss_mb()
    engine.run(window)
    peak = resident.peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    engine.run(window)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "loaded_mb": before, "peak_mb": max(peak, resident.peak_rss_mb()),
            "precision": engine.precision}


def flops_per_mp(name: str, edge: int = 64) -> tuple[float, float]:
    """(FLOPs per input MP, parameters in millions), counted by PyTorch on one fp32 edge x edge forward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from infer import checkpoints

    descriptor, _ = checkpoints.load(checkpoint(name))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        descriptor.model(torch.rand(1, 3, edge, edge))
    params = sum(p.numel() for p in descriptor.model.parameters()) / 1e6
    return counter.get_total_flops() / (edge * edge) * 1e6, params


@dataclass(frozen=True)
class Seam:
    pad: int
    max_diff: int
    mean_diff: float
    psnr: float


def seams(name: str, photo: str, edge: int, pads: tuple[int, ...], threads: int) -> tuple[list[Seam], str]:
    """Tiled (2 x 2 tiles) against the whole crop at the default precision, for each context `pad` up to the first
    within SEAM_TOLERANCE."""
    from infer.upscale import upscale_bgr

    engine, spec = _engine(name, threads)
    bgr = read_bgr(photo_path(photo))
    h, w = bgr.shape[:2]
    crop = np.ascontiguousarray(bgr[(h - edge) // 2 : (h + edge) // 2, (w - edge) // 2 : (w + edge) // 2])
    whole = upscale_bgr(crop, engine, spec, 0, 0)
    out = []
    for pad in pads:
        tiled = upscale_bgr(crop, engine, spec, edge // 2, pad)
        diff = np.abs(whole.astype(np.int16) - tiled.astype(np.int16))
        out.append(Seam(pad, max_abs_diff(whole, tiled), float(diff.mean()), psnr(whole, tiled)))
        log(f"{name}: pad {pad}: max {out[-1].max_diff}, mean {out[-1].mean_diff:.3f}, PSNR {out[-1].psnr:.1f} dB")
        if out[-1].max_diff <= SEAM_TOLERANCE:
            break
    return out, engine.precision


@dataclass(frozen=True)
class Window:
    edge: int
    wall_s: float
    cpu_s: float
    growth_mb: float


def windows(name: str, edges: tuple[int, ...], threads: int) -> list[Window]:
    out = []
    for edge in edges:
        cmd = [sys.executable, __file__, "window", name, "--edge", str(edge), "--threads", str(threads)]
        run = run_child(cmd).check()
        res = json.loads(run.stdout.strip().splitlines()[-1])
        out.append(Window(edge, res["wall_s"], res["cpu_s"], max(res["peak_mb"] - res["loaded_mb"], 0.0)))
        log(f"{name}: window {edge}: {res['wall_s']:.2f} s wall, {res['cpu_s']:.2f} s CPU, +{out[-1].growth_mb:.0f} MB "
            f"({res['precision']}); {load_line()}")
    return out


def choose(seam: list[Seam], wins: list[Window], threads: int) -> tuple[int, Window, float]:
    """(pad, window, s per input MP): the smallest pad within the tolerance (else the largest measured), then the
    window with the fewest CPU seconds per core pixel within the memory bound. Seconds are CPU seconds over the
    threads: the wall time of an otherwise idle machine, which a shared one's wall clock overstates."""
    fine = [s for s in seam if s.max_diff <= SEAM_TOLERANCE]
    pad = fine[0].pad if fine else seam[-1].pad
    usable = [w for w in wins if w.edge > 2 * pad and w.growth_mb <= MEMORY_BOUND_MB] or wins[:1]
    best = min(usable, key=lambda w: w.cpu_s / (w.edge - 2 * pad) ** 2)
    return pad, best, best.cpu_s / threads / (best.edge - 2 * pad) ** 2 * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    child = sub.add_parser("window", help="(internal) one window forward in this process")
    child.add_argument("name")
    child.add_argument("--edge", type=int, required=True)
    child.add_argument("--threads", type=int, default=2)
    p.add_argument("--archs", default=",".join(ARCHITECTURES))
    p.add_argument("--windows", default=",".join(map(str, WINDOWS)))
    p.add_argument("--pads", default=",".join(map(str, PADS)))
    p.add_argument("--photo", default="coffee")
    p.add_argument("--seam-edge", type=int, default=160, help="edge of the centre crop tiled 2 x 2 against whole")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.cmd == "window":
        print(json.dumps(window_child(args.name, args.edge, args.threads)))
        return

    import torch

    torch.set_num_threads(args.threads)
    rates = {d: matmul_rate(d) for d in ("fp32", "bf16")}
    log(f"matmul rate: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s; {load_line()}")
    edges = tuple(int(e) for e in args.windows.split(","))
    pads = tuple(int(e) for e in args.pads.split(","))
    rows, detail = [], []
    for name in args.archs.split(","):
        flops, params = flops_per_mp(name)
        seam, precision = seams(name, args.photo, args.seam_edge, pads, args.threads)
        wins = windows(name, edges, args.threads)
        pad, best, per_mp = choose(seam, wins, args.threads)
        floor = flops / rates["bf16" if precision == "bf16" else "fp32"]
        at = next(s for s in seam if s.pad == pad)
        per_px = best.growth_mb * (1 << 20) / best.edge**2
        rows.append(f"| {name} | {ARCHITECTURES[name].published} | {params:.2f} | {precision} | {flops / 1e9:.0f} | "
                    f"{per_mp:.0f} | {floor:.1f} | {per_mp / floor:.1f}x | {best.edge - 2 * pad} / {pad} | "
                    f"{best.growth_mb:.0f} | {per_px:.0f} | {at.max_diff} / {at.mean_diff:.3f} / {at.psnr:.1f} |")
        detail.append(f"| {name} | " + "; ".join(
            f"{w.edge}: {w.wall_s:.2f} s ({w.cpu_s:.2f} CPU), +{w.growth_mb:.0f} MB" for w in wins) + " | " + " | ".join(
            f"{s.pad}: {s.max_diff} / {s.mean_diff:.3f} / {s.psnr:.1f}" for s in seam) + " |" * (len(pads) - len(seam) + 1))
    print(f"matmul rate, {args.threads} threads: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s; "
          f"{load_line()} at the end")
    print()
    print("| architecture | published model | params M | precision | GFLOP per input MP | s per input MP (CPU s / threads) | "
          "floor s per MP | over floor | tile / pad | window RSS growth MB | bytes per window px | "
          "tiled vs whole: max / mean / PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| architecture | windows: edge: wall s (CPU s), RSS growth | " + " | ".join(f"pad {q}: max / mean / PSNR" for q in pads) + " |")
    print("|---|---|" + "---|" * len(pads))
    print("\n".join(detail))


if __name__ == "__main__":
    main()
