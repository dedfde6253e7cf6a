"""A photo's header, read with Pillow alone (no pixels, no numpy): its format and its size as displayed.

The front end checks uploads with it, so that it and the worker agree on what is a photo."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from infer import contract
from infer.errors import InputError, OutOfMemoryError

# Pillow format names accepted as input. A JPEG carrying extra pictures (depth maps, previews) opens as
# Pillow's MPO and is reported as JPEG; its first picture is used.
INPUT_FORMATS = tuple(f.pillow for f in contract.FORMATS)
INPUT_FORMATS_TEXT = "/".join(f.label for f in contract.FORMATS)

EXIF_ORIENTATION = 0x0112


# Serialises our switching of Pillow's process-wide limit, so concurrent callers (threads in one process)
# always restore the value that was there before the first of them.
_PILLOW_LIMIT_LOCK = threading.RLock()


@contextlib.contextmanager
def our_pixel_limit_only() -> Iterator[None]:
    """Switch off Pillow's process-wide decompression-bomb limit while a file is opened and decoded.

    Our own check (max_pixels, from the header, before any pixel is decoded) is the one that applies;
    Pillow's would otherwise raise or warn first, with a different limit and message. The previous value
    is restored on the way out. The worker is one single-threaded process per job; in a threaded process,
    other Image.open calls running at the same moment also go without Pillow's limit for that long.
    """
    with _PILLOW_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # Pillow then neither raises nor warns
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def not_readable(path: Path, detail: str = "") -> InputError:
    if detail:
        return InputError(
            f"{path} is not a readable {INPUT_FORMATS_TEXT} image: the file is damaged or incomplete ({detail}); "
            "upload it again, or open it in an image editor and save it again as JPEG or PNG"
        )
    return InputError(
        f"{path} is not a readable {INPUT_FORMATS_TEXT} image; choose a photo in one of those formats"
    )


def open_header(path: Path) -> Image.Image:
    """Identify the file from its header; no pixels are decoded yet."""
    try:
        return Image.open(path, formats=INPUT_FORMATS)
    except FileNotFoundError:
        raise InputError(f"input file {path} not found") from None
    except IsADirectoryError:
        raise InputError(f"input {path} is a folder, not an image file") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except MemoryError:
        raise OutOfMemoryError(f"not enough memory to read the header of {path}") from None
    except UnidentifiedImageError:
        raise not_readable(path) from None
    except Exception as exc:  # any decoder failure on a header is a bad file, whatever Pillow calls it
        raise not_readable(path, str(exc) or type(exc).__name__) from None


def format_name(im: Image.Image) -> str:
    return "JPEG" if im.format == "MPO" else str(im.format)


def _header_orientation(im: Image.Image) -> int:
    """The EXIF orientation if the header already holds it (no pixel data is read)."""
    try:
        if im.format == "TIFF":
            value = im.tag_v2.get(EXIF_ORIENTATION, 1)  # type: ignore[attr-defined]
        elif "exif" in im.info:
            exif = Image.Exif()
            exif.load(im.info["exif"])
            value = exif.get(EXIF_ORIENTATION, 1)
        else:
            return 1
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # unreadable metadata never makes a photo unreadable
        return 1


def probe(path: str | os.PathLike[str]) -> tuple[int, int, str]:
    """Width, height and Pillow format name from the header only.

    The size is as displayed: swapped when the header's EXIF orientation turns the photo by 90 degrees.
    Raises InputError when the file is not one of the accepted formats.
    """
    path = Path(path)
    with our_pixel_limit_only():
        im = open_header(path)
        with im:
            width, height = im.size
            if im.format == "TIFF":
                # Pillow may already report a TIFF's size turned; the stored size is unambiguous.
                width = int(im.tag_v2.get(256, width))  # type: ignore[attr-defined]
                height = int(im.tag_v2.get(257, height))  # type: ignore[attr-defined]
            if _header_orientation(im) >= 5:
                width, height = height, width
            return width, height, format_name(im)
