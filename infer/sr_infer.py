"""The per-job worker: decode one photo, upscale it tile by tile, write the result atomically, exit."""

from __future__ import annotations

import time

_T_IMPORT = time.perf_counter()
_T_IMPORT_WALL = time.time()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):
    # Run as `python infer/sr_infer.py`: make the repository importable and stop
    # infer/ itself from shadowing top-level modules.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import psutil  # noqa: E402

from infer import images  # noqa: E402
from infer.engines import DEVICES, ENGINE_CHOICES, create_engine  # noqa: E402
from infer.errors import (  # noqa: E402
    EXIT_OK,
    EXIT_OTHER,
    InputError,
    ModelError,
    OutOfMemoryError,
    OutputError,
    UsageError,
    WorkerError,
)
from infer.events import EventStream  # noqa: E402
from infer.models import default_model_path  # noqa: E402
from infer.families import FAMILIES  # noqa: E402
from infer.modelspec import ModelSpec, spec_from_path  # noqa: E402
from infer.precision import PRECISIONS  # noqa: E402
from infer.upscale import count_tiles, effective_pad, upscale_image  # noqa: E402

DEFAULT_MAX_PIXELS = 16_000_000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print and exit(2) on its own
        raise UsageError(f"{message} (see sr-infer --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sr-infer",
        description="Upscale one photo with a super-resolution model. Prints JSON events on stdout.",
    )
    p.add_argument("--input", required=True, help="photo to upscale (JPEG, PNG, WebP, BMP, TIFF, GIF)")
    p.add_argument("--output", required=True, help="where to write the result; format from the extension (png, jpg, webp)")
    p.add_argument("--model", help="model file (default: $SR_MODEL_PATH, else models/EDSR_x3.pb)")
    p.add_argument("--algo", choices=list(FAMILIES), help="override the algorithm read from the file name")
    p.add_argument("--scale", type=int, help="override the scale read from the file name")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--engine", default="auto", choices=ENGINE_CHOICES,
                   help="auto: PyTorch (on CUDA when a GPU is usable, else the CPU), OpenCV where PyTorch is missing")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the CPU or GPU runs it natively, else fp32 (CPU) or fp16 (GPU)")
    p.add_argument("--tile", type=int, help="input tile edge in pixels; 0 = whole image at once")
    p.add_argument("--tile-pad", type=int, help="context pixels around each tile")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--max-pixels", type=int, help=f"refuse larger inputs (default $SR_MAX_PIXELS or {DEFAULT_MAX_PIXELS})")
    return p


@dataclass
class Timer:
    """Wall time of each stage, in seconds."""

    seconds: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(now - started, 4)
        return now


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"${name} must be a whole number, not {raw!r}") from None


def _check_args(args: argparse.Namespace) -> int:
    """Validate numbers and paths before any real work; returns the pixel limit."""
    max_pixels = args.max_pixels if args.max_pixels is not None else _env_int("SR_MAX_PIXELS", DEFAULT_MAX_PIXELS)
    if max_pixels <= 0:
        raise UsageError("--max-pixels must be positive")
    if args.tile is not None and args.tile < 0:
        raise UsageError("--tile must be 0 (no tiling) or a positive number of pixels")
    if args.tile_pad is not None and args.tile_pad < 0:
        raise UsageError("--tile-pad must be 0 or more")
    if not 1 <= args.quality <= 100:
        raise UsageError("--quality must be between 1 and 100")
    images.output_format(args.output)
    out_dir = Path(args.output).resolve().parent
    if not out_dir.is_dir():
        raise OutputError(f"cannot write {args.output}: folder {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {args.output}: folder {out_dir} is not writable")
    return max_pixels


def _resolve_model(args: argparse.Namespace) -> ModelSpec:
    path = Path(args.model) if args.model else default_model_path()
    spec = spec_from_path(path, args.algo, args.scale)
    if not path.is_file():
        raise ModelError(
            f"model file {path} not found; download it with `sr-models fetch {path.stem}` "
            "or point --model / $SR_MODEL_PATH at a model file"
        )
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty; download it again with `sr-models fetch {path.stem}`")
    return spec


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def run_job(args: argparse.Namespace, events: EventStream, t_main: float) -> int:
    timer = Timer()
    try:
        process_started = psutil.Process().create_time()
    except psutil.Error:
        process_started = _T_IMPORT_WALL
    timer.seconds["startup"] = round(max(0.0, _T_IMPORT_WALL - process_started), 4)
    timer.seconds["imports"] = round(t_main - _T_IMPORT, 4)

    max_pixels = _check_args(args)
    spec = _resolve_model(args)

    # Everything that can refuse the job happens before any device is touched.
    t = time.perf_counter()
    image = images.decode(args.input, max_pixels)
    t = timer.stage("decode", t)
    height, width = image.bgr.shape[:2]
    fmt = images.output_format(args.output)
    if max(width, height) * spec.scale > images.MAX_SIDE[fmt]:
        raise OutputError(
            f"cannot write {args.output}: the result would be {width * spec.scale}x{height * spec.scale}, "
            f"larger than {fmt} allows ({images.MAX_SIDE[fmt]} pixels a side); write .png instead"
        )

    engine = create_engine(args.engine, args.device, args.precision, spec.family)
    note = engine.note
    if note:
        print(f"sr-infer: {note}", file=sys.stderr)
    tile_pad = args.tile_pad if args.tile_pad is not None else spec.family.tile_pad
    tile = args.tile if args.tile is not None else (engine.preferred_tile(spec) or spec.family.tile_for(engine.name))
    total = count_tiles(height, width, tile, effective_pad(spec, tile_pad))
    events.emit(
        "start", input=str(args.input), output=str(args.output), model=str(spec.path), algo=spec.algo,
        scale=spec.scale, engine=engine.name, device=engine.device, precision=engine.precision,
        width=width, height=height, format=image.source_format, tile=tile, tile_pad=tile_pad, tiles=total,
        **({"note": note} if note else {}),
    )

    t = time.perf_counter()
    try:
        engine.load(spec)
        t = timer.stage("load", t)

        def progress(done: int, total: int) -> None:
            events.emit("progress", done=done, total=total)

        result = upscale_image(image, engine, spec, tile, tile_pad, progress)
        t = timer.stage("infer", t)
    finally:
        # Release the model (and any device memory) before the slow encode.
        engine.close()
    t = timer.stage("release", t)
    # Read after close(): GPU time runs until device memory is released.
    extra = engine.stats()
    del image

    images.encode(result, args.output, quality=args.quality)
    timer.stage("encode", t)
    timer.seconds["total"] = round(time.time() - process_started, 4)

    events.emit(
        "done",
        output=str(args.output),
        width=int(result.bgr.shape[1]),
        height=int(result.bgr.shape[0]),
        engine=engine.name,
        device=engine.device,
        precision=engine.precision,
        tile=tile,
        tile_pad=tile_pad,
        seconds=timer.seconds,
        peak_rss_mb=_peak_rss_mb(),
        **extra,
    )
    return EXIT_OK


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so `finally` blocks remove temporary files.
    raise WorkerError("the job was cancelled (the worker received SIGTERM)")


def main(argv: list[str] | None = None) -> int:
    t_main = time.perf_counter()
    events = EventStream()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        return run_job(args, events, t_main)
    except WorkerError as err:
        code, message, exit_code = err.code, err.message, err.exit_code
    except MemoryError:
        err = OutOfMemoryError("ran out of memory; try a smaller --tile or a smaller photo")
        code, message, exit_code = err.code, err.message, err.exit_code
    except FileNotFoundError as err:
        e = InputError(f"input file not found: {err.filename}")
        code, message, exit_code = e.code, e.message, e.exit_code
    except Exception as err:  # the last resort: never leave the front end without an answer
        import traceback

        traceback.print_exc()
        code, message, exit_code = "internal_error", f"unexpected error: {type(err).__name__}: {err}", EXIT_OTHER
    print(f"sr-infer: error: {message}", file=sys.stderr)
    events.emit("error", code=code, message=message, exit_code=exit_code)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
