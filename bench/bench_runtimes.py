"""Other CPU runtimes against this worker's PyTorch on the same checkpoint, one window, side by side in one run:
ONNX Runtime and OpenVINO (from an ONNX or a traced export of the same network), and OpenCV's dnn on the ONNX
export. An engine would be worth adding only where one wins clearly here; none is a dependency of the project,
so install them apart and put them on the path:

    pip install --target /tmp/runtimes onnx onnxruntime openvino ml_dtypes protobuf
    PYTHONPATH=/tmp/runtimes .venv/bin/python bench/bench_runtimes.py --model realesr-animevideov3 --size 316

Each runtime runs in this process on 2 threads, its best of `--repeats` forwards after one warm-up; the
difference from PyTorch fp32 is the largest absolute difference of the 0..1 outputs.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_checkpoints import CHECKPOINTS, checkpoint  # noqa: E402
from bench.common import load_line  # noqa: E402


def _best(forward: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    out = forward()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = forward()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(CHECKPOINTS), default="realesr-animevideov3")
    parser.add_argument("--size", type=int, default=316, help="square window edge (316: 0.1 MP)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from infer import checkpoints

    torch.set_num_threads(args.threads)

    def fresh() -> torch.nn.Module:
        """The network as read from the weights (an export must not see tensors made in inference mode)."""
        return checkpoints.load(checkpoint(args.model))[0].model.eval()

    model = fresh()
    x = torch.rand(1, 3, args.size, args.size)
    mp = args.size * args.size / 1e6
    results: list[tuple[str, float, float | None]] = []
    with torch.inference_mode():
        net = model.to(memory_format=torch.channels_last)
        xl = x.contiguous(memory_format=torch.channels_last)
        seconds, reference = _best(lambda: net(xl).numpy(), args.repeats)
        results.append(("PyTorch fp32 (this worker)", seconds, 0.0))
        half = copy.deepcopy(net).to(torch.bfloat16)
        seconds, out = _best(lambda: half(xl.to(torch.bfloat16)).float().numpy(), args.repeats)
        results.append(("PyTorch bf16 (this worker)", seconds, float(np.abs(out - reference).max())))

    folder = Path(tempfile.mkdtemp(prefix="runtimes-"))
    onnx_path = folder / "model.onnx"
    try:
        torch.onnx.export(fresh(), (x,), str(onnx_path), dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=17)
    except Exception as err:  # the exporter needs the onnx package
        print(f"no ONNX export ({type(err).__name__}: {err}); ONNX Runtime and OpenCV skipped", file=sys.stderr)
    feed = x.numpy()
    if onnx_path.is_file():
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            seconds, out = _best(lambda: session.run(None, {"x": feed})[0], args.repeats)
            results.append((f"ONNX Runtime {ort.__version__} fp32", seconds, float(np.abs(out - reference).max())))
        except ImportError:
            print("onnxruntime is not installed: skipped", file=sys.stderr)
        import cv2

        cv2.setNumThreads(args.threads)
        dnn = cv2.dnn.readNetFromONNX(str(onnx_path))

        def opencv() -> np.ndarray:
            dnn.setInput(feed)
            return dnn.forward()

        seconds, out = _best(opencv, args.repeats)
        results.append((f"OpenCV {cv2.__version__} dnn fp32", seconds, float(np.abs(out - reference).max())))
    try:
        import openvino as ov

        core = ov.Core()
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": args.threads})
        converted = ov.convert_model(fresh(), example_input=x)
        for hint in ("f32", "bf16"):
            request = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                             "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            seconds, out = _best(lambda: request.infer({0: feed})[0], args.repeats)
            results.append((f"OpenVINO {ov.__version__.split('-')[0]} {hint}", seconds,
                            float(np.abs(out - reference).max())))
    except ImportError:
        print("openvino is not installed: skipped", file=sys.stderr)

    print(load_line())
    print(f"{args.model}, one {args.size}x{args.size} window, {args.threads} threads, best of {args.repeats}\n")
    print("| runtime | s per input MP | vs PyTorch fp32 | max difference from PyTorch fp32 |")
    print("|---|---|---|---|")
    torch_fp32 = results[0][1]
    for name, seconds, diff in results:
        print(f"| {name} | {seconds / mp:.2f} | {seconds / torch_fp32:.2f}x | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
