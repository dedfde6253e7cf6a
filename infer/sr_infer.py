"""The worker's command line: arguments, exit codes, SIGTERM and Ctrl-C; the work itself is infer/pipeline.py."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infer.faces.stage import FaceSettings
    from infer.pipeline import RunOptions, Settings
    from infer.repair import RepairSettings

# The `imports` stage of the done event runs from here to main()'s start: the worker's own modules and the
# libraries they load (OpenCV, numpy), imported at main()'s start (below); spandrel and PyTorch for a checkpoint
# are imported in the run (also `imports`), a `.pb` model's engine library in its `engine` stage. The standard library's few modules above come before it, with the interpreter's own
# start (the `startup` stage), or the launcher's fork (the `fork` stage, infer/zygote.py).
_T_IMPORT = time.perf_counter()
_T_IMPORT_WALL = time.time()

if __package__ in (None, ""):
    # Run as `python infer/sr_infer.py`: make the repository importable and stop
    # infer/ itself from shadowing top-level modules.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print and exit(2) on its own
        from infer.errors import UsageError

        raise UsageError(f"{message} (see sr-infer --help)")


def build_parser() -> argparse.ArgumentParser:
    from infer.contract import (COLOUR_MODES, DEFAULT_MAX_PIXELS, DENOISE_LEVELS, OUTPUT_FORMATS, REPAIR_MODES, Colour,
                                Denoise, Failure, Repair)
    from infer.engines import DEVICES, ENGINE_CHOICES
    from infer.faces.options import DEFAULT_FIDELITY, FACE_MODES, GFPGAN_FILE, FaceMode
    from infer.families import FAMILIES
    from infer.precision import PRECISIONS

    p = _Parser(
        prog="sr-infer",
        description="Upscale photos with a super-resolution model. On a terminal it shows progress bars; "
        "otherwise (or with --json) it prints one JSON event per line on stdout.",
        epilog="Exit codes: 0 done (a batch: every photo done or skipped), else the first failure's, with the "
        "error code of its JSON error event: " + ", ".join(f"{f.exit_code} {f.code}" for f in Failure)
        + " (130: Ctrl-C).",
    )
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="photo(s) to upscale (JPEG, PNG, WebP, BMP, TIFF, GIF) and/or folders of photos (not their subfolders)")
    p.add_argument("--output", required=True,
                   help="one photo: the result file, format from its extension (png, jpg, webp); "
                   "several photos or a folder: the folder for <name>_x<scale>.<ext> (created if missing)")
    p.add_argument("--model", help="model file (default: chosen by --scale/--quality, else $SR_MODEL_PATH, else models/EDSR_x3.pb)")
    p.add_argument("--scale", type=int,
                   help="without --model: use the installed model for this scale (from $SR_MODELS_DIR, else models/); "
                   "with --model: override the scale read from its file name")
    p.add_argument("--quality", metavar="best|fast",
                   help="without --model: the installed model that restores most detail (best) or runs fastest (fast)")
    p.add_argument("--outscale", type=int, metavar="N",
                   help="write the result at N times the input (at most the model's own scale), by a high-quality "
                   "downscale of the model's output: a x4 restoration model serving 2x or 3x")
    p.add_argument("--denoise-strength", type=float, metavar="S",
                   help="0 to 1, for realesr-general-x4v3 (with realesr-general-wdn-x4v3 beside it): how much noise "
                   "the model removes, by blending the two models' weights; replaces --denoise for it")
    p.add_argument("--denoise", default=Denoise.OFF.value, metavar="|".join(DENOISE_LEVELS),
                   help="reduce noise and JPEG artifacts before upscaling (default off)")
    p.add_argument("--repair-mask", metavar="PATH",
                   help="repair the pixels this mask marks before upscaling: a PNG of the photo's size as shown, "
                   "its alpha where it has transparency, else its grey level; non-zero = repair")
    p.add_argument("--repair", default=Repair.OFF.value, choices=REPAIR_MODES,
                   help="auto: find scratches and dust and repair them before upscaling (with --repair-mask: both); "
                   "default off")
    p.add_argument("--find-damage", action="store_true",
                   help="instead of upscaling, write the scratches and dust --repair auto would find as a repair "
                   "mask: a PNG of the photo's size as shown, white where found, black elsewhere (one photo; "
                   "--output ends in .png)")
    p.add_argument("--repair-model", metavar="PATH",
                   help="fill what is repaired with this inpainting network (a LaMa checkpoint as safetensors or a "
                   "weights-only pickle, read through spandrel) instead of OpenCV")
    p.add_argument("--colour", default=Colour.OFF.value, choices=COLOUR_MODES,
                   help="restore: bring back faded colour (white balance and levels) before upscaling; a photo that "
                   "shows no fading is left as it is (default off)")
    p.add_argument("--faces", default=FaceMode.OFF.value, choices=FACE_MODES,
                   help=f"restore faces with GFPGAN after upscaling (default off; needs {GFPGAN_FILE} in the models folder)")
    p.add_argument("--face-fidelity", default=str(DEFAULT_FIDELITY), metavar="0..1",
                   help=f"how far a restored face replaces the plain upscale: 0 not at all, 1 entirely (default {DEFAULT_FIDELITY})")
    p.add_argument("--face-model", metavar="PATH", help=f"the GFPGAN file (default: {GFPGAN_FILE} in the models folder)")
    p.add_argument("--format", choices=[f.name for f in OUTPUT_FORMATS], help="output format in folder mode (default: the input's; PNG for BMP, TIFF, GIF)")
    p.add_argument("--overwrite", action="store_true", help="folder mode: redo photos whose result is already there")
    p.add_argument("--json", action="store_true", help="JSON events on stdout even on a terminal")
    p.add_argument("--algo", choices=list(FAMILIES), help="override the algorithm read from the file name")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--engine", default="auto", choices=ENGINE_CHOICES,
                   help="auto: PyTorch (on CUDA when a GPU is usable, else the CPU), OpenCV where PyTorch is missing; "
                        "torch and opencv run .pb models, spandrel runs PyTorch checkpoints (.pth, .safetensors)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the GPU has it, or the CPU has it and measured it faster than fp32; else fp32 (CPU) or fp16 (GPU)")
    p.add_argument("--tile", type=int, help="input tile edge in pixels; 0 = whole image at once")
    p.add_argument("--tile-pad", type=int, help="context pixels around each tile")
    p.add_argument("--output-quality", type=int, metavar="Q", help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--max-pixels", type=int, help=f"refuse larger inputs (default $SR_MAX_PIXELS or {DEFAULT_MAX_PIXELS})")
    return p


def _env_int(name: str, default: int) -> int:
    from infer.errors import UsageError

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"${name} must be a whole number, not {raw!r}") from None


def _settings(args: argparse.Namespace) -> "Settings":
    """Validate numbers and choices before any real work."""
    from infer.catalog import QUALITIES
    from infer.contract import DEFAULT_MAX_PIXELS, Colour, Denoise
    from infer.denoise import parse_level
    from infer.errors import UsageError
    from infer.memory_budget import CAP_VARIABLE
    from infer.pipeline import Settings

    max_pixels = args.max_pixels if args.max_pixels is not None else _env_int("SR_MAX_PIXELS", DEFAULT_MAX_PIXELS)
    if max_pixels <= 0:
        raise UsageError("--max-pixels must be positive")
    if args.tile is not None and args.tile < 0:
        raise UsageError("--tile must be 0 (no tiling) or a positive number of pixels")
    if args.tile_pad is not None and args.tile_pad < 0:
        raise UsageError("--tile-pad must be 0 or more")
    model_quality, output_quality = None, args.output_quality
    if args.quality is not None:
        if args.quality.strip().isdigit():
            # Older command lines gave the JPEG/WebP quality as --quality N.
            output_quality = output_quality if output_quality is not None else int(args.quality)
        elif args.quality.strip().lower() in QUALITIES:
            model_quality = args.quality.strip().lower()
        else:
            raise UsageError(f"--quality must be one of {', '.join(QUALITIES)}, not {args.quality!r}")
    output_quality = 95 if output_quality is None else output_quality
    if not 1 <= output_quality <= 100:
        raise UsageError("--output-quality must be between 1 and 100")
    if args.outscale is not None and args.outscale < 1:
        raise UsageError("--outscale must be 1 or more")
    strength = args.denoise_strength
    if strength is not None:
        if not 0.0 <= strength <= 1.0:
            raise UsageError("--denoise-strength must be between 0 and 1")
        if parse_level(args.denoise) is not Denoise.OFF:
            raise UsageError("--denoise-strength replaces --denoise for the models that have it; give one of them")
    memory_mb = _env_int(CAP_VARIABLE, 0)
    if memory_mb < 0:
        raise UsageError(f"${CAP_VARIABLE} must be 0 (no limit) or more")
    return Settings(max_pixels, parse_level(args.denoise), model_quality, output_quality, args.outscale, strength,
                    _face_settings(args), memory_mb, _repair_settings(args), Colour(args.colour))


def _repair_settings(args: argparse.Namespace) -> "RepairSettings":
    from infer.contract import Repair
    from infer.errors import UsageError
    from infer.repair import RepairSettings

    mask = Path(args.repair_mask) if args.repair_mask else None
    if mask is not None and _is_batch(args):
        raise UsageError("--repair-mask is for one photo; a batch can use --repair auto")
    model = Path(args.repair_model) if args.repair_model else None
    if model is not None and not model.is_file():
        from infer.errors import ModelError

        raise ModelError(f"the repair model {model} was not found")
    return RepairSettings(mask, Repair(args.repair), model)


def _is_batch(args: argparse.Namespace) -> bool:
    from infer import batch

    return batch.is_batch(list(args.input), args.output)


def _face_settings(args: argparse.Namespace) -> "FaceSettings":
    from infer.errors import UsageError
    from infer.faces.options import GFPGAN_FILE, FaceMode, parse_fidelity
    from infer.faces.stage import FaceSettings
    from infer.models import models_dir

    try:
        fidelity = parse_fidelity(args.face_fidelity)
    except ValueError as err:
        raise UsageError(f"--face-fidelity: {err}") from None
    if args.faces != FaceMode.ON.value:
        return FaceSettings(fidelity=fidelity)
    model = Path(args.face_model) if args.face_model else models_dir() / GFPGAN_FILE
    # YuNet is looked for beside the GFPGAN file.
    return FaceSettings(enabled=True, fidelity=fidelity, model=model, models_folder=model.parent, device=args.device)


def _options(args: argparse.Namespace) -> "RunOptions":
    """The parsed arguments as the pipeline's typed options."""
    from infer.pipeline import RunOptions

    return RunOptions(
        inputs=tuple(args.input), output=args.output, settings=_settings(args), model=args.model,
        scale=args.scale, algo=args.algo, format=args.format, overwrite=args.overwrite, engine=args.engine,
        device=args.device, precision=args.precision, tile=args.tile, tile_pad=args.tile_pad,
        find_damage=_find_damage(args),
    )


def _find_damage(args: argparse.Namespace) -> bool:
    from infer.errors import UsageError

    if args.find_damage and _is_batch(args):
        raise UsageError("--find-damage is for one photo and one .png output")
    return bool(args.find_damage)


def _on_sigterm(signum: int, frame: object) -> None:
    from infer.errors import CancelledError

    # Turn SIGTERM into an exception so `finally` blocks remove temporary files.
    raise CancelledError("the job was cancelled (the worker received SIGTERM)")


def _wants_console(argv: list[str]) -> bool:
    return sys.stdout.isatty() and "--json" not in argv


def _without_libraries(err: ModuleNotFoundError) -> int:
    """sr-infer installed without the worker's libraries (the front end's own `pip install .`): what to install,
    on stderr and, for a program reading the events, as the `error` event; exit 5 like any missing engine."""
    from infer.contract import EventKind, Failure
    from infer.events import EventStream

    message = (f"sr-infer needs the worker's libraries (numpy, OpenCV, PyTorch), and {err.name or 'one of them'} "
               "is not installed: run pip install '.[worker]' in the project folder (or pip install "
               "'photo-upscaler[worker]'), or make setup")
    print(f"sr-infer: error: {message}", file=sys.stderr)
    if not sys.stdout.isatty():
        EventStream().emit(EventKind.ERROR, code=Failure.MODEL.code, message=message, exit_code=Failure.MODEL.exit_code)
    return Failure.MODEL.exit_code


def main(argv: list[str] | None = None) -> int:
    from infer import huge_pages

    huge_pages.ask(os.environ)  # before the first tensor: a worker started by hand gets what the service's get
    # Imported here, not at the top: after _T_IMPORT (so that `imports` times them) and after the
    # repository was made importable.
    try:
        from infer import pipeline
    except ModuleNotFoundError as err:
        return _without_libraries(err)
    from infer.errors import EXIT_INTERRUPTED, EXIT_OTHER, InputError, OutOfMemoryError, WorkerError
    from infer.contract import EventKind
    from infer.events import EventSink, EventStream

    start = pipeline.ProcessStart.of_this_process(_T_IMPORT, _T_IMPORT_WALL)
    argv = sys.argv[1:] if argv is None else list(argv)
    console = None
    if _wants_console(argv):
        from infer.console import Console  # only people at a terminal need the progress bars

        console = Console()
    events: EventSink = console or EventStream()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            return pipeline.run(_options(build_parser().parse_args(argv)), events, start)
        except WorkerError as err:
            code, message, exit_code = err.code, err.message, err.exit_code
        except MemoryError:
            err = OutOfMemoryError("ran out of memory; try a smaller --tile or a smaller photo")
            code, message, exit_code = err.code, err.message, err.exit_code
        except FileNotFoundError as err:
            e = InputError(f"input file not found: {err.filename}")
            code, message, exit_code = e.code, e.message, e.exit_code
        except KeyboardInterrupt:
            code, message, exit_code = "internal_error", "stopped (Ctrl-C); no partial file was left", EXIT_INTERRUPTED
        except Exception as err:  # the last resort: never leave the front end without an answer
            import traceback

            traceback.print_exc()
            code, message, exit_code = "internal_error", f"unexpected error: {type(err).__name__}: {err}", EXIT_OTHER
        if console is None:
            print(f"sr-infer: error: {message}", file=sys.stderr)
        events.emit(EventKind.ERROR, code=code, message=message, exit_code=exit_code)
        return exit_code
    finally:
        if console is not None:
            console.close()


if __name__ == "__main__":
    sys.exit(main())
