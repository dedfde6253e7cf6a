"""Chooses the denoise levels: PSNR of non-local-means settings on noisy and JPEG-damaged real photos.

Each clean photo gets Gaussian noise (a few sigmas) and JPEG compression (quality 10-30); every candidate
setting of cv2.fastNlMeansDenoisingColored is run on each damaged copy and scored by PSNR (RGB, 0-255)
against the clean original, with its time per megapixel. Prints a Markdown table.

    flock /tmp/cpu-heavy.lock .venv/bin/python bench/bench_denoise.py --photos ../shared/photos
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from infer import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench.common import psnr  # noqa: E402
from infer.denoise import NlmSettings  # noqa: E402

PHOTOS = ("astronaut", "camera", "chelsea", "coffee")
SIGMAS = (10, 20, 30)
JPEG_QUALITIES = (10, 20, 30)


def label(s: NlmSettings) -> str:
    return f"h={s.h:g} hColor={s.h_color:g} t={s.template} s={s.search}"


CANDIDATES = (
    NlmSettings(3, 3), NlmSettings(5, 5), NlmSettings(7, 7), NlmSettings(10, 10), NlmSettings(15, 15),
    NlmSettings(5, 10), NlmSettings(10, 20),
    NlmSettings(5, 5, 7, 11), NlmSettings(10, 10, 7, 11), NlmSettings(12, 12, 7, 11), NlmSettings(15, 15, 7, 11),
    NlmSettings(20, 20, 7, 21), NlmSettings(20, 20, 7, 11),
)


def damaged(clean: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Noisy and JPEG-compressed copies of a BGR photo, by label."""
    rng = np.random.default_rng(seed)
    out = {}
    for sigma in SIGMAS:
        noise = rng.normal(0.0, sigma, clean.shape)
        out[f"noise s={sigma}"] = np.clip(clean + noise, 0, 255).astype(np.uint8)
    for q in JPEG_QUALITIES:
        ok, buf = cv2.imencode(".jpg", clean, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        out[f"jpeg q={q}"] = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos")
    parser.add_argument("--threads", type=int, default=0, help="cv2.setNumThreads (0: OpenCV's default)")
    args = parser.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)

    # scores[damage][setting label] = list of PSNRs over photos; seconds[setting label] = (seconds, megapixels)
    scores: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {label(s): [0.0, 0.0] for s in CANDIDATES}
    for i, name in enumerate(PHOTOS):
        clean = cv2.imread(str(args.photos / f"{name}.png"), cv2.IMREAD_COLOR)
        assert clean is not None, name
        mp = clean.shape[0] * clean.shape[1] / 1e6
        for damage, noisy in damaged(clean, seed=i).items():
            row = scores.setdefault(damage, {})
            row.setdefault("none", []).append(psnr(noisy, clean))
            for s in CANDIDATES:
                t = time.perf_counter()
                restored = cv2.fastNlMeansDenoisingColored(noisy, None, s.h, s.h_color, s.template, s.search)
                seconds[label(s)][0] += time.perf_counter() - t
                seconds[label(s)][1] += mp
                row.setdefault(label(s), []).append(psnr(restored, clean))

    labels = ["none"] + [label(s) for s in CANDIDATES]
    print(f"PSNR (dB, mean over {', '.join(PHOTOS)}) against the clean photo; time in s per megapixel "
          f"({cv2.getNumThreads()} OpenCV threads, OpenCV {cv2.__version__})\n")
    print("| setting | " + " | ".join(scores) + " | s/MP |")
    print("|---" * (len(scores) + 2) + "|")
    for label in labels:
        cells = [f"{np.mean(scores[d][label]):.2f}" for d in scores]
        per_mp = f"{seconds[label][0] / seconds[label][1]:.2f}" if label in seconds else "-"
        print(f"| {label} | " + " | ".join(cells) + f" | {per_mp} |")


if __name__ == "__main__":
    main()
