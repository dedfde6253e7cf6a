"""EDSR tile size and pad on the CPU: speed and peak RSS per tile, memory against input size, tiled against untiled output."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from infer import REPO_ROOT, resident

sys.path.insert(0, str(REPO_ROOT))
from bench.common import (  # noqa: E402
    COLOUR_PHOTOS,
    OUT_DIR,
    centre_crop,
    edsr_fixture,
    fmt_psnr,
    load_line,
    log,
    max_abs_diff,
    median,
    psnr,
    read_bgr,
    run_child,
    shared_model,
    photo_path,
    time_forwards,
    worker_cmd,
)
from infer.engines.opencv import OpenCVEngine  # noqa: E402
from infer.modelspec import spec_from_path  # noqa: E402
from infer.families import FAMILIES  # noqa: E402
from infer.tiling import plan_tiles  # noqa: E402
from infer.upscale import effective_pad, upscale_bgr  # noqa: E402

TILES = (64, 96, 128, 192, 256)
WARMUP_EDGE = 16


def window_child(model: Path, size: int, repeats: int) -> dict:
    """In a fresh process: load the model, run a small warm-up forward (one-time layer set-up, paid once
    per job whatever the tile), then time `repeats` forwards of one size x size window."""
    engine = OpenCVEngine()
    t = time.perf_counter()
    engine.load(spec_from_path(model))
    rng = np.random.default_rng(0)
    engine.run(rng.uniform(-100, 100, (WARMUP_EDGE, WARMUP_EDGE, 3)).astype(np.float32))
    setup_s = time.perf_counter() - t
    setup_rss = resident.peak_rss_mb()
    window = rng.uniform(-100, 100, (size, size, 3)).astype(np.float32)
    wall, cpu = time_forwards(engine, window, repeats)
    return {"setup_s": setup_s, "setup_rss_mb": setup_rss, "wall_s": wall, "cpu_s": cpu,
            "peak_rss_mb": resident.peak_rss_mb()}


def _windows(length: int, tile: int, pad: int) -> tuple[int, int]:
    """Number of tiles and window edge the worker's tiling uses for a square input."""
    tiles = plan_tiles(length, length, tile, pad)
    y0, y1, _, _ = tiles[0].window
    return len(tiles), y1 - y0


def measure_speed(model: Path, tiles: list[int], pad: int, input_edge: int, rounds: int) -> None:
    """Seconds per window for each tile size, in fresh processes, tile sizes interleaved round by round.

    CPU seconds (all threads of the child) are the figure to compare: on a shared machine the wall time
    of the same forward pass varies with what else runs, its CPU time hardly at all.
    """
    sizes = sorted({t + 2 * pad for t in tiles} | {_windows(input_edge, t, pad)[1] for t in tiles})
    log(f"window sizes {sizes}; {load_line()}")
    wall: dict[int, list[float]] = {s: [] for s in sizes}
    cpu: dict[int, list[float]] = {s: [] for s in sizes}
    rss: dict[int, list[float]] = {s: [] for s in sizes}
    setup_rss: list[float] = []
    setup_s: list[float] = []
    for r in range(rounds):
        order = sizes if r % 2 == 0 else sizes[::-1]
        for size in order:
            run = run_child([sys.executable, __file__, "window", "--model", str(model), "--size", str(size)]).check()
            res = json.loads(run.stdout.strip().splitlines()[-1])
            wall[size] += res["wall_s"]
            cpu[size] += res["cpu_s"]
            rss[size].append(run.peak_rss_mb)
            setup_rss.append(res["setup_rss_mb"])
            setup_s.append(res["setup_s"])
            log(f"round {r + 1}: window {size}: {res['wall_s'][0]:.2f} s wall, {res['cpu_s'][0]:.2f} s CPU, "
                f"peak {run.peak_rss_mb:.0f} MB; {load_line()}")

    base = median(setup_rss)
    print(f"Model loaded plus a {WARMUP_EDGE}x{WARMUP_EDGE} warm-up: peak RSS {base:.0f} MB, "
          f"{median(setup_s):.2f} s wall (median of {len(setup_s)}).")
    print()
    ref = FAMILIES["edsr"].tile if FAMILIES["edsr"].tile in tiles else tiles[0]
    per_mp = {t: median(cpu[t + 2 * pad]) / (t * t) * 1e6 for t in tiles}
    print(f"| tile | window (tile + 2x{pad}) | CPU s per window | wall s per window | CPU us per window px | "
          f"CPU s per input MP, large photo | vs tile {ref} | peak RSS MB | RSS over model-only MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in tiles:
        w = t + 2 * pad
        print(
            f"| {t} | {w} | {median(cpu[w]):.2f} | {median(wall[w]):.2f} | {median(cpu[w]) / (w * w) * 1e6:.0f} | "
            f"{per_mp[t]:.0f} | {per_mp[t] / per_mp[ref]:.2f} | {median(rss[w]):.0f} | {median(rss[w]) - base:.0f} |"
        )
    print()
    # Windows always have the same size within a job, so a job's cost is its window count times one
    # measured window: CPU s per input megapixel for whole photos of common sizes.
    photos = [(input_edge, input_edge), (640, 480), (1024, 768), (1600, 1200), (2048, 1536), (4000, 3000)]
    print(f"CPU s per input MP (window pixels per input pixel) for whole photos, from the tiling plan and the "
          f"measured windows:")
    print()
    print("| tile | " + " | ".join(f"{w}x{h}" for w, h in photos) + " |")
    print("|---|" + "---|" * len(photos))
    for t in tiles:
        cells = []
        for w, h in photos:
            plan = plan_tiles(h, w, t, pad)
            wy0, wy1, wx0, wx1 = plan[0].window
            if wy1 - wy0 != wx1 - wx0 or wy1 - wy0 not in cpu:
                cells.append("-")
                continue
            factor = len(plan) * (wy1 - wy0) * (wx1 - wx0) / (w * h)
            cells.append(f"{len(plan) * median(cpu[wy1 - wy0]) / (w * h) * 1e6:.0f} ({factor:.2f})")
        print(f"| {t} | " + " | ".join(cells) + " |")


def measure_memory(model: Path, tile: int, pad: int, edges: list[int], untiled: list[int], rounds: int,
                   photo: str) -> None:
    """The real worker at the default tile on growing inputs, and untiled (--tile 0) for contrast."""
    out_dir = OUT_DIR / "memory"
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [(e, tile) for e in edges] + [(e, 0) for e in untiled]
    results: dict[tuple[int, int], list] = {c: [] for c in cases}
    for r in range(rounds):
        for edge, t in cases:
            inp = centre_crop(photo, edge)
            run = run_child(worker_cmd(inp, out_dir / f"out_{edge}_{t}.png", model, "--tile", str(t),
                                       "--tile-pad", str(pad))).check()
            done = run.event("done")
            start = run.event("start")
            results[(edge, t)].append((run.peak_rss_mb, run.cpu_seconds, done["seconds"]["infer"], start["tiles"]))
            log(f"round {r + 1}: {edge}x{edge} tile {t}: peak {run.peak_rss_mb:.0f} MB, "
                f"infer {done['seconds']['infer']:.1f} s; {load_line()}")
    print(f"| input ({photo}) | tile / pad | tiles | peak RSS MB | CPU s | infer s (wall) |")
    print("|---|---|---|---|---|---|")
    for edge, t in cases:
        rows = results[(edge, t)]
        label = f"{t} / {pad}" if t else "untiled (--tile 0)"
        print(f"| {edge}x{edge} | {label} | {rows[0][3]} | {median([r[0] for r in rows]):.0f} | "
              f"{median([r[1] for r in rows]):.1f} | {median([r[2] for r in rows]):.1f} |")


def _seam_rows(engine: OpenCVEngine, model: Path, label: str, images: dict[str, np.ndarray],
               settings: list[tuple[int, int]]) -> None:
    spec = spec_from_path(model)
    engine.load(spec)
    for name, bgr in images.items():
        untiled = upscale_bgr(bgr, engine, spec, 0, 0)
        for tile, pad in settings:
            tiled = upscale_bgr(bgr, engine, spec, tile, pad)
            n = len(plan_tiles(bgr.shape[0], bgr.shape[1], tile, effective_pad(spec, pad)))
            diff = np.abs(tiled.astype(np.int16) - untiled.astype(np.int16)).max(axis=2)
            eff = effective_pad(spec, pad)
            pad_text = f"{pad}" if eff == pad else f"{pad} (runs as {eff})"
            print(f"| {label} | {name} {bgr.shape[1]}x{bgr.shape[0]} | {tile} / {pad_text} | {n} | "
                  f"{max_abs_diff(tiled, untiled)} | {100.0 * np.count_nonzero(diff) / diff.size:.3f} | "
                  f"{fmt_psnr(psnr(tiled, untiled))} |", flush=True)
    engine.close()


def measure_seams(crop: tuple[int, int], sweep_edge: int, edsr: Path | None) -> None:
    """Tiled against untiled output, in-process through infer.upscale (the worker's own tiling and colour code)."""
    print("| model | input | tile / pad | tiles | max abs diff | pixels differing % | PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    engine = OpenCVEngine()
    tile, pad = FAMILIES["edsr"].tile, FAMILIES["edsr"].tile_pad
    full = edsr or edsr_fixture(full=True)
    label = f"{full.name} (given)" if edsr else "EDSR fixture 32x256"
    crop_img = {"astronaut": read_bgr(centre_crop("astronaut", crop[1], crop[0]))}
    _seam_rows(engine, full, label, crop_img, [(tile, pad), (tile, 0)])
    log(f"EDSR at the default tile done; {load_line()}")
    sweep_tile = sweep_edge // 2
    sweep = {"astronaut": read_bgr(centre_crop("astronaut", sweep_edge))}
    _seam_rows(engine, full, label, sweep, [(sweep_tile, p) for p in (0, 8, 16, 24)])
    log(f"EDSR pad sweep done; {load_line()}")
    photos = {name: read_bgr(photo_path(name)) for name in COLOUR_PHOTOS}
    _seam_rows(engine, edsr_fixture(full=False), "EDSR fixture 2x16", photos, [(tile, pad), (tile, 0)])
    for name in ("FSRCNN_x3", "ESPCN_x3"):
        model = shared_model(name)
        algo = spec_from_path(model).algo
        t, p = FAMILIES[algo].tile, FAMILIES[algo].tile_pad
        _seam_rows(engine, model, name, photos, [(t, p), (t, 0), (64, p), (64, 0)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed", help="seconds per window and peak RSS for each tile size (full-size fixture)")
    s.add_argument("--tiles", default=",".join(map(str, TILES)))
    s.add_argument("--pad", type=int, default=FAMILIES["edsr"].tile_pad)
    s.add_argument("--input-edge", type=int, default=256, help="square input the per-input cost is computed for")
    s.add_argument("--rounds", type=int, default=3)
    m = sub.add_parser("memory", help="peak RSS of the real worker against input size (full-size fixture)")
    m.add_argument("--edges", default="288,512", help="square inputs run at the default tile")
    m.add_argument("--untiled", default="288,512", help="square inputs also run with --tile 0 ('' for none)")
    m.add_argument("--tile", type=int, default=FAMILIES["edsr"].tile)
    m.add_argument("--pad", type=int, default=FAMILIES["edsr"].tile_pad)
    m.add_argument("--rounds", type=int, default=1)
    m.add_argument("--photo", default="astronaut")
    z = sub.add_parser("seams", help="tiled against untiled output")
    z.add_argument("--crop", default="384x128",
                   help="WxH crop for the full-size fixture at the default tile (wider than the tile)")
    z.add_argument("--sweep", type=int, default=128, help="crop edge for the full-size fixture pad sweep (tile = half)")
    z.add_argument("--edsr", type=Path, help="a real EDSR_x3.pb to use instead of the full-size fixture")
    w = sub.add_parser("window", help=argparse.SUPPRESS)
    w.add_argument("--model", type=Path, required=True)
    w.add_argument("--size", type=int, required=True)
    w.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    if args.what == "window":
        print(json.dumps(window_child(args.model, args.size, args.repeats)))
        return 0
    model = edsr_fixture(full=True)
    print(f"<!-- {load_line()} at start -->")
    if args.what == "speed":
        measure_speed(model, [int(t) for t in args.tiles.split(",")], args.pad, args.input_edge, args.rounds)
    elif args.what == "memory":
        edges = [int(e) for e in args.edges.split(",")]
        untiled = [int(e) for e in args.untiled.split(",") if e]
        measure_memory(model, args.tile, args.pad, edges, untiled, args.rounds, args.photo)
    else:
        width, height = (int(v) for v in args.crop.split("x"))
        measure_seams((width, height), args.sweep, args.edsr)
    print(f"<!-- {load_line()} at end -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
