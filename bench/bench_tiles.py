"""EDSR tile size and pad on the CPU: speed and peak RSS per tile, memory against input size, tiled against untiled output."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from infer import REPO_ROOT

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
    worker_cmd,
)
from infer.engines.opencv import OpenCVEngine  # noqa: E402
from infer.modelspec import spec_from_path  # noqa: E402
from infer.sr_infer import DEFAULT_TILE, DEFAULT_TILE_PAD  # noqa: E402
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
    setup_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    window = rng.uniform(-100, 100, (size, size, 3)).astype(np.float32)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        engine.run(window)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"setup_s": setup_s, "setup_rss_mb": setup_rss, "wall_s": wall, "cpu_s": cpu}


def _windows(length: int, tile: int, pad: int) -> tuple[int, int]:
    """Number of tiles and window edge the worker's tiling uses for a square input."""
    tiles = plan_tiles(length, length, tile, pad)
    y0, y1, _, _ = tiles[0].window
    return len(tiles), y1 - y0


def measure_speed(model: Path, tiles: list[int], pad: int, input_edge: int, rounds: int) -> None:
    """Seconds per window for each tile size, in fresh processes, tile sizes interleaved round by round."""
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
          f"{median(setup_s):.2f} s (median of {len(setup_s)}).")
    print()
    ref = next((t for t in tiles if t == DEFAULT_TILE["edsr"]), tiles[0])
    per_mp = {t: median(wall[t + 2 * pad]) / (t * t) * 1e6 for t in tiles}
    print(f"| tile | window (tile + 2x{pad}) | s per window (median) | CPU s per window | ms per window px | "
          f"s per input MP, large photo | vs tile {ref} | {input_edge}x{input_edge} input: tiles x window | "
          f"s for that input | peak RSS MB | RSS over model-only MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in tiles:
        w = t + 2 * pad
        n, edge = _windows(input_edge, t, pad)
        t_input = n * median(wall[edge])
        print(
            f"| {t} | {w} | {median(wall[w]):.2f} | {median(cpu[w]):.2f} | {median(wall[w]) / (w * w) * 1e3:.3f} | "
            f"{per_mp[t]:.0f} | {per_mp[t] / per_mp[ref]:.2f} | {n} x {edge} | {t_input:.1f} | "
            f"{median(rss[w]):.0f} | {median(rss[w]) - base:.0f} |"
        )


def measure_memory(model: Path, tile: int, pad: int, edges: list[int], rounds: int, photo: str) -> None:
    """The real worker at the default tile on growing inputs, and untiled at the smallest for contrast."""
    out_dir = OUT_DIR / "memory"
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [(e, tile) for e in edges] + [(edges[0], 0)]
    results: dict[tuple[int, int], list] = {c: [] for c in cases}
    for r in range(rounds):
        for edge, t in cases:
            inp = centre_crop(photo, edge)
            run = run_child(worker_cmd(inp, out_dir / f"out_{edge}_{t}.png", model, "--tile", str(t),
                                       "--tile-pad", str(pad))).check()
            done = run.event("done")
            start = run.event("start")
            results[(edge, t)].append((run.peak_rss_mb, done["seconds"]["infer"], start["tiles"]))
            log(f"round {r + 1}: {edge}x{edge} tile {t}: peak {run.peak_rss_mb:.0f} MB, "
                f"infer {done['seconds']['infer']:.1f} s; {load_line()}")
    print(f"| input ({photo} crop) | tile / pad | tiles | peak RSS MB (wait4) | infer s |")
    print("|---|---|---|---|---|")
    for edge, t in cases:
        rows = results[(edge, t)]
        label = f"{t} / {pad}" if t else "untiled (--tile 0)"
        print(f"| {edge}x{edge} | {label} | {rows[0][2]} | {median([r[0] for r in rows]):.0f} | "
              f"{median([r[1] for r in rows]):.1f} |")


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
            print(f"| {label} | {name} {bgr.shape[1]}x{bgr.shape[0]} | {tile} / {pad} | {n} | "
                  f"{max_abs_diff(tiled, untiled)} | {100.0 * np.count_nonzero(diff) / diff.size:.3f} | "
                  f"{fmt_psnr(psnr(tiled, untiled))} |", flush=True)
    engine.close()


def measure_seams(crop_edge: int, sweep_edge: int) -> None:
    """Tiled against untiled output, in-process through infer.upscale (the worker's own tiling and colour code)."""
    print("| model | input | tile / pad | tiles | max abs diff | pixels differing % | PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    engine = OpenCVEngine()
    tile, pad = DEFAULT_TILE["edsr"], DEFAULT_TILE_PAD["edsr"]
    full = edsr_fixture(full=True)
    crop = {"astronaut": read_bgr(centre_crop("astronaut", crop_edge))}
    _seam_rows(engine, full, "EDSR fixture 32x256", crop, [(tile, pad), (tile, 0)])
    log(f"full-size fixture, default tile done; {load_line()}")
    sweep_tile = sweep_edge // 2
    sweep = {"astronaut": read_bgr(centre_crop("astronaut", sweep_edge))}
    _seam_rows(engine, full, "EDSR fixture 32x256", sweep, [(sweep_tile, p) for p in (0, 8, 16, 24)])
    log(f"full-size fixture, pad sweep done; {load_line()}")
    photos = {name: read_bgr(photo_path(name)) for name in COLOUR_PHOTOS}
    _seam_rows(engine, edsr_fixture(full=False), "EDSR fixture 2x16", photos, [(tile, pad), (tile, 0)])
    for name in ("FSRCNN_x3", "ESPCN_x3"):
        model = shared_model(name)
        algo = spec_from_path(model).algo
        t, p = DEFAULT_TILE[algo], DEFAULT_TILE_PAD[algo]
        _seam_rows(engine, model, name, photos, [(t, p), (t, 0), (64, p), (64, 0)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed", help="seconds per window and peak RSS for each tile size (full-size fixture)")
    s.add_argument("--tiles", default=",".join(map(str, TILES)))
    s.add_argument("--pad", type=int, default=DEFAULT_TILE_PAD["edsr"])
    s.add_argument("--input-edge", type=int, default=256, help="square input the per-input cost is computed for")
    s.add_argument("--rounds", type=int, default=3)
    m = sub.add_parser("memory", help="peak RSS of the real worker against input size (full-size fixture)")
    m.add_argument("--edges", default="192,384")
    m.add_argument("--tile", type=int, default=DEFAULT_TILE["edsr"])
    m.add_argument("--pad", type=int, default=DEFAULT_TILE_PAD["edsr"])
    m.add_argument("--rounds", type=int, default=1)
    m.add_argument("--photo", default="astronaut")
    z = sub.add_parser("seams", help="tiled against untiled output")
    z.add_argument("--crop", type=int, default=192, help="crop edge for the full-size fixture at the default tile")
    z.add_argument("--sweep", type=int, default=128, help="crop edge for the full-size fixture pad sweep (tile = half)")
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
        measure_memory(model, args.tile, args.pad, [int(e) for e in args.edges.split(",")], args.rounds, args.photo)
    else:
        measure_seams(args.crop, args.sweep)
    print(f"<!-- {load_line()} at end -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
