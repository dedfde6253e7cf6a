"""Saving an upload under a server-chosen name: size limit while copying, type sniffed from the bytes, header-only pixel check."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from infer import contract
from infer.errors import WorkerError
from infer.header import our_pixel_limit_only, probe
from web.http.errors import Refusal
from web.jobs.files import incoming_name, mask_name, upload_name

_ACCEPTED_TEXT = contract.formats_text()

_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^\w\-. ]+", re.UNICODE)


@dataclass(frozen=True)
class SavedUpload:
    """A checked upload at `uploads/<job_id>.<ext>`."""

    job_id: str
    path: Path
    format: str
    width: int
    height: int
    size_bytes: int
    sha256: str  # of the bytes as they came in, computed while they streamed


def clean_name(name: str | None, limit: int = 120) -> str:
    """The client's file name reduced to printable text without any folder part; kept only as metadata."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:limit] or "photo"


def download_stem(original_name: str) -> str:
    """A file-name-safe stem for the result's download name (`holiday.jpg` -> `holiday`)."""
    stem = Path(clean_name(original_name)).stem
    stem = _UNSAFE.sub("_", stem).strip(" ._")
    return stem[:80] or "photo"


def output_format_for(requested: str | None, input_ext: str) -> str:
    """The result's extension: the requested one, else the input's if the worker can write it, else png."""
    if requested:
        chosen = contract.format_named(requested)
        if chosen is None:
            raise Refusal(400, "bad_format", unknown_format_message(requested))
        return chosen.name
    # Keep JPEG and WebP as they are; everything else becomes PNG.
    return contract.result_format(contract.format_by_name(input_ext)).name


def unknown_format_message(requested: str) -> str:
    return f"unknown format {requested!r}; use {contract.one_of([f.name for f in contract.OUTPUT_FORMATS])}"


def _copy_limited(src: BinaryIO, dst: BinaryIO, max_bytes: int, digest: Any, what: str = "photo") -> int:
    total = 0
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        if total > max_bytes:
            raise Refusal(
                413,
                "too_large",
                f"the file is larger than the {max_bytes / 1024 / 1024:.3g} MB limit; "
                f"send a smaller {what}",
            )
        dst.write(chunk)
        digest.update(chunk)


def _unsupported(path: Path) -> Refusal:
    """Names the format when Pillow knows it (an icon, say), so that the person knows what they sent."""
    try:
        with Image.open(path) as im:
            fmt = im.format
    except Exception:
        fmt = None
    what = f"{fmt} files are not supported" if fmt else "this file is not a photo the service can read"
    return Refusal(415, "unsupported_type", f"{what}; send a {_ACCEPTED_TEXT}")


def _sniff(path: Path) -> tuple[str, int, int]:
    """Format and size as displayed (EXIF orientation applied), read from the header by the worker's own
    reader, so that both agree on what is a photo; no pixels are decoded and Pillow's own size limit does
    not apply (SR_MAX_PIXELS does, in the caller)."""
    try:
        width, height, fmt = probe(path)
    except WorkerError:
        raise _unsupported(path) from None
    return fmt, width, height


def save_upload(stream: BinaryIO, uploads_dir: Path, max_bytes: int, max_pixels: int) -> SavedUpload:
    """Copies the upload in chunks, checks it, and keeps it only if every check passes."""
    job_id = str(uuid.uuid4())
    uploads_dir.mkdir(parents=True, exist_ok=True)
    partial = uploads_dir / incoming_name(job_id)
    digest = hashlib.sha256()
    try:
        with open(partial, "xb") as out:
            size = _copy_limited(stream, out, max_bytes, digest)
        if size == 0:
            raise Refusal(400, "empty_file", "the file is empty; choose a photo and try again")
        fmt, width, height = _sniff(partial)
        accepted = contract.format_of_pillow(fmt)
        if accepted is None:
            raise Refusal(
                415, "unsupported_type", f"{fmt} files are not supported; send a {_ACCEPTED_TEXT}"
            )
        if width * height > max_pixels:
            raise Refusal(
                422,
                "too_many_pixels",
                f"the photo is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the "
                f"{max_pixels / 1e6:g} megapixel limit; resize it first",
            )
        ext = accepted.name
        final = uploads_dir / upload_name(job_id, ext)
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return SavedUpload(job_id=job_id, path=final, format=ext, width=width, height=height, size_bytes=size,
                       sha256=digest.hexdigest())


@dataclass(frozen=True)
class SavedMask:
    """A checked repair mask at `uploads/<job_id>.mask.png`."""

    path: Path
    sha256: str


def _mask_header(path: Path) -> tuple[str | None, int, int]:
    """The mask's format and stored size (its own orientation tag is not applied: the worker reads it so)."""
    try:
        with our_pixel_limit_only(), Image.open(path) as im:
            return im.format, im.width, im.height
    except Exception:
        return None, 0, 0


def save_mask(stream: BinaryIO, uploads_dir: Path, job_id: str, max_bytes: int, width: int, height: int) -> SavedMask:
    """Copies a repair mask beside its job's photo and checks what the front end can from the header: a PNG (415),
    at most `max_bytes` (413), the photo's size as shown (422). Whether it marks every pixel is the worker's to
    say (the job fails with its message). Nothing is kept if a check fails."""
    final = uploads_dir / mask_name(job_id)
    partial = uploads_dir / incoming_name(f"{job_id}.mask")
    digest = hashlib.sha256()
    try:
        with open(partial, "xb") as out:
            size = _copy_limited(stream, out, max_bytes, digest, what="repair mask")
        if size == 0:
            raise Refusal(400, "empty_mask", "the repair mask is empty; paint over the damage again, or send no mask")
        fmt, mask_width, mask_height = _mask_header(partial)
        if fmt not in contract.MASK_FORMATS:
            raise Refusal(415, "unsupported_mask_type",
                          "the repair mask must be a PNG image (transparent or black where nothing is to be repaired)")
        if (mask_width, mask_height) != (width, height):
            raise Refusal(422, "mask_size",
                          f"the repair mask is {mask_width}x{mask_height} but the photo is {width}x{height}; "
                          "the mask must be exactly the photo's size")
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return SavedMask(final, digest.hexdigest())
