"""Several photos in one worker run: which files, where each result goes, and running them in turn."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infer import contract
from infer.contract import EXIT_OK, EventKind
from infer.errors import (
    CancelledError,
    InputError,
    ModelError,
    OutOfMemoryError,
    OutputError,
    UsageError,
    WorkerError,
)
from infer.events import EventSink

# What a folder is searched for (by extension, case-insensitive); the decoder still checks the bytes.
IMAGE_SUFFIXES = tuple(ext for f in contract.FORMATS for ext in f.extensions)
# Failures that would hit every remaining photo the same way: the batch stops there.
_FATAL = (ModelError, UsageError, CancelledError)


@dataclass(frozen=True)
class PhotoJob:
    """One photo to upscale and the file its result goes to."""

    input: Path
    output: Path


@dataclass
class BatchResult:
    """How many photos were upscaled, skipped and failed, and the exit code that says so."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    exit_code: int = EXIT_OK


def is_batch(inputs: list[str], output: str) -> bool:
    """Folder mode: several inputs, a folder among them, or an output that is (or ends like) a folder."""
    return (
        len(inputs) > 1
        or any(Path(p).is_dir() for p in inputs)
        or Path(output).is_dir()
        or output.endswith(("/", os.sep))
    )


def find_photos(inputs: list[str]) -> list[Path]:
    """The files named, plus the images directly inside each folder named (not its subfolders), in order."""
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(
                p for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not inside:
                raise InputError(
                    f"no images in folder {path} (looked for {', '.join(IMAGE_SUFFIXES)}, not in subfolders)"
                )
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"input file not found: {path}")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [Path(p) for p in unique]


def output_name(photo: Path, scale: int, fmt: str | None) -> str:
    """`<stem>_x<scale>.<ext>`: the extension from --format, else the input's (PNG for BMP, TIFF, GIF)."""
    # Inputs the encoder cannot write in their own format get PNG.
    ext = f".{fmt}" if fmt else contract.result_format(contract.format_of_suffix(photo.suffix)).extensions[0]
    return f"{photo.stem}_x{scale}{ext}"


def plan(photos: list[Path], out_dir: Path, scale: int, fmt: str | None) -> list[PhotoJob]:
    """A job per photo; two inputs that would write the same result are refused before any work."""
    jobs: list[PhotoJob] = []
    seen: dict[Path, Path] = {}
    for photo in photos:
        target = out_dir / output_name(photo, scale, fmt)
        if target in seen:
            raise UsageError(
                f"{seen[target]} and {photo} would both be written to {target}; "
                "rename one of them or upscale them in separate runs"
            )
        seen[target] = photo
        jobs.append(PhotoJob(photo, target))
    return jobs


def prepare_output_folder(out_dir: Path) -> None:
    """Creates the output folder if missing; OutputError (exit 7) when it cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {out_dir}: the folder is not writable")


def run_batch(
    jobs: list[PhotoJob],
    run_one: Callable[[PhotoJob], None],
    events: EventSink,
    *,
    out_dir: Path,
    overwrite: bool,
) -> BatchResult:
    """Runs every job whose output is not there yet (all with `overwrite`); a failed photo does not stop
    the others unless the failure would repeat for each (model, usage, cancelled).

    The exit code is 0 when every photo was upscaled or skipped, else that of the first failure."""
    result = BatchResult()
    to_do = [j for j in jobs if overwrite or not j.output.exists()]
    events.emit(EventKind.BATCH_START, photos=len(jobs), to_do=len(to_do), output=str(out_dir))
    for job in jobs:
        if job not in to_do:
            result.skipped += 1
            events.emit(EventKind.SKIPPED, input=str(job.input), output=str(job.output), reason="exists")
    for job in to_do:
        try:
            try:
                run_one(job)
            except MemoryError:
                raise OutOfMemoryError(f"ran out of memory on {job.input}; try a smaller --tile") from None
            except FileNotFoundError as err:
                raise InputError(f"input file not found: {err.filename}") from None
        except WorkerError as err:
            result.failed += 1
            if result.exit_code == EXIT_OK:
                result.exit_code = err.exit_code
            events.emit(EventKind.ERROR, input=str(job.input), code=err.code, message=err.message, exit_code=err.exit_code)
            if isinstance(err, _FATAL):
                break
        else:
            result.done += 1
    events.emit(EventKind.BATCH_DONE, done=result.done, skipped=result.skipped, failed=result.failed,
                exit_code=result.exit_code)
    return result
