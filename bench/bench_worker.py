"""The worker process (default tiling) against a plain dnn_superres upsample() of the whole photo: time, peak RSS, output."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from infer import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench.common import (  # noqa: E402
    COLOUR_PHOTOS,
    OUT_DIR,
    ChildRun,
    centre_crop,
    edsr_fixture,
    fmt_psnr,
    load_line,
    log,
    max_abs_diff,
    median,
    naive_cmd,
    photo_path,
    psnr,
    read_bgr,
    run_child,
    shared_model,
    worker_cmd,
)
from infer.modelspec import spec_from_path  # noqa: E402


@dataclass
class Case:
    """One model on one input, run both ways every round."""

    label: str
    model: Path
    input: Path
    worker: list[ChildRun] = field(default_factory=list)
    naive: list[ChildRun] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.model.parent.name}_{self.model.stem}_{self.input.stem}"


def run_case(case: Case, out_dir: Path, round_index: int) -> None:
    spec = spec_from_path(case.model)
    w_out, n_out = out_dir / f"{case.key}_worker.png", out_dir / f"{case.key}_naive.png"
    sides = [
        (case.worker, worker_cmd(case.input, w_out, case.model)),
        (case.naive, naive_cmd(case.input, n_out, case.model, spec.algo, spec.scale)),
    ]
    # Alternate which goes first so neither always meets a warmer page cache or a quieter machine.
    for runs, cmd in sides if round_index % 2 == 0 else sides[::-1]:
        runs.append(run_child(cmd).check())
    log(f"round {round_index + 1} {case.label} {case.input.name}: worker {case.worker[-1].seconds:.1f} s "
        f"{case.worker[-1].peak_rss_mb:.0f} MB, naive {case.naive[-1].seconds:.1f} s "
        f"{case.naive[-1].peak_rss_mb:.0f} MB; {load_line()}")


def report(cases: list[Case], out_dir: Path) -> None:
    print("| model | input | worker tiles (tile/pad) | worker s | dnn_superres s | ratio | worker CPU s | "
          "dnn_superres CPU s | worker infer s | dnn_superres infer s | worker peak RSS MB | "
          "dnn_superres peak RSS MB | max abs diff | PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        ws, ns = median([r.seconds for r in c.worker]), median([r.seconds for r in c.naive])
        wc, nc = median([r.cpu_seconds for r in c.worker]), median([r.cpu_seconds for r in c.naive])
        wi = median([r.event("done")["seconds"]["infer"] for r in c.worker])
        ni = median([r.event("done")["seconds"]["infer"] for r in c.naive])
        wm, nm = median([r.peak_rss_mb for r in c.worker]), median([r.peak_rss_mb for r in c.naive])
        a = read_bgr(out_dir / f"{c.key}_worker.png")
        b = read_bgr(out_dir / f"{c.key}_naive.png")
        start = c.worker[0].event("start")
        img = read_bgr(c.input)
        print(f"| {c.label} | {c.input.stem.split('_')[0]} {img.shape[1]}x{img.shape[0]} | {start['tiles']} ({start['tile']}/"
              f"{start['tile_pad']}) | {ws:.2f} | {ns:.2f} | {ws / ns:.2f} | {wc:.2f} | {nc:.2f} | {wi:.2f} | {ni:.2f} | {wm:.0f} | "
              f"{nm:.0f} | {max_abs_diff(a, b)} | {fmt_psnr(psnr(a, b))} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edsr-sizes", default="96,192,384x128",
                        help="astronaut crops (N or WxH) for the full-size EDSR fixture ('' to skip)")
    parser.add_argument("--models", default="FSRCNN_x3,ESPCN_x3", help="shared models run on whole photos")
    parser.add_argument("--photos", default=",".join(COLOUR_PHOTOS))
    args = parser.parse_args(argv)

    out_dir = OUT_DIR / "worker"
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    if args.edsr_sizes:
        full = edsr_fixture(full=True)
        for size in args.edsr_sizes.split(","):
            width, _, height = size.partition("x")
            crop = centre_crop("astronaut", int(height or width), int(width))
            cases.append(Case("EDSR fixture 32x256", full, crop))
    for name in filter(None, args.models.split(",")):
        for photo in filter(None, args.photos.split(",")):
            cases.append(Case(name, shared_model(name), photo_path(photo)))

    print(f"<!-- {load_line()} at start -->")
    for r in range(args.rounds):
        for case in cases:
            run_case(case, out_dir, r)
    report(cases, out_dir)
    print(f"<!-- {load_line()} at end; medians of {args.rounds} rounds -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
