"""Measures repair and colour restoration on the shared photos with seeded synthetic damage (bench/damage.py).

- Detection: precision and recall of `infer.scratches.detect_damage` against the generator's mask, with a 1 px
  tolerance either way (a detected pixel is right when it lies within 1 px of damage; a damaged pixel is found
  when a detected one lies within 1 px of it). Recall counts scratches and dust (a torn corner is for the person
  to paint); precision counts every detected pixel.
- Inpainting method: Telea and Navier-Stokes (radius 3 and 5) filling the generator's mask widened by 1 px (as a
  person paints it), PSNR on the damaged pixels.
- Repair: PSNR (RGB) and SSIM (luminance) of damaged and repaired against the undamaged original, on the
  damaged pixels and on the whole photo, with the painted mask and with automatic detection; and a clean photo
  through automatic detection and repair against itself.
- Colour: mean CIEDE2000 of faded and restored (`infer.colour`) against the original, of the restored photo
  given the original's lightness (L*: what is left is the error in colour alone), and of a clean photo through
  the restoration; and each original channel's black and white points.
- Cost: seconds and peak RSS per megapixel of detection + repair and of the colour restoration, on a 4 MP photo
  (coffee enlarged), each in a fresh process.

    .venv/bin/python bench/bench_repair.py --photos ../shared/photos --seeds 3 --figure docs/repair_example.jpg
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from infer import REPO_ROOT, resident

sys.path.insert(0, str(REPO_ROOT))
from bench.colour_metrics import check_ciede2000, lab, mean_ciede2000, psnr_where, ssim_map  # noqa: E402
from bench.damage import damage, fade, fading  # noqa: E402
from infer import repair as repair_module  # noqa: E402
from infer.colour import HIGH_PERCENTILE, LOW_PERCENTILE, restore_bgr  # noqa: E402
from infer.repair import auto_mask, fill  # noqa: E402
from infer.scratches import detect_damage  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "camera")
_NEAR = np.ones((3, 3), np.uint8)
SECTIONS = ("detection", "inpainting", "repair", "torn", "colour", "cost")


def _near(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _NEAR) > 0


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def detection(photo: np.ndarray, seed: int) -> dict:
    hurt = damage(photo, seed)
    found = detect_damage(hurt.bgr)
    near_found = _near(found)
    return {
        "precision": float((found & _near(hurt.mask)).sum() / max(1, found.sum())),
        "recall_scratches": float((hurt.scratches & near_found).sum() / max(1, hurt.scratches.sum())),
        "recall_dust": float((hurt.dust & near_found).sum() / max(1, hurt.dust.sum())),
        "recall": float(((hurt.scratches | hurt.dust) & near_found).sum() / max(1, (hurt.scratches | hurt.dust).sum())),
    }


def methods(photo: np.ndarray, seed: int) -> dict:
    hurt = damage(photo, seed, torn=False)
    painted = _near(hurt.mask)
    out = {}
    for name, flag in (("telea", cv2.INPAINT_TELEA), ("ns", cv2.INPAINT_NS)):
        for radius in (3, 5):
            filled = cv2.inpaint(hurt.bgr, painted.astype(np.uint8) * 255, radius, flag)
            out[f"{name} r{radius}"] = psnr_where(filled, photo, hurt.mask)
    return out


def _quality(image: np.ndarray, original: np.ndarray, where: np.ndarray) -> dict:
    ssim = ssim_map(image, original)
    return {"psnr": psnr_where(image, original), "psnr_area": psnr_where(image, original, where),
            "ssim": float(ssim.mean()), "ssim_area": float(ssim[where].mean())}


def repair(photo: np.ndarray, seed: int) -> dict:
    """Scratches and dust (no torn corner): damaged, painted-mask repair, automatic repair."""
    hurt = damage(photo, seed, torn=False)
    grey = bool(np.all(photo[..., 0] == photo[..., 1]) and np.all(photo[..., 1] == photo[..., 2]))
    painted = fill(hurt.bgr, _near(hurt.mask), grey)
    automatic = fill(hurt.bgr, auto_mask(hurt.bgr)[0], grey)
    return {"damaged": _quality(hurt.bgr, photo, hurt.mask), "painted": _quality(painted, photo, hurt.mask),
            "auto": _quality(automatic, photo, hurt.mask)}


def torn(photo: np.ndarray, seed: int) -> dict:
    hurt = damage(photo, seed, scratches=False, dust=False)
    painted = fill(hurt.bgr, _near(hurt.mask))
    return {"damaged": psnr_where(hurt.bgr, photo, hurt.mask), "painted": psnr_where(painted, photo, hurt.mask)}


def _with_lightness(bgr: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`bgr` with the L* of `like`: its colour alone, judged apart from its brightness."""
    ours = lab(bgr).astype(np.float32)
    ours[..., 0] = lab(like)[..., 0]
    return np.clip(np.rint(cv2.cvtColor(ours, cv2.COLOR_Lab2BGR) * 255), 0, 255).astype(np.uint8)


def colour(photo: np.ndarray, seed: int) -> dict:
    faded = fade(photo, fading(seed))
    restored = restore_bgr(faded)
    return {"faded": mean_ciede2000(faded, photo), "restored": mean_ciede2000(restored, photo),
            "restored_colour": mean_ciede2000(_with_lightness(restored, photo), photo)}


def channel_points(photo: np.ndarray) -> str:
    """Each channel's black and white points (B, G, R), as `infer.colour` reads them."""
    points = np.percentile(photo.reshape(-1, 3), [LOW_PERCENTILE, HIGH_PERCENTILE], axis=0).T
    return ", ".join(f"{low:.0f}-{high:.0f}" for low, high in points)


COST_DIR = REPO_ROOT / "bench" / "out"


def cost(kind: str, photos: Path) -> dict:
    """One measurement in a fresh process that reads its prepared 4.0 MP input and runs one stage on it: the
    peak RSS it adds over the decoded input is the stage's working memory."""
    photo = cv2.resize(cv2.imread(str(photos / "coffee.png")), (2448, 1632), interpolation=cv2.INTER_CUBIC)
    prepared = damage(photo, 1, torn=False).bgr if kind == "repair" else fade(photo, fading(1))
    COST_DIR.mkdir(parents=True, exist_ok=True)
    path = COST_DIR / f"repair_cost_{kind}.png"
    cv2.imwrite(str(path), prepared)
    out = subprocess.run([sys.executable, __file__, "--cost-child", kind, "--photos", str(path)],
                         capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return json.loads(out.stdout)


def _cost_child(kind: str, path: Path) -> None:
    image = cv2.imread(str(path))
    megapixels = image.shape[0] * image.shape[1] / 1e6
    before = resident.peak_rss_mb()
    started = time.perf_counter()
    if kind == "repair":
        fill(image, auto_mask(image)[0])
    else:
        restore_bgr(image)
    seconds = time.perf_counter() - started
    peak = resident.peak_rss_mb()
    print(json.dumps({"s_per_mp": seconds / megapixels, "mb_per_mp": (peak - before) / megapixels,
                      "megapixels": megapixels}))


def figure(photo: np.ndarray, seed: int, path: Path) -> None:
    """damaged / mask (detected: white, the torn corner painted: grey) / repaired / original, side by side."""
    hurt = damage(photo, seed)
    detected, _ = auto_mask(hurt.bgr)
    painted = _near(hurt.torn)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[painted] = 128
    mask[detected] = 255
    repaired = fill(hurt.bgr, detected | painted)
    panels = [hurt.bgr, cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR), repaired, photo]
    gap = np.full((photo.shape[0], 8, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    cv2.imwrite(str(path), row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO_ROOT.parent / "shared" / "photos")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--figure", type=Path, help="write the side-by-side image here")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="these tables only")
    parser.add_argument("--cost-child", choices=("repair", "colour"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cost_child:
        _cost_child(args.cost_child, args.photos)
        return 0
    check_ciede2000()
    seeds = range(1, args.seeds + 1)
    photos = {name: cv2.imread(str(args.photos / f"{name}.png")) for name in PHOTOS}
    print(f"Seeds 1-{args.seeds}; means over seeds.\n")

    if "detection" in args.only:
        print("| photo | precision | recall (scratches + dust) | recall scratches | recall dust | clean photo: pixels marked |")
        print("|---|---|---|---|---|---|")
        for name, photo in photos.items():
            rows = [detection(photo, s) for s in seeds]
            clean = int(detect_damage(photo).sum())
            print(f"| {name} | {_mean(rows, 'precision'):.2f} | {_mean(rows, 'recall'):.2f} | "
                  f"{_mean(rows, 'recall_scratches'):.2f} | {_mean(rows, 'recall_dust'):.2f} | {clean} |")

    if "inpainting" in args.only:
        print("\nInpainting, PSNR dB on the damaged pixels (painted mask):\n")
        table = {name: [methods(photo, s) for s in seeds] for name, photo in photos.items()}
        labels = list(table[PHOTOS[0]][0])
        print("| photo | " + " | ".join(labels) + " |")
        print("|---|" + "---|" * len(labels))
        for name, rows in table.items():
            print(f"| {name} | " + " | ".join(f"{statistics.fmean(r[k] for r in rows):.2f}" for k in labels) + " |")

    if "repair" in args.only:
        print("\nRepair of scratches and dust (%s, radius %d): PSNR dB / SSIM, whole photo and damaged pixels:\n"
              % (repair_module.INPAINT_METHOD_NAME, repair_module.INPAINT_RADIUS))
        print("| photo | damaged | painted mask | automatic | gain (painted) | gain (automatic) | clean photo through automatic |")
        print("|---|---|---|---|---|---|---|")
        for name, photo in photos.items():
            rows = [repair(photo, s) for s in seeds]

            def cell(which: str) -> str:
                q = {k: statistics.fmean(r[which][k] for r in rows) for k in rows[0][which]}
                return f"{q['psnr']:.2f} / {q['ssim']:.3f} (area {q['psnr_area']:.2f} / {q['ssim_area']:.3f})"

            gain = {w: statistics.fmean(r[w]["psnr"] - r["damaged"]["psnr"] for r in rows) for w in ("painted", "auto")}
            grey = name == "camera"
            clean = psnr_where(fill(photo, auto_mask(photo)[0], grey), photo)
            print(f"| {name} | {cell('damaged')} | {cell('painted')} | {cell('auto')} | {gain['painted']:+.2f} | "
                  f"{gain['auto']:+.2f} | {clean:.2f} |")

    if "torn" in args.only:
        print("\nTorn corner, painted, PSNR dB on its pixels:\n")
        print("| photo | damaged | repaired |")
        print("|---|---|---|")
        for name, photo in photos.items():
            rows = [torn(photo, s) for s in seeds]
            print(f"| {name} | {_mean(rows, 'damaged'):.2f} | {_mean(rows, 'painted'):.2f} |")

    if "colour" in args.only:
        print("\nColour, mean CIEDE2000 against the original:\n")
        print("| photo | faded | restored | ratio | restored, with the original's lightness | clean photo through restore "
              "| original's black-white points (B, G, R) |")
        print("|---|---|---|---|---|---|---|")
        for name, photo in photos.items():
            rows = [colour(photo, s) for s in seeds]
            faded, restored = _mean(rows, "faded"), _mean(rows, "restored")
            print(f"| {name} | {faded:.2f} | {restored:.2f} | {restored / faded:.2f} | {_mean(rows, 'restored_colour'):.2f} | "
                  f"{mean_ciede2000(restore_bgr(photo, name == 'camera'), photo):.2f} | {channel_points(photo)} |")

    if "cost" in args.only:
        print("\nCost on a 4.0 MP photo, each in a fresh process:\n")
        print("| stage | s per MP | peak RSS added, MB per MP |")
        print("|---|---|---|")
        for kind, label in (("repair", "automatic detection + repair"), ("colour", "colour restoration")):
            c = cost(kind, args.photos)
            print(f"| {label} | {c['s_per_mp']:.2f} | {c['mb_per_mp']:.0f} |")

    if args.figure:
        figure(photos["astronaut"], 1, args.figure)
        print(f"\nFigure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
