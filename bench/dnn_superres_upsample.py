"""The plain approach the worker is measured against: one dnn_superres upsample() of the whole photo in one process."""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2

from infer import resident


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--algo", required=True, choices=["edsr", "espcn", "fsrcnn", "lapsrn"])
    parser.add_argument("--scale", required=True, type=int)
    args = parser.parse_args(argv)

    seconds = {}
    t = time.perf_counter()
    image = cv2.imread(args.input, cv2.IMREAD_COLOR)
    if image is None:
        print(f"cannot read {args.input}", file=sys.stderr)
        return 3
    seconds["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(args.model)
    sr.setModel(args.algo, args.scale)
    seconds["load"] = time.perf_counter() - t
    t = time.perf_counter()
    result = sr.upsample(image)
    seconds["infer"] = time.perf_counter() - t
    t = time.perf_counter()
    if not cv2.imwrite(args.output, result):
        print(f"cannot write {args.output}", file=sys.stderr)
        return 7
    seconds["encode"] = time.perf_counter() - t
    print(json.dumps({"event": "done", "seconds": seconds, "peak_rss_mb": resident.peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
