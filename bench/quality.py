"""PSNR on Y of every model in a folder against bicubic: downscale a photo by the model's scale, upscale it back, compare."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from infer import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench.common import OUT_DIR, SHARED_MODELS_DIR, log, photo_path, read_bgr, run_child, worker_cmd  # noqa: E402
from infer.engines.opencv import OpenCVEngine  # noqa: E402
from infer.errors import ModelError  # noqa: E402
from infer.modelspec import ModelSpec, spec_from_path  # noqa: E402
from infer.upscale import upscale_bgr  # noqa: E402

# logo.png is left out: a transparent graphic, its hidden pixels' colour means nothing.
PHOTOS = ("coffee", "chelsea", "astronaut", "camera", "color")
# color.png is a synthetic colour wheel of smooth gradients: every interpolator scores near 50 dB on it,
# so it is shown but kept out of the means, which it would otherwise dominate.
NOT_IN_MEAN = ("color",)


# Figures in ../shared/models/README.md, measured with dnn_superres on OpenCV's full-range Y.
REFERENCE_X3 = {
    "coffee": {"bicubic": 25.79, "FSRCNN_x3": 26.85, "ESPCN_x3": 26.99, "FSRCNN-small_x3": 26.42},
    "chelsea": {"bicubic": 30.18, "FSRCNN_x3": 30.67, "ESPCN_x3": 30.72, "FSRCNN-small_x3": 30.59},
    "astronaut": {"bicubic": 26.39, "FSRCNN_x3": 27.47, "ESPCN_x3": 27.60, "FSRCNN-small_x3": 26.92},
}


def luma_bt601(bgr: np.ndarray, studio: bool = True) -> np.ndarray:
    """ITU-R BT.601 Y, unrounded. studio: 16-235 as the SR papers compute it (MATLAB's rgb2ycbcr);
    otherwise full range 0-255 (OpenCV's COLOR_BGR2YCrCb). The two differ by a constant 1.32 dB of PSNR."""
    b, g, r = (bgr[:, :, i].astype(np.float64) for i in range(3))
    if studio:
        return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return 0.299 * r + 0.587 * g + 0.114 * b


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int, studio: bool = True) -> float:
    """PSNR of the Y channels with `shave` pixels cut from every border (peak 255)."""
    if sr.shape != hr.shape:
        raise ValueError(f"shapes differ: {sr.shape} vs {hr.shape}")
    ys, yh = luma_bt601(sr, studio), luma_bt601(hr, studio)
    if shave:
        ys, yh = ys[shave:-shave, shave:-shave], yh[shave:-shave, shave:-shave]
    mse = float(np.mean((ys - yh) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def crop_to_multiple(bgr: np.ndarray, scale: int) -> np.ndarray:
    h, w = bgr.shape[:2]
    return bgr[: h - h % scale, : w - w % scale]


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape[:2]
    return cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


@dataclass
class Upscaler:
    """Runs one model through the real worker process or, with via='engine', the worker's code in this process."""

    spec: ModelSpec
    via: str
    work_dir: Path
    engine: str = "opencv"

    def __post_init__(self) -> None:
        if self.via == "engine":
            self.engine = OpenCVEngine()
            self.engine.load(self.spec)
        else:
            self.work_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, lr: np.ndarray, name: str) -> np.ndarray:
        if self.via == "engine":
            tile, pad = self.spec.family.tile, self.spec.family.tile_pad
            return upscale_bgr(lr, self.engine, self.spec, tile, pad)
        src = self.work_dir / f"{name}_lr_x{self.spec.scale}.png"
        dst = self.work_dir / f"{name}_{self.spec.path.stem}.png"
        if not cv2.imwrite(str(src), lr):
            raise SystemExit(f"cannot write {src}")
        run_child(worker_cmd(src, dst, self.spec.path, engine=self.engine)).check()
        return read_bgr(dst)


def find_models(folders: list[Path]) -> list[ModelSpec]:
    specs = []
    for folder in folders:
        for path in sorted(folder.glob("*.pb")):
            try:
                specs.append(spec_from_path(path))
            except ModelError as err:
                log(f"skipping {path}: {err}")
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="*", type=Path, default=[SHARED_MODELS_DIR, REPO_ROOT / "models"],
                        help="folders whose *.pb models are evaluated (default: ../shared/models and models/)")
    parser.add_argument("--photos", default=",".join(PHOTOS))
    parser.add_argument("--via", choices=["worker", "engine"], default="worker",
                        help="worker: the real sr-infer process per image (default); engine: the same code in-process")
    parser.add_argument("--engine", default="opencv", help="the worker's --engine (default opencv, the exact path; auto: the default path)")
    parser.add_argument("--check-dnn-superres", action="store_true",
                        help="also upscale with cv2.dnn_superres in-process and print its PSNR next to ours")
    args = parser.parse_args(argv)

    specs = find_models([f for f in args.folders if f.is_dir()])
    if not specs:
        raise SystemExit(f"no models (*.pb) in {', '.join(map(str, args.folders))}")
    photos = [p for p in args.photos.split(",") if p]
    originals = {p: read_bgr(photo_path(p)) for p in photos}
    work_dir = OUT_DIR / "quality"

    reference: dict[tuple[str, str], float] = {}  # (photo, method) -> full-range PSNR, for the README check
    for scale in sorted({s.scale for s in specs}):
        group = [s for s in specs if s.scale == scale]
        scores: dict[str, list[float]] = {"bicubic": []}
        for s in group:
            scores[s.path.stem] = []
            if args.check_dnn_superres:
                scores[f"{s.path.stem} (dnn_superres)"] = []
        upscalers = {s.path.stem: Upscaler(s, args.via, work_dir, args.engine) for s in group}
        for photo in photos:
            hr = crop_to_multiple(originals[photo], scale)
            lr = downscale(hr, scale)
            up = bicubic(lr, scale)
            scores["bicubic"].append(psnr_y(up, hr, scale))
            if scale == 3:
                reference[(photo, "bicubic")] = psnr_y(up, hr, scale, studio=False)
            for s in group:
                up = upscalers[s.path.stem](lr, photo)
                scores[s.path.stem].append(psnr_y(up, hr, scale))
                reference[(photo, s.path.stem)] = psnr_y(up, hr, scale, studio=False)
                if args.check_dnn_superres:
                    sr = cv2.dnn_superres.DnnSuperResImpl_create()
                    sr.readModel(str(s.path))
                    sr.setModel(s.algo, s.scale)
                    scores[f"{s.path.stem} (dnn_superres)"].append(psnr_y(sr.upsample(lr), hr, scale))
            log(f"x{scale} {photo}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in scores.items()))
        names = list(scores)
        print(f"\nx{scale} (PSNR dB on Y, {scale}-pixel border shaved)\n")
        print("| photo | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for i, photo in enumerate(photos):
            h, w = crop_to_multiple(originals[photo], scale).shape[:2]
            print(f"| {photo} {w}x{h} | " + " | ".join(f"{scores[n][i]:.2f}" for n in names) + " |")
        kept = [i for i, p in enumerate(photos) if p not in NOT_IN_MEAN]
        if kept:
            means = {n: float(np.mean([scores[n][i] for i in kept])) for n in names}
            label = "mean" + (f" (without {', '.join(p for p in photos if p in NOT_IN_MEAN)})" if len(kept) < len(photos) else "")
            print(f"| **{label}** | " + " | ".join(f"**{means[n]:.2f}**" for n in names) + " |")
            print("| mean gain over bicubic | " + " | ".join(f"{means[n] - means['bicubic']:+.2f}" for n in names) + " |")

    rows = [(p, m, ref, reference[(p, m)]) for p, refs in REFERENCE_X3.items() for m, ref in refs.items()
            if (p, m) in reference]
    if rows:
        print("\nAgainst ../shared/models/README.md (x3, full-range Y as OpenCV's YCrCb, 3-pixel border shaved)\n")
        print("| photo | method | README (dnn_superres) | ours | difference |")
        print("|---|---|---|---|---|")
        for photo, method, ref, ours in rows:
            print(f"| {photo} | {method} | {ref:.2f} | {ours:.2f} | {ours - ref:+.3f} |")
        worst = max(abs(ours - ref) for _, _, ref, ours in rows)
        print(f"\nLargest difference: {worst:.3f} dB over {len(rows)} figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
