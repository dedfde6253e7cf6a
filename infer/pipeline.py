"""The worker's pipeline: resolve the model, then for each photo decode, check, denoise, upscale tile by tile and
write the result, reporting through the contract's events. Takes typed options; the command line is
infer/sr_infer.py."""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from infer import batch, huge_pages, images, resident
from infer.catalog import Catalog, served_scales
from infer.checkpoints import DENOISE_TWINS, LoaderMissing, denoise_twin, is_checkpoint, require_loader
from infer.colour import restore_image
from infer.contract import EXIT_OK, Colour, Denoise, EventKind
from infer.denoise import denoise_image
from infer.engines import Engine, create_engine
from infer.errors import ModelError, OutputError, UsageError
from infer.events import EventSink, ProgressEvents
from infer.faces.stage import FaceSettings, FaceStage
from infer.memory_budget import window_budget
from infer.models import default_model_path
from infer.modelspec import ModelSpec, spec_from_path
from infer.repair import RepairSettings, repair_image
from infer.repair_network import NetworkFill
from infer.upscale import TilePlan, count_tiles, describe_run, effective_pad, upscale_image


@dataclass(frozen=True)
class Settings:
    """The checked values every photo of a run shares."""

    max_pixels: int
    denoise: Denoise
    model_quality: str | None  # "best", "fast" or None
    output_quality: int
    outscale: int | None = None  # --outscale: below the model's scale, its output is reduced to this
    denoise_strength: float | None = None  # --denoise-strength: a blend with the model's denoise twin
    faces: FaceSettings = FaceSettings()
    memory_mb: int = 0  # SR_WORKER_MEMORY_MB: the address space the run may add to its libraries'; 0: no limit
    repair: RepairSettings = RepairSettings()
    colour: Colour = Colour.OFF

    def scale_for(self, spec: ModelSpec) -> int:
        """The factor the result is written at, by the catalog's rule (`served_scales`); UsageError otherwise."""
        if self.outscale is None:
            return spec.scale
        if self.outscale > spec.scale:
            raise UsageError(
                f"--outscale {self.outscale} is more than the model gives (x{spec.scale}); a model's output is "
                "never enlarged further: choose a model of that scale"
            )
        if self.outscale not in served_scales(spec.scale):
            raise UsageError(f"--outscale {self.outscale}: this x{spec.scale} model writes "
                             f"{', '.join(f'x{s}' for s in served_scales(spec.scale))}")
        return self.outscale


@dataclass
class Timer:
    """Wall time of each stage, in seconds. Stages are laps: each runs from the end of the one before, so that
    together they account for the whole run."""

    mark: float = field(default_factory=time.perf_counter)  # perf_counter at the end of the last lap
    seconds: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str, parts: dict[str, float] | None = None) -> None:
        """Records the time since the last lap as `name`; `parts` (seconds measured within it) are taken out of
        it and recorded under their own names."""
        now = time.perf_counter()
        spent = now - self.mark
        for part, seconds in (parts or {}).items():
            self.add(part, seconds)
            spent -= seconds
        self.add(name, max(0.0, spent))
        self.mark = now

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 4)


@dataclass(frozen=True)
class RunOptions:
    """What one run is asked to do, checked: the photos, where the results go, the model and how to run it."""

    inputs: tuple[str, ...]
    output: str
    settings: Settings
    model: str | None = None  # a model file; else chosen by scale and quality, else the default model
    scale: int | None = None
    algo: str | None = None  # overrides the family read from the model's file name
    format: str | None = None  # the results' format in folder mode
    overwrite: bool = False
    engine: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    tile_pad: int | None = None
    find_damage: bool = False  # --find-damage: write the damage found as a mask instead of enlarging

    @property
    def is_batch(self) -> bool:
        return batch.is_batch(list(self.inputs), self.output)


@dataclass(frozen=True)
class ProcessStart:
    """When the worker's process began (what the done event's `total` counts from) and the stages it spent
    before main() began."""

    began: float  # wall clock: the process's creation, or the service's request to the launcher that forked it
    stages: dict[str, float]  # {"startup", "imports"} for a plain start; {"fork", "imports"} for a forked one
    main_began: float  # perf_counter

    @classmethod
    def of_this_process(cls, script_began: float, script_began_wall: float) -> "ProcessStart":
        """This process's start; `script_began` is when the worker's script began (perf counter, wall clock)."""
        now = time.perf_counter()
        imports = round(now - script_began, 4)
        zygote = sys.modules.get("infer.zygote")
        forked = zygote.forked_start() if zygote is not None else None
        if forked is not None:
            # The service's request, the fork and the child's setup; the libraries were imported in the launcher.
            return cls(forked.requested_at, {"fork": round(max(0.0, script_began_wall - forked.requested_at), 4),
                                             "imports": imports}, now)
        try:
            began = psutil.Process().create_time()
        except psutil.Error:
            began = script_began_wall
        return cls(began, {"startup": round(max(0.0, script_began_wall - began), 4), "imports": imports}, now)


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


@dataclass(frozen=True)
class ModelChoice:
    """The run's model and, where the worker chose it rather than --model naming it, why."""

    spec: ModelSpec
    why: str | None = None


def _installed_choice(scale: int | None, quality: str | None) -> ModelChoice:
    """The installed model for a scale and quality, as the catalog picks it."""
    pick = Catalog.from_env().pick(scale=scale, quality=quality)
    return ModelChoice(pick.model.spec, pick.why)


def _default_spec(algo: str | None) -> ModelChoice:
    """The configured default (SR_MODEL_PATH, else EDSR_x3.pb in the models folder); where it is missing and
    another model is installed, the catalog's stand-in, said on stderr."""
    configured = default_model_path()
    if not configured.is_file():
        catalog = Catalog.from_env()
        if catalog.default is not None and catalog.default_note:
            print(f"sr-infer: {catalog.default_note}", file=sys.stderr)
            return ModelChoice(catalog.default.spec, f"standing in for the default {configured.name}, which is not installed")
    return ModelChoice(spec_from_path(configured, algo, None), "the default")


def _with_denoise_strength(spec: ModelSpec, strength: float | None) -> ModelSpec:
    if strength is None:
        return spec
    if spec.checkpoint is None or denoise_twin(spec.path) is None:
        raise UsageError(
            f"--denoise-strength applies to {', '.join(DENOISE_TWINS)} only, not {spec.path.name}; use --denoise instead"
        )
    return dataclasses.replace(spec, denoise_strength=strength)


def resolve_model(options: RunOptions) -> ModelChoice:
    """The model file the options name or choose, checked to be there and not empty."""
    quality = options.settings.model_quality
    if options.model:
        choice = ModelChoice(spec_from_path(Path(options.model), options.algo, options.scale))
    elif options.scale is not None or quality is not None:
        choice = _installed_choice(options.scale, quality)
    else:
        choice = _default_spec(options.algo)
    path = choice.spec.path
    if not path.is_file():
        raise ModelError(
            f"model file {path} not found; download it with `sr-models fetch {path.stem}` "
            "or point --model / $SR_MODEL_PATH at a model file"
        )
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty; download it again with `sr-models fetch {path.stem}`")
    return dataclasses.replace(choice, spec=_with_denoise_strength(choice.spec, options.settings.denoise_strength))


def cap_address_space(extra_mb: int) -> None:
    """Limits the process's address space to what it maps now plus `extra_mb` (RLIMIT_AS); 0 leaves it be.
    Allocations past it fail, and the run ends with `out_of_memory` instead of the machine swapping."""
    if extra_mb <= 0:
        return
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + extra_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class LoadedModel:
    """The model of a run: its engine is created for the first photo and loaded once for every photo."""

    def __init__(self, choice: ModelChoice, options: RunOptions):
        self.spec = choice.spec
        self.why = choice.why
        self._options = options
        self._engine: Engine | None = None
        self._loaded = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            options = self._options
            self._engine = create_engine(options.engine, options.device, options.precision, self.spec.family,
                                         self.spec.format)
            # From here on: the libraries are loaded and the device opened, so the limit is the run's own memory.
            cap_address_space(options.settings.memory_mb)
            if self._engine.note:
                print(f"sr-infer: {self._engine.note}", file=sys.stderr)
        return self._engine

    def tiling(self, height: int, width: int, outscale: int) -> tuple[int, int]:
        """(tile, tile_pad) for a photo: the flags, else what the engine prefers within the run's memory
        (SR_WORKER_MEMORY_MB less the photo's arrays, else the default budget), else the family's tile."""
        spec, options = self.spec, self._options
        tile_pad = options.tile_pad if options.tile_pad is not None else spec.family.tile_pad
        if options.tile is not None:
            return options.tile, tile_pad
        budget = window_budget(options.settings.memory_mb, height, width, outscale)
        return self.engine.preferred_tile(spec, budget) or spec.family.tile, tile_pad

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
              timer: Timer, *, release: bool, since: float, faces: FaceStage | None = None,
              repair_network: NetworkFill | None = None) -> None:
    """Upscale one photo: decode, check, repair, restore colour, denoise, find faces, upscale, restore the faces,
    encode.

    `release` frees the engine before encoding (the last photo of a run); `since` is the wall-clock
    time the `total` in the done event counts from."""
    spec = model.spec
    # Everything that can refuse the photo happens before any device is touched.
    image = images.decode(job.input, settings.max_pixels)
    timer.lap("decode")
    height, width = image.bgr.shape[:2]
    fmt = images.output_format(job.output)
    outscale = settings.scale_for(spec)
    if max(width, height) * outscale > images.MAX_SIDE[fmt]:
        raise OutputError(
            f"cannot write {job.output}: the result would be {width * outscale}x{height * outscale}, "
            f"larger than {fmt} allows ({images.MAX_SIDE[fmt]} pixels a side); write .png instead"
        )
    # Repair at the photo's own resolution, before anything that would spread or sharpen the damage.
    repaired = None
    if settings.repair.enabled:
        image, repaired = repair_image(image, settings.repair, repair_network)
        timer.lap("repair")
    if settings.colour is Colour.RESTORE:
        image = restore_image(image)
        timer.lap("colour")
    if settings.denoise is not Denoise.OFF:
        image = denoise_image(image, settings.denoise)
        timer.lap("denoise")
    # Faces are found in the photo as the model sees it; a photo without any costs only this.
    found, report = faces.detect(image.bgr) if faces is not None else ([], None)
    if report is not None:
        timer.lap("face_detect")

    # The engine's libraries are imported here where the worker started plain, and its device opened.
    engine = model.engine
    tile, tile_pad = model.tiling(height, width, outscale)
    timer.lap("engine")
    total = count_tiles(height, width, tile, effective_pad(spec, tile_pad), spec.family.tile_align)
    events.emit(
        EventKind.START, input=str(job.input), output=str(job.output), model=str(spec.path), algo=spec.algo,
        scale=spec.scale, outscale=outscale, ran=describe_run(spec, outscale),
        engine=engine.name, device=engine.device, precision=engine.precision,
        width=width, height=height, format=image.source_format, tile=tile, tile_pad=tile_pad, tiles=total,
        denoise=settings.denoise.value, colour=settings.colour.value,
        repair=repaired.to_json() if repaired is not None else {"ran": "off"},
        **({"note": engine.note} if engine.note else {}),
        **({"why": model.why} if model.why is not None else {}),
        **({"denoise_strength": spec.denoise_strength} if spec.denoise_strength is not None else {}),
        **({"faces": {"detector": report.detector, "found": report.found}} if report is not None else {}),
    )

    try:
        if model.load():
            timer.lap("load")

        # A reduced scale is reached tile by tile: the model's full-size output never exists at once.
        result = upscale_image(image, engine, spec, TilePlan(tile, tile_pad, outscale), ProgressEvents(events))
        timer.lap("infer")
    finally:
        if release:
            # Release the model (and any device memory) before the slow encode.
            model.close()
    if release:
        timer.lap("release")
    # Read after close(): GPU time runs until device memory is released.
    extra = engine.stats()
    del image
    if faces is not None and report is not None:
        # After the upscaler has freed its memory: GFPGAN is loaded only for a photo with a face.
        try:
            faces.restore(result.bgr, found, outscale, report)
        finally:
            if release:
                faces.close()
        timer.lap("faces", {k: v for k, v in report.seconds.items() if k == "face_load"})

    images.encode(result, job.output, quality=settings.output_quality)
    timer.lap("encode")
    timer.seconds["total"] = round(time.time() - since, 4)

    events.emit(
        EventKind.DONE,
        output=str(job.output),
        width=int(result.bgr.shape[1]),
        height=int(result.bgr.shape[0]),
        engine=engine.name,
        device=engine.device,
        precision=engine.precision,
        tile=tile,
        tile_pad=tile_pad,
        denoise=settings.denoise.value,
        colour=settings.colour.value,
        **({"repair": repaired.to_json()} if repaired is not None else {}),
        seconds=timer.seconds,
        peak_rss_mb=resident.peak_rss_mb(),
        huge_pages=huge_pages.in_use(),
        **({"faces": report.to_json()} if report is not None else {}),
        **extra,
    )


def run_job(options: RunOptions, events: EventSink, start: ProcessStart) -> int:
    """One input file, one output file: the service's contract."""
    timer = Timer(start.main_began, dict(start.stages))
    _check_output_file(options.output, options.format)
    timer.lap("prepare")
    import_libraries(options)
    timer.lap("imports")
    choice = resolve_model(options)
    faces = _face_stage(options.settings)
    timer.lap("prepare")
    network = _repair_network(options)
    if network is not None:
        timer.lap("repair_load")
    job = batch.PhotoJob(Path(options.inputs[0]), Path(options.output))
    run_photo(job, LoadedModel(choice, options), options.settings, events, timer, release=True, since=start.began,
              faces=faces, repair_network=network)
    return EXIT_OK


def import_libraries(options: RunOptions) -> None:
    """Imports spandrel (and with it PyTorch) for a checkpoint, whose reading needs it, so that this time is the
    `imports` stage rather than part of `prepare`. Free in a forked job. A `.pb` model's engine imports its own
    library, PyTorch or none beyond OpenCV (the small families), in the `engine` stage."""
    if options.model and is_checkpoint(Path(options.model)):
        try:
            require_loader()
        except LoaderMissing:
            pass  # said when the checkpoint is read


def _repair_network(options: RunOptions) -> NetworkFill | None:
    """The run's inpainting network, loaded (exit 5 before any photo is read), or None: OpenCV fills."""
    model = options.settings.repair.model
    if model is None:
        return None
    network = NetworkFill(model, options.device)
    network.load()
    return network


def _face_stage(settings: Settings) -> FaceStage | None:
    """The run's face stage, its files checked (exit 5 before any photo is read), or None when faces are off."""
    if not settings.faces.enabled:
        return None
    stage = FaceStage(settings.faces)
    stage.check()
    return stage


def run_folder(options: RunOptions, events: EventSink) -> int:
    """Several photos (files and folders) into one output folder, with one model load for all of them."""
    photos = batch.find_photos(list(options.inputs))
    choice = resolve_model(options)
    out_dir = Path(options.output)
    jobs = batch.plan(photos, out_dir, options.settings.scale_for(choice.spec), options.format)
    faces = _face_stage(options.settings)
    network = _repair_network(options)
    batch.prepare_output_folder(out_dir)
    model = LoadedModel(choice, options)

    def one(job: batch.PhotoJob) -> None:
        run_photo(job, model, options.settings, events, Timer(), release=False, since=time.time(), faces=faces,
                  repair_network=network)

    try:
        result = batch.run_batch(jobs, one, events, out_dir=out_dir, overwrite=options.overwrite)
    finally:
        model.close()
        if faces is not None:
            faces.close()
    return result.exit_code


def run(options: RunOptions, events: EventSink, start: ProcessStart) -> int:
    """The run the options ask for: folder mode, the damage of one photo, or one photo; returns the exit code."""
    if options.find_damage:
        from infer.find_damage import find_damage

        return find_damage(Path(options.inputs[0]), Path(options.output), options.settings.max_pixels, events,
                           start.began)
    if options.is_batch:
        return run_folder(options, events)
    return run_job(options, events, start)
