"""PNG zlib level vs encode time and size on a real 1800x1200 upscaled photo (chooses images.PNG_COMPRESS_LEVEL)."""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def upscaled_photo() -> np.ndarray:
    """coffee.png (600x400) through ESPCN x3: the 1800x1200 RGB result a job would write."""
    bgr = cv2.imread(str(SHARED / "photos" / "coffee.png"), cv2.IMREAD_COLOR)
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(SHARED / "models" / "ESPCN_x3.pb"))
    sr.setModel("espcn", 3)
    return np.ascontiguousarray(sr.upsample(bgr)[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,2,3,4,6,9")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    rgb = upscaled_photo()
    pil = Image.fromarray(rgb, "RGB")
    times: dict[int, list[float]] = {level: [] for level in levels}
    sizes: dict[int, int] = {}
    # Levels interleaved within each round so machine load hits them alike.
    for _ in range(args.rounds):
        for level in levels:
            buf = io.BytesIO()
            t = time.perf_counter()
            pil.save(buf, format="PNG", compress_level=level)
            times[level].append(time.perf_counter() - t)
            sizes[level] = buf.tell()

    base = statistics.median(times[6]) if 6 in times else None
    print(f"{pil.width}x{pil.height} RGB, {args.rounds} rounds, median seconds")
    print("| level | encode s (median) | vs level 6 | size MB | size vs level 6 |")
    print("|---|---|---|---|---|")
    for level in levels:
        med = statistics.median(times[level])
        ratio = f"{med / base:.2f}x" if base else "-"
        size_ratio = f"{sizes[level] / sizes[6]:.3f}x" if 6 in sizes else "-"
        print(f"| {level} | {med:.3f} | {ratio} | {sizes[level] / 1e6:.2f} | {size_ratio} |")


if __name__ == "__main__":
    main()
