"""Times reading a full-size EDSR-layout graph: our GraphDef reader (+ dequantizing every weight) next to OpenCV's importer."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

from infer import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # the fixture generator lives in tests/, which is not installed
from infer.tfgraph import read_graph  # noqa: E402
from tests.fixtures.edsr_graph import write_edsr_graph  # noqa: E402

PUBLISHED_EDSR_X3_BYTES = 38_524_784


def _interleaved_medians(fns: list, repeats: int) -> list[float]:
    """Runs the functions in turn, round after round, so machine load hits them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def _read_all_weights(path: Path) -> None:
    graph = read_graph(path)
    for node in graph.nodes:
        if node.op == "Conv2D":
            graph.const(node.inputs[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out" / "tfgraph")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    rows = []
    for label, quantize in (("quantized", True), ("plain", False)):
        path = write_edsr_graph(args.out / label / "EDSR_x3.pb", blocks=32, filters=256, scale=3, quantize=quantize)
        ours, opencv = _interleaved_medians(
            [lambda: _read_all_weights(path), lambda: cv2.dnn.readNetFromTensorflow(str(path))], args.repeats
        )
        rows.append((label, path.stat().st_size, ours, opencv))
    print(f"published EDSR_x3.pb: {PUBLISHED_EDSR_X3_BYTES} bytes")
    print("| fixture (32 blocks x 256 filters, x3) | bytes | read_graph + all kernels (s) | cv2.dnn.readNetFromTensorflow (s) | ratio |")
    print("|---|---|---|---|---|")
    for label, size, ours, opencv in rows:
        print(f"| {label} | {size:,} | {ours:.3f} | {opencv:.3f} | {ours / opencv:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
