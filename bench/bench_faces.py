"""The face stage's cost per face on the CPU: detection, GFPGAN (its v1.4 layout, random weights: the cost does
not depend on them) at batch 1 and 2, crop and paste; each batch size in its own process for its peak RSS.

    flock /tmp/cpu-heavy.lock .venv/bin/python bench/bench_faces.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from infer import REPO_ROOT, resident

sys.path.insert(0, str(REPO_ROOT))
from bench.bench_gpu import matmul_peak  # noqa: E402
from bench.common import OUT_DIR, load_line, median, photo_path, read_bgr, run_child  # noqa: E402


def _child(model: Path, batch: int, repeats: int) -> None:
    """Loads the checkpoint as the worker does and times `repeats` calls of `batch` faces; prints JSON."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from infer.faces.restorers import GFPGANRestorer

    t = time.perf_counter()
    restorer = GFPGANRestorer(model, "cpu")
    load = time.perf_counter() - t
    faces = np.random.default_rng(0).integers(0, 256, (batch, 512, 512, 3), dtype=np.uint8)
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        restorer.restore(faces)
        seconds.append(time.perf_counter() - t)
    with FlopCounterMode(display=False) as counter:
        restorer.restore(faces[:1])
    print(json.dumps({"load": load, "seconds": seconds, "flops_per_face": counter.get_total_flops(),
                      "threads": torch.get_num_threads(), "precision": restorer.precision,
                      "peak_rss_mb": resident.peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))

    import cv2
    import torch

    from infer.faces.align import crop_face, face_matrix, paste_face
    from infer.faces.detect import HaarDetector
    from tests.fixtures.faces import write_random_gfpgan

    print(load_line())
    model = OUT_DIR / "faces" / "GFPGANv1.4.pth"
    if not model.is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        write_random_gfpgan(model)

    photo = read_bgr(photo_path("astronaut"))
    detector = HaarDetector()
    detect = []
    for _ in range(5):
        t = time.perf_counter()
        faces = detector.detect(photo)
        detect.append(time.perf_counter() - t)
    upscaled = cv2.resize(photo, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    matrix = face_matrix(faces[0].scaled(3).landmarks)
    geometry = []
    for _ in range(20):
        t = time.perf_counter()
        paste_face(upscaled, crop_face(upscaled, matrix), matrix)
        geometry.append(time.perf_counter() - t)
    print(f"Haar detection, astronaut 512x512: median {median(detect) * 1e3:.1f} ms ({len(faces)} face)")
    print(f"crop + paste of one face into the x3 photo: median {median(geometry) * 1e3:.1f} ms")

    peak = matmul_peak(torch, "cpu", torch.float32)
    print(f"fp32 matmul rate: {peak * 1e3:.1f} GFLOP/s")
    for batch in args.batches:
        run = run_child([sys.executable, __file__, "--child", str(model), str(batch), str(args.repeats)]).check()
        result = json.loads(run.stdout.strip().splitlines()[-1])
        per_face = median(result["seconds"]) / batch
        floor = result["flops_per_face"] / (peak * 1e12)
        print(f"GFPGAN {result['precision']} batch {batch}: load {result['load']:.2f} s, median {per_face:.2f} s a face "
              f"({result['flops_per_face'] / 1e9:.0f} GFLOP a face; floor at the matmul rate {floor:.2f} s, "
              f"{per_face / floor:.1f}x it), peak RSS {run.peak_rss_mb:.0f} MB, {result['threads']} threads")


if __name__ == "__main__":
    main()
