"""The worker: decode a photo, denoise it if asked, upscale it tile by tile, write the result atomically."""

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

from infer import batch, images  # noqa: E402
from infer.catalog import QUALITIES, InstalledModel, choose, installed_models  # noqa: E402
from infer.denoise import DENOISE_LEVELS, Denoise, denoise_image, parse_level  # noqa: E402
from infer.engines import DEVICES, ENGINE_CHOICES, Engine, create_engine  # noqa: E402
from infer.errors import (  # noqa: E402
    EXIT_OK,
    EXIT_OTHER,
    CancelledError,
    InputError,
    ModelError,
    OutOfMemoryError,
    OutputError,
    UsageError,
    WorkerError,
)
from infer.events import EventSink, EventStream  # noqa: E402
from infer.faces.options import DEFAULT_FIDELITY, FACE_MODES, GFPGAN_FILE, FaceMode, parse_fidelity  # noqa: E402
from infer.faces.stage import FaceSettings, FaceStage  # noqa: E402
from infer.models import default_model_path, models_dir  # noqa: E402
from infer.families import FAMILIES  # noqa: E402
from infer.modelspec import ModelSpec, spec_from_path  # noqa: E402
from infer.precision import PRECISIONS  # noqa: E402
from infer.upscale import count_tiles, effective_pad, upscale_image  # noqa: E402

DEFAULT_MAX_PIXELS = 16_000_000
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print and exit(2) on its own
        raise UsageError(f"{message} (see sr-infer --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sr-infer",
        description="Upscale photos with a super-resolution model. On a terminal it shows progress bars; "
        "otherwise (or with --json) it prints one JSON event per line on stdout.",
        epilog="Exit codes: 0 done (a batch: every photo done or skipped), else the first failure's: 1 other, "
        "2 usage, 3 unreadable input, 4 too many pixels, 5 model, 6 out of memory, 7 output not writable; "
        "130 Ctrl-C.",
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
    p.add_argument("--denoise", default=Denoise.OFF.value, metavar="|".join(DENOISE_LEVELS),
                   help="reduce noise and JPEG artifacts before upscaling (default off)")
    p.add_argument("--faces", default=FaceMode.OFF.value, choices=FACE_MODES,
                   help=f"restore faces with GFPGAN after upscaling (default off; needs {GFPGAN_FILE} in the models folder)")
    p.add_argument("--face-fidelity", default=str(DEFAULT_FIDELITY), metavar="0..1",
                   help=f"how far a restored face replaces the plain upscale: 0 not at all, 1 entirely (default {DEFAULT_FIDELITY})")
    p.add_argument("--face-model", metavar="PATH", help=f"the GFPGAN file (default: {GFPGAN_FILE} in the models folder)")
    p.add_argument("--format", choices=batch.FORMATS, help="output format in folder mode (default: the input's; PNG for BMP, TIFF, GIF)")
    p.add_argument("--overwrite", action="store_true", help="folder mode: redo photos whose result is already there")
    p.add_argument("--json", action="store_true", help="JSON events on stdout even on a terminal")
    p.add_argument("--algo", choices=list(FAMILIES), help="override the algorithm read from the file name")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--engine", default="auto", choices=ENGINE_CHOICES,
                   help="auto: PyTorch (on CUDA when a GPU is usable, else the CPU), OpenCV where PyTorch is missing")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the CPU or GPU runs it natively, else fp32 (CPU) or fp16 (GPU)")
    p.add_argument("--tile", type=int, help="input tile edge in pixels; 0 = whole image at once")
    p.add_argument("--tile-pad", type=int, help="context pixels around each tile")
    p.add_argument("--output-quality", type=int, metavar="Q", help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--max-pixels", type=int, help=f"refuse larger inputs (default $SR_MAX_PIXELS or {DEFAULT_MAX_PIXELS})")
    return p


@dataclass(frozen=True)
class Settings:
    """The checked values every photo of a run shares."""

    max_pixels: int
    denoise: Denoise
    model_quality: str | None  # "best", "fast" or None
    output_quality: int
    faces: FaceSettings = FaceSettings()


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


def _settings(args: argparse.Namespace) -> Settings:
    """Validate numbers and choices before any real work."""
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
    return Settings(max_pixels, parse_level(args.denoise), model_quality, output_quality, _face_settings(args))


def _face_settings(args: argparse.Namespace) -> FaceSettings:
    try:
        fidelity = parse_fidelity(args.face_fidelity)
    except ValueError as err:
        raise UsageError(f"--face-fidelity: {err}") from None
    if args.faces != FaceMode.ON.value:
        return FaceSettings(fidelity=fidelity)
    model = Path(args.face_model) if args.face_model else models_dir() / GFPGAN_FILE
    # YuNet is looked for beside the GFPGAN file.
    return FaceSettings(enabled=True, fidelity=fidelity, model=model, models_folder=model.parent, device=args.device)


def _check_output_file(output: str, fmt: str | None) -> None:
    """One photo, one result file: its extension must be writable, its folder must exist."""
    written = images.output_format(output)
    if fmt is not None and written != images.output_format(f"x.{fmt}"):
        raise UsageError(f"--format {fmt} does not match the output name {Path(output).name}; drop one of them")
    out_dir = Path(output).resolve().parent
    if not out_dir.is_dir():
        raise OutputError(f"cannot write {output}: folder {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {output}: folder {out_dir} is not writable")


def _installed_choice(scale: int | None, quality: str | None) -> ModelSpec:
    """The installed model for a scale and quality, from the models folder."""
    folder = models_dir()
    models = installed_models(folder)
    if not models:
        raise ModelError(
            f"no model is installed in {folder}; fetch one with `sr-models fetch EDSR_x3` "
            "(or FSRCNN_x3 for a fast one), or pass --model PATH"
        )
    default_path = default_model_path()
    default = next((m for m in models if m.path.resolve() == default_path.resolve()), None)
    if default is None and default_path.is_file():
        # $SR_MODEL_PATH outside the folder still gives the scale when only --quality is asked.
        try:
            default = InstalledModel(default_path.stem, spec_from_path(default_path))
        except ModelError:
            pass
    return choose(models, scale=scale, quality=quality, default=default).spec


def _resolve_model(args: argparse.Namespace, settings: Settings) -> ModelSpec:
    if args.model:
        spec = spec_from_path(Path(args.model), args.algo, args.scale)
    elif args.scale is not None or settings.model_quality is not None:
        spec = _installed_choice(args.scale, settings.model_quality)
    else:
        spec = spec_from_path(default_model_path(), args.algo, None)
    path = spec.path
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


class LoadedModel:
    """The model of a run: its engine is created for the first photo and loaded once for every photo."""

    def __init__(self, spec: ModelSpec, args: argparse.Namespace):
        self.spec = spec
        self._args = args
        self._engine: Engine | None = None
        self._loaded = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self._args.engine, self._args.device, self._args.precision, self.spec.family)
            if self._engine.note:
                print(f"sr-infer: {self._engine.note}", file=sys.stderr)
        return self._engine

    def tiling(self) -> tuple[int, int]:
        """(tile, tile_pad): the flags, else what the engine and family prefer."""
        spec, args = self.spec, self._args
        tile_pad = args.tile_pad if args.tile_pad is not None else spec.family.tile_pad
        tile = args.tile if args.tile is not None else (self.engine.preferred_tile(spec) or spec.family.tile_for(self.engine.name))
        return tile, tile_pad

    def load(self) -> bool:
        """Loads the weights unless already loaded; True when it did."""
        if self._loaded:
            return False
        self.engine.load(self.spec)
        self._loaded = True
        return True

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._loaded = False


def run_photo(job: batch.PhotoJob, model: LoadedModel, settings: Settings, events: EventSink,
              timer: Timer, *, release: bool, since: float, faces: FaceStage | None = None) -> None:
    """Upscale one photo: decode, check, denoise, find faces, upscale, restore the faces, encode.

    `release` frees the engine before encoding (the last photo of a run); `since` is the wall-clock
    time the `total` in the done event counts from."""
    spec = model.spec
    # Everything that can refuse the photo happens before any device is touched.
    t = time.perf_counter()
    image = images.decode(job.input, settings.max_pixels)
    t = timer.stage("decode", t)
    height, width = image.bgr.shape[:2]
    fmt = images.output_format(job.output)
    if max(width, height) * spec.scale > images.MAX_SIDE[fmt]:
        raise OutputError(
            f"cannot write {job.output}: the result would be {width * spec.scale}x{height * spec.scale}, "
            f"larger than {fmt} allows ({images.MAX_SIDE[fmt]} pixels a side); write .png instead"
        )
    if settings.denoise is not Denoise.OFF:
        image = denoise_image(image, settings.denoise)
        t = timer.stage("denoise", t)
    # Faces are found in the photo as the model sees it; a photo without any costs only this.
    found, report = faces.detect(image.bgr) if faces is not None else ([], None)

    engine = model.engine
    tile, tile_pad = model.tiling()
    total = count_tiles(height, width, tile, effective_pad(spec, tile_pad))
    events.emit(
        "start", input=str(job.input), output=str(job.output), model=str(spec.path), algo=spec.algo,
        scale=spec.scale, engine=engine.name, device=engine.device, precision=engine.precision,
        width=width, height=height, format=image.source_format, tile=tile, tile_pad=tile_pad, tiles=total,
        denoise=settings.denoise.value, **({"note": engine.note} if engine.note else {}),
        **({"faces": {"detector": report.detector, "found": report.found}} if report is not None else {}),
    )

    t = time.perf_counter()
    try:
        if model.load():
            t = timer.stage("load", t)

        def progress(done: int, total: int) -> None:
            events.emit("progress", done=done, total=total)

        result = upscale_image(image, engine, spec, tile, tile_pad, progress)
        t = timer.stage("infer", t)
    finally:
        if release:
            # Release the model (and any device memory) before the slow encode.
            model.close()
    if release:
        t = timer.stage("release", t)
    # Read after close(): GPU time runs until device memory is released.
    extra = engine.stats()
    del image
    if faces is not None and report is not None:
        # After the upscaler has freed its memory: GFPGAN is loaded only for a photo with a face.
        try:
            faces.restore(result.bgr, found, spec.scale, report)
        finally:
            if release:
                faces.close()
        timer.seconds.update(report.seconds)
        t = time.perf_counter()

    images.encode(result, job.output, quality=settings.output_quality)
    timer.stage("encode", t)
    timer.seconds["total"] = round(time.time() - since, 4)

    events.emit(
        "done",
        output=str(job.output),
        width=int(result.bgr.shape[1]),
        height=int(result.bgr.shape[0]),
        engine=engine.name,
        device=engine.device,
        precision=engine.precision,
        tile=tile,
        tile_pad=tile_pad,
        denoise=settings.denoise.value,
        seconds=timer.seconds,
        peak_rss_mb=_peak_rss_mb(),
        **({"faces": report.to_json()} if report is not None else {}),
        **extra,
    )


def _startup_timer(t_main: float) -> tuple[Timer, float]:
    """The stages before main() ran, and the wall-clock time the process started."""
    timer = Timer()
    try:
        process_started = psutil.Process().create_time()
    except psutil.Error:
        process_started = _T_IMPORT_WALL
    timer.seconds["startup"] = round(max(0.0, _T_IMPORT_WALL - process_started), 4)
    timer.seconds["imports"] = round(t_main - _T_IMPORT, 4)
    return timer, process_started


def run_job(args: argparse.Namespace, settings: Settings, events: EventSink, t_main: float) -> int:
    """One input file, one output file: the service's contract."""
    timer, process_started = _startup_timer(t_main)
    _check_output_file(args.output, args.format)
    spec = _resolve_model(args, settings)
    faces = _face_stage(settings)
    job = batch.PhotoJob(Path(args.input[0]), Path(args.output))
    run_photo(job, LoadedModel(spec, args), settings, events, timer, release=True, since=process_started, faces=faces)
    return EXIT_OK


def _face_stage(settings: Settings) -> FaceStage | None:
    """The run's face stage, its files checked (exit 5 before any photo is read), or None when faces are off."""
    if not settings.faces.enabled:
        return None
    stage = FaceStage(settings.faces)
    stage.check()
    return stage


def run_folder(args: argparse.Namespace, settings: Settings, events: EventSink) -> int:
    """Several photos (files and folders) into one output folder, with one model load for all of them."""
    photos = batch.find_photos(args.input)
    spec = _resolve_model(args, settings)
    out_dir = Path(args.output)
    jobs = batch.plan(photos, out_dir, spec.scale, args.format)
    faces = _face_stage(settings)
    batch.prepare_output_folder(out_dir)
    model = LoadedModel(spec, args)

    def one(job: batch.PhotoJob) -> None:
        run_photo(job, model, settings, events, Timer(), release=False, since=time.time(), faces=faces)

    try:
        result = batch.run_batch(jobs, one, events, out_dir=out_dir, overwrite=args.overwrite)
    finally:
        model.close()
        if faces is not None:
            faces.close()
    return result.exit_code


def _on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so `finally` blocks remove temporary files.
    raise CancelledError("the job was cancelled (the worker received SIGTERM)")


def _wants_console(argv: list[str]) -> bool:
    return sys.stdout.isatty() and "--json" not in argv


def main(argv: list[str] | None = None) -> int:
    t_main = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    console = None
    if _wants_console(argv):
        from infer.console import Console  # only people at a terminal need the progress bars

        console = Console()
    events: EventSink = console or EventStream()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            args = build_parser().parse_args(argv)
            settings = _settings(args)
            if batch.is_batch(args.input, args.output):
                return run_folder(args, settings, events)
            return run_job(args, settings, events, t_main)
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
        events.emit("error", code=code, message=message, exit_code=exit_code)
        return exit_code
    finally:
        if console is not None:
            console.close()


if __name__ == "__main__":
    sys.exit(main())
