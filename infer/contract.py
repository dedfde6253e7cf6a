"""The worker's contract with the front end: its command line, its events, its exit codes, denoise levels and formats.

Standard library only: the front end imports this module without the worker's libraries (OpenCV, PyTorch,
numpy), and the worker speaks through the same names.

One job crosses the contract so: a backend builds a `WorkerCommand` and runs its `argv()`; the worker prints
one JSON object a line on stdout (`EventKind` names them); the backend's reader turns each line into a
typed event with `parse_event`; the worker's exit status names a `Failure`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Union

from infer.faces.options import face_flags

WORKER_SCRIPT = Path(__file__).resolve().parent / "sr_infer.py"
DEFAULT_MAX_PIXELS = 16_000_000


class _Name(str, Enum):
    """A name in the contract: written, formatted and compared as its plain value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


# --------------------------------------------------------------------------- denoise levels


class Denoise(_Name):
    OFF = "off"
    LIGHT = "light"
    STRONG = "strong"


DENOISE_LEVELS = tuple(level.value for level in Denoise)


# --------------------------------------------------------------------------- repair and colour


class Repair(_Name):
    """`--repair`: whether the worker finds scratches and dust itself (added to any `--repair-mask`)."""

    OFF = "off"
    AUTO = "auto"


REPAIR_MODES = tuple(mode.value for mode in Repair)


class Colour(_Name):
    """`--colour`: whether faded colour is restored (white balance and levels) before enlarging."""

    OFF = "off"
    RESTORE = "restore"


COLOUR_MODES = tuple(mode.value for mode in Colour)

# A repair mask (`--repair-mask`, the API's `repair_mask`): an image of the photo's size as it is shown
# (upright); its alpha channel where it has one, else its grey level; non-zero pixels are repaired. PNG only:
# lossless, so that a mask's edge is where it was painted.
MASK_FORMATS = ("PNG",)


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class ImageFormat:
    """One file format as every part names it."""

    name: str  # the request name and the extension the service gives its files: "jpg"
    pillow: str  # Pillow's format name: "JPEG"
    extensions: tuple[str, ...]  # what a file of it may end in, the first the usual one: (".jpg", ".jpeg")
    mime: str
    label: str  # how people read it: "JPEG"
    writable: bool = False  # the worker can write results in it
    # Largest side the encoder can write (libwebp: 16383; libjpeg-turbo: 65500); None where not writable.
    max_side: int | None = None
    # Other Pillow names a file of this format opens as: a JPEG with extra pictures (depth maps,
    # previews) opens as MPO; its first picture is used.
    pillow_aliases: tuple[str, ...] = ()

    @property
    def request_names(self) -> tuple[str, ...]:
        """What a client may ask for: the name and every extension without its dot."""
        return tuple(dict.fromkeys((self.name, *(ext[1:] for ext in self.extensions))))


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("png", "PNG", (".png",), "image/png", "PNG", writable=True, max_side=2**31 - 1),
    ImageFormat("jpg", "JPEG", (".jpg", ".jpeg"), "image/jpeg", "JPEG", writable=True, max_side=65500,
                pillow_aliases=("MPO",)),
    ImageFormat("webp", "WEBP", (".webp",), "image/webp", "WebP", writable=True, max_side=16383),
    ImageFormat("bmp", "BMP", (".bmp",), "image/bmp", "BMP"),
    ImageFormat("tiff", "TIFF", (".tiff", ".tif"), "image/tiff", "TIFF"),
    ImageFormat("gif", "GIF", (".gif",), "image/gif", "GIF"),
)
OUTPUT_FORMATS: tuple[ImageFormat, ...] = tuple(f for f in FORMATS if f.writable)
# Results are PNG unless asked otherwise or the photo came in a format the worker can write.
FALLBACK_OUTPUT = FORMATS[0]


def format_by_name(name: str) -> ImageFormat | None:
    """The format the service names its files with ("png", "jpg", "tiff"), else None."""
    return next((f for f in FORMATS if f.name == name), None)


def format_named(name: str) -> ImageFormat | None:
    """The output format a request names ("png", "jpg", "jpeg", "webp"; any case), else None."""
    wanted = name.strip().lower()
    return next((f for f in OUTPUT_FORMATS if wanted in f.request_names), None)


def format_of_pillow(pillow_name: str) -> ImageFormat | None:
    """The format of a file Pillow identified as `pillow_name` (MPO counts as JPEG), else None."""
    return next((f for f in FORMATS if pillow_name in (f.pillow, *f.pillow_aliases)), None)


def format_of_suffix(suffix: str) -> ImageFormat | None:
    """The format a file name's suffix (".JPEG", ".png") stands for, else None."""
    return next((f for f in FORMATS if suffix.lower() in f.extensions), None)


def result_format(source: ImageFormat | None) -> ImageFormat:
    """A photo's result format when none is asked for: its own where the worker writes it, else PNG."""
    return source if source is not None and source.writable else FALLBACK_OUTPUT


def one_of(words: list[str] | tuple[str, ...]) -> str:
    """"png, jpg or webp": a choice for a message."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def formats_text(formats: tuple[ImageFormat, ...] = FORMATS) -> str:
    """"PNG, JPEG, WebP, BMP, TIFF or GIF"."""
    return one_of([f.label for f in formats])


# --------------------------------------------------------------------------- exit codes


class Failure(Enum):
    """Each way the worker fails: its exit status, its error code, the synchronous upload's HTTP status, and
    what the uploader reads when the worker ended without an `error` event of its own."""

    OTHER = (1, "internal_error", 500,
             "the upscaling failed unexpectedly; try again, and report it if it keeps happening")
    USAGE = (2, "usage", 500, "the service started the worker wrongly; please report this")
    BAD_INPUT = (3, "bad_input", 422,
                 "this file could not be read as a photo; try another file or save it again as PNG or JPEG")
    TOO_MANY_PIXELS = (4, "too_many_pixels", 422, "the photo has too many pixels; resize it first")
    MODEL = (5, "model_error", 503, "the upscaling model could not be used; whoever runs this server can see why in its log")
    OUT_OF_MEMORY = (6, "out_of_memory", 503, "there was not enough memory to upscale this photo; try a smaller one")
    OUTPUT = (7, "output_error", 503, "the result could not be saved; whoever runs this server can see why in its log")
    INTERRUPTED = (130, "internal_error", 500, "the upscaling was stopped; upload the photo again")  # Ctrl-C

    def __init__(self, exit_code: int, code: str, http_status: int, fallback_message: str):
        self.exit_code = exit_code
        self.code = code
        self.http_status = http_status
        self.fallback_message = fallback_message

    @classmethod
    def from_exit_code(cls, exit_code: int | None) -> "Failure":
        """The failure an exit status names; OTHER for any status the table does not hold."""
        return next((f for f in cls if f.exit_code == exit_code), cls.OTHER)

    @classmethod
    def from_code(cls, code: str | None) -> "Failure | None":
        """The first failure with this error code, else None (the code is the front end's own)."""
        return next((f for f in cls if f.code == code), None)


EXIT_OK = 0


# --------------------------------------------------------------------------- the command line


@dataclass(frozen=True)
class WorkerCommand:
    """One job's worker command line, as every backend runs it (a list: never through a shell).

    The pixel limit travels as `--max-pixels` only, not also as $SR_MAX_PIXELS: the flag is visible in the
    command (the job's log, `ps`), needs no environment to be carried to another machine, and wins over
    whatever the worker's host has set. $SR_MAX_PIXELS stays the worker's default for people at a terminal."""

    input: Path
    output: Path
    model: Path
    max_pixels: int
    denoise: Denoise = Denoise.OFF
    script: Path = WORKER_SCRIPT
    python: str = field(default_factory=lambda: sys.executable)
    faces: str = "off"  # infer/faces/options.py's FaceMode
    face_fidelity: float | None = None
    face_model: Path | None = None  # the GFPGAN file; None: the worker's models folder
    outscale: int | None = None  # below the model's scale: its output is reduced to this factor
    denoise_strength: float | None = None  # 0..1, for a checkpoint with a denoise twin (replaces `denoise`)
    repair_mask: Path | None = None  # the job's repair mask (MASK_FORMATS)
    repair: Repair = Repair.OFF
    colour: Colour = Colour.OFF
    # Instead of enlarging: write the damage found as a repair mask (MASK_FORMATS) to `output`, a .png.
    find_damage: bool = False

    def argv(self) -> list[str]:
        denoise = Denoise(self.denoise)
        return [
            self.python,
            str(self.script),
            "--input", str(self.input),
            "--output", str(self.output),
            "--model", str(self.model),
            "--max-pixels", str(int(self.max_pixels)),
            # Optional flags only when they differ from the worker's defaults: a plain job's argv stays plain.
            *([] if denoise is Denoise.OFF else ["--denoise", denoise.value]),
            *([] if self.outscale is None else ["--outscale", str(int(self.outscale))]),
            *([] if self.denoise_strength is None else ["--denoise-strength", f"{float(self.denoise_strength):g}"]),
            *face_flags(self.faces, self.face_fidelity, None if self.face_model is None else str(self.face_model)),
            *([] if self.repair_mask is None else ["--repair-mask", str(self.repair_mask)]),
            *([] if Repair(self.repair) is Repair.OFF else ["--repair", Repair(self.repair).value]),
            *([] if Colour(self.colour) is Colour.OFF else ["--colour", Colour(self.colour).value]),
            *(["--find-damage"] if self.find_damage else []),
        ]


# --------------------------------------------------------------------------- events


class EventKind(_Name):
    """The names of the worker's events (the `event` field of each JSON line)."""

    START = "start"  # a photo is decoded and checked; the engine and tiling are chosen
    PROGRESS = "progress"  # one more tile is done, or how far the running one is (`fraction`)
    DONE = "done"  # the result is written
    ERROR = "error"  # the run (or, in a batch, one photo) failed
    BATCH_START = "batch_start"
    SKIPPED = "skipped"  # a batch's photo whose result is already there
    BATCH_DONE = "batch_done"


# The done event's `seconds`: one entry a stage, which together make up `total` (the process's wall time up to
# the event). These grow with the photo's pixels; the others (startup or fork, imports, prepare, engine, load,
# release) are a job's fixed cost.
WORK_STAGES = ("decode", "repair", "colour", "denoise", "face_detect", "infer", "faces", "encode")
# The work every job does, whatever its options: estimates learn a model's speed from these alone, so that a job
# with repair, denoise or faces does not slow the estimate of the next one without them.
MODEL_STAGES = ("decode", "infer", "encode")


def work_seconds(seconds: Mapping[str, float], stages: tuple[str, ...] = WORK_STAGES) -> float | None:
    """The sum of these stages in a done event's `seconds`; None where it has no `infer` (not a worker's run)."""
    if "infer" not in seconds:
        return None
    return sum(float(seconds.get(stage, 0.0)) for stage in stages)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _fraction(value: Any, done: int, total: int) -> float:
    """A progress event's `fraction` within 0..1; from its whole tiles where it has none (an older worker's)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return min(max(float(value), 0.0), 1.0)
    return min(done / total, 1.0) if total > 0 else 0.0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Start:
    record: Mapping[str, Any]  # the whole JSON object, for what is only logged or measured
    tiles: int = 0
    engine: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Progress:
    record: Mapping[str, Any]
    done: int = 0  # whole tiles
    total: int = 0
    fraction: float = 0.0  # of the photo's network work, the running tile's part included


@dataclass(frozen=True)
class Done:
    record: Mapping[str, Any]
    output: str | None = None


@dataclass(frozen=True)
class Error:
    record: Mapping[str, Any]
    code: str | None = None
    message: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class BatchEvent:
    """batch_start, skipped or batch_done: read by people at a terminal, passed on by the front end."""

    record: Mapping[str, Any]
    kind: EventKind


@dataclass(frozen=True)
class Unknown:
    """An event of a name this contract does not know (a newer worker's): passed over, not an error."""

    record: Mapping[str, Any]
    name: str


@dataclass(frozen=True)
class Unreadable:
    """A line that is not an event: not JSON, not an object, or without a name."""

    record: Mapping[str, Any] = field(default_factory=dict)


Event = Union[Start, Progress, Done, Error, BatchEvent, Unknown, Unreadable]
_EVENT_TYPES = (Start, Progress, Done, Error, BatchEvent, Unknown, Unreadable)


def parse_event(raw: bytes | str | Mapping[str, Any] | Event) -> Event:
    """The typed event of one line of the worker's stdout (or of its decoded JSON object); never raises."""
    if isinstance(raw, _EVENT_TYPES):
        return raw
    record: Any = raw
    if isinstance(raw, (bytes, str)):
        try:
            record = json.loads(raw)
        except ValueError:
            return Unreadable()
    if not isinstance(record, Mapping):
        return Unreadable()
    record = dict(record)
    name = record.get("event")
    if not isinstance(name, str):
        return Unreadable(record)
    try:
        kind = EventKind(name)
    except ValueError:
        return Unknown(record, name)
    if kind is EventKind.START:
        return Start(record, _int(record.get("tiles")), _str(record.get("engine")), _str(record.get("device")))
    if kind is EventKind.PROGRESS:
        done, total = _int(record.get("done")), _int(record.get("total"))
        return Progress(record, done, total, _fraction(record.get("fraction"), done, total))
    if kind is EventKind.DONE:
        return Done(record, _str(record.get("output")))
    if kind is EventKind.ERROR:
        exit_code = record.get("exit_code")
        return Error(record, _str(record.get("code")), _str(record.get("message")),
                     exit_code if isinstance(exit_code, int) else None)
    return BatchEvent(record, kind)
