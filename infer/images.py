"""Photo decoding and encoding for the worker: pixel limit, orientation, pixel modes, metadata, atomic writes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from infer import contract
from infer.errors import InputError, OutOfMemoryError, OutputError, TooLargeError, UsageError
from infer.header import EXIF_ORIENTATION, format_name, not_readable, open_header, our_pixel_limit_only, probe
from infer.jpegcheck import ends_early

__all__ = ["DecodedImage", "decode", "encode", "output_format", "probe"]

log = logging.getLogger(__name__)

OUTPUT_FORMATS = {ext: f.pillow for f in contract.OUTPUT_FORMATS for ext in f.extensions}

# zlib level for PNG output; see docs/benchmarks.md ("PNG compression level") for the measurement behind it.
PNG_COMPRESS_LEVEL = 4
# Largest side each output format can hold.
MAX_SIDE = {f.pillow: f.max_side for f in contract.OUTPUT_FORMATS}

EXIF_IFD = 0x8769
EXIF_PIXEL_X = 0xA002
EXIF_PIXEL_Y = 0xA003
# IFD0 tags that describe how a TIFF stores its pixels; they are wrong for any other file, so they never travel.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320,
     322, 323, 324, 325, 338, 339, 340, 341, 513, 514, 530, 531, 532, 700, 34675}
)


@dataclass
class DecodedImage:
    """A decoded photo: 8-bit BGR pixels, upright, plus what must survive into the output file."""

    bgr: np.ndarray  # H x W x 3 uint8, EXIF orientation already applied
    alpha: np.ndarray | None = None  # H x W uint8, or None when the photo has no transparency channel
    grayscale: bool = False  # the source had no colour: write the result as grayscale
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation reset to 1
    source_format: str = ""  # Pillow's name: JPEG, PNG, WEBP, BMP, TIFF or GIF

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


# --------------------------------------------------------------------------- decoding


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLargeError(
            f"{path} is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:g} megapixels ({max_pixels} pixels); resize it below "
            f"{max_pixels / 1e6:g} megapixels or raise SR_MAX_PIXELS (--max-pixels)"
        )


class _BadPng(Exception):
    pass


def _check_png_chunks(path: Path) -> None:
    """Verify every chunk's CRC up to IEND: Pillow checks header chunks but not image data."""
    with open(path, "rb") as f:
        f.seek(8)
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise _BadPng("the file ends before the PNG end marker")
            length, kind = struct.unpack(">I4s", head)
            crc = zlib.crc32(kind)
            remaining = length
            while remaining:
                block = f.read(min(remaining, 1 << 20))
                if not block:
                    raise _BadPng(f"the file ends inside its {kind.decode('latin-1')} chunk")
                crc = zlib.crc32(block, crc)
                remaining -= len(block)
            stored = f.read(4)
            if len(stored) < 4:
                raise _BadPng(f"the file ends inside its {kind.decode('latin-1')} chunk")
            if struct.unpack(">I", stored)[0] != crc:
                raise _BadPng(f"checksum mismatch in its {kind.decode('latin-1')} chunk")
            if kind == b"IEND":
                return


def _check_jpeg_data(path: Path) -> None:
    """InputError when the compressed pixels end before the picture does (a large header over almost no data
    would otherwise decode to grey and be upscaled)."""
    said = ends_early(path)
    if said is not None:
        log.warning("%s: libjpeg: %s", path, said)
        raise not_readable(path, "its picture data ends early")


def _to_8bit_gray(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grayscale array to uint8 (scaling, never clipping)."""
    if mode.startswith("I;16"):
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    if values.size == 0:
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(values.min()), float(values.max())
    if mode == "I" and lo >= 0 and hi <= 65535:
        # Pillow's 32-bit integer mode usually carries 16-bit samples.
        return (values.astype(np.uint32) >> 8).astype(np.uint8)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    # Any other range: stretch what is there onto 0..255.
    span = hi - lo if hi > lo else 1.0
    return np.rint((values.astype(np.float64) - lo) * (255.0 / span)).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK through its own ICC profile to sRGB when it has one, else Pillow's plain formula."""
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as exc:  # a broken or unsupported profile still leaves a usable picture
            log.warning("could not apply the CMYK colour profile (%s); converting without it", exc)
    return im.convert("RGB")


def _pixels(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bool, bytes | None]:
    """Colour (H x W x 3 RGB or H x W gray, uint8), alpha or None, grayscale flag, and the ICC still valid."""
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or transparency is not None else "RGB")
        mode = im.mode
    elif mode == "1":
        im = im.convert("L")
        mode = "L"
    elif mode in ("La", "RGBa"):
        im = im.convert(mode.upper())
        mode = im.mode
    elif mode == "CMYK":
        im = _cmyk_to_rgb(im, icc)
        mode, icc = "RGB", None  # the CMYK profile does not describe RGB pixels
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        im = im.convert("RGBA" if "A" in mode else "RGB")  # RGBX, YCbCr, LAB, HSV ...
        mode = im.mode

    if mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        color = arr[..., :3]
        alpha = arr[..., 3] if mode == "RGBA" else None
        if alpha is None and isinstance(transparency, tuple) and len(transparency) == 3:
            alpha = np.where(np.all(color == np.array(transparency, np.uint8), axis=-1), 0, 255).astype(np.uint8)
        return color, alpha, False, icc
    if mode == "LA":
        arr = np.asarray(im)
        return arr[..., 0], arr[..., 1], True, icc
    raw = np.asarray(im)  # L, I;16*, I, F
    gray = raw if mode == "L" else _to_8bit_gray(raw, mode)
    alpha = None
    if isinstance(transparency, int) and not isinstance(transparency, bool):
        alpha = np.where(raw == transparency, 0, 255).astype(np.uint8)
    return gray, alpha, True, icc


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an H x W (x C) array upright for an EXIF orientation value (2..8); 1 or unknown: unchanged."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _exif_and_orientation(im: Image.Image, source_format: str) -> tuple[bytes | None, int]:
    """The EXIF block to keep (orientation set to 1) and the orientation to apply to the pixels."""
    # Pillow turns TIFF pixels itself while loading and drops the tag, so whatever orientation is
    # left after load() is exactly what still has to be applied.
    try:
        exif = im.getexif()
        if source_format == "TIFF":
            for tag in _TIFF_LAYOUT_TAGS & set(exif):
                del exif[tag]
        if len(exif) == 0:
            return None, 1
        orientation = int(exif.get(EXIF_ORIENTATION, 1))
        if EXIF_ORIENTATION in exif:
            exif[EXIF_ORIENTATION] = 1
        return exif.tobytes(), orientation if orientation in range(1, 9) else 1
    except Exception as exc:  # bad metadata is dropped, the photo itself is still fine
        log.warning("ignoring unreadable EXIF metadata (%s)", exc)
        return None, 1


def decode(path: str | os.PathLike[str], max_pixels: int) -> DecodedImage:
    """Decode the first frame of a JPEG/PNG/WebP/BMP/TIFF/GIF photo into upright 8-bit BGR (+ alpha).

    The pixel count is checked from the header before any pixel is decoded (TooLargeError, exit 4);
    anything unreadable, truncated or corrupt raises InputError (exit 3).
    """
    path = Path(path)
    if max_pixels <= 0:
        raise UsageError("the pixel limit must be positive")
    with our_pixel_limit_only():
        im = open_header(path)
        with im:
            width, height = im.size
            _check_pixels(path, width, height, max_pixels)
            source_format = format_name(im)
            if source_format == "JPEG":
                _check_jpeg_data(path)
            try:
                if source_format == "PNG":
                    _check_png_chunks(path)
                im.load()
            except MemoryError:
                raise OutOfMemoryError(
                    f"not enough memory to decode {path} ({width}x{height}); "
                    "try a smaller photo or free some memory"
                ) from None
            except Exception as exc:  # truncated or corrupt pixel data, in whichever decoder
                raise not_readable(path, str(exc) or type(exc).__name__) from None
            exif, orientation = _exif_and_orientation(im, source_format)
            icc = im.info.get("icc_profile") or None
            try:
                color, alpha, grayscale, icc = _pixels(im, icc)
            except MemoryError:
                raise OutOfMemoryError(f"not enough memory to convert {path} ({width}x{height})") from None
            except (ValueError, OSError) as exc:  # a colour mode Pillow cannot turn into RGB
                raise InputError(
                    f"{path} uses the {im.mode} colour mode, which cannot be converted ({exc}); "
                    "save it as an RGB JPEG or PNG"
                ) from None

    color = _orient(color, orientation)
    if grayscale:
        bgr = np.repeat(color[..., None], 3, axis=2)
    else:
        bgr = np.ascontiguousarray(color[..., ::-1])
    if alpha is not None:
        alpha = np.ascontiguousarray(_orient(alpha, orientation))
    return DecodedImage(
        bgr=bgr, alpha=alpha, grayscale=grayscale, icc_profile=icc, exif=exif, source_format=source_format
    )


# --------------------------------------------------------------------------- encoding


def output_format(path: str | os.PathLike[str]) -> str:
    """Pillow format name for an output path, from its extension: PNG, JPEG or WEBP."""
    suffix = Path(path).suffix.lower()
    try:
        return OUTPUT_FORMATS[suffix]
    except KeyError:
        raise UsageError(
            f"cannot write {Path(path).name}: unsupported output type {suffix or '(no extension)'!r}; "
            "end the output name with .png, .jpg, .jpeg or .webp"
        ) from None


def _icc_colour_space(icc: bytes) -> str:
    return icc[16:20].decode("latin-1").strip() if len(icc) >= 20 else ""


def _exif_for_output(exif: bytes, width: int, height: int) -> bytes | None:
    """Orientation 1 and the Exif pixel dimensions of the new size; unreadable EXIF is dropped."""
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        if EXIF_ORIENTATION in parsed:
            parsed[EXIF_ORIENTATION] = 1
        if EXIF_IFD in parsed:  # get_ifd would otherwise add an empty Exif sub-IFD
            sub = parsed.get_ifd(EXIF_IFD)
            if EXIF_PIXEL_X in sub:
                sub[EXIF_PIXEL_X] = width
            if EXIF_PIXEL_Y in sub:
                sub[EXIF_PIXEL_Y] = height
        return parsed.tobytes()
    except Exception as exc:
        log.warning("dropping unreadable EXIF metadata (%s)", exc)
        return None


def _pil_from(array: np.ndarray, mode: str, rawmode: str) -> Image.Image:
    height, width = array.shape[:2]
    return Image.frombuffer(mode, (width, height), np.ascontiguousarray(array), "raw", rawmode, 0, 1)


def _to_pil(image: DecodedImage, fmt: str, path: Path) -> Image.Image:
    """Pillow image for the output format; Pillow does the channel work so no full-size temporaries pile up."""
    pil = _pil_from(image.bgr, "RGB", "BGR")
    if image.grayscale:
        pil = pil.convert("L")
    alpha = image.alpha
    if alpha is not None and fmt == "JPEG":
        if int(alpha.min()) < 255:
            log.warning(
                "%s: JPEG cannot store transparency; transparent areas were filled with white "
                "(write .png or .webp to keep them)", path,
            )
            flat = Image.new(pil.mode, pil.size, "white")
            flat.paste(pil, (0, 0), _pil_from(alpha, "L", "L"))
            pil = flat
        alpha = None
    if image.grayscale and fmt == "WEBP":
        pil = pil.convert("RGB")  # WebP has no grayscale mode
    if alpha is not None:
        pil.putalpha(_pil_from(alpha, "L", "L"))  # L -> LA, RGB -> RGBA
    return pil


def _save_options(image: DecodedImage, pil: Image.Image, fmt: str, quality: int) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options.update(quality=quality)
        if quality >= 90:
            options["subsampling"] = 0  # 4:4:4: full-resolution colour, worth it at high quality
    elif fmt == "WEBP":
        options.update(quality=quality)
    else:
        options.update(compress_level=PNG_COMPRESS_LEVEL)
    if image.icc_profile:
        wanted = "GRAY" if pil.mode in ("L", "LA") else "RGB"
        if _icc_colour_space(image.icc_profile) == wanted:
            options["icc_profile"] = image.icc_profile
        else:
            log.warning("dropping a %s colour profile that does not fit %s pixels",
                        _icc_colour_space(image.icc_profile) or "malformed", pil.mode)
    if image.exif:
        exif = _exif_for_output(image.exif, pil.width, pil.height)
        if exif and fmt == "JPEG" and len(exif) > 65533:
            log.warning("dropping EXIF metadata: %d bytes is more than a JPEG can hold", len(exif))
            exif = None
        if exif:
            options["exif"] = exif
    return options


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, hidden file beside the destination; permissions follow the umask like a plain create."""
    for _ in range(100):
        temp = folder / f".{name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _write_atomically(pil: Image.Image, path: Path, fmt: str, options: dict[str, Any]) -> None:
    temp: Path | None = None
    try:
        fd, temp = _create_temp(path.parent, path.name)
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format=fmt, **options)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        temp = None
        _fsync_folder(path.parent)
    except MemoryError:
        raise OutOfMemoryError(f"not enough memory to encode {path}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OutputError(f"cannot write {path}: {reason}; check the folder exists and is writable") from exc
    except Exception as exc:  # the encoder refused the data itself
        raise OutputError(f"cannot write {path}: the {fmt} encoder failed ({exc or type(exc).__name__})") from exc
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def encode(image: DecodedImage, path: str | os.PathLike[str], quality: int = 95) -> None:
    """Write the image as PNG, JPEG or WebP (from the extension), atomically, with its ICC and EXIF.

    Grayscale images are written as grayscale; alpha is kept for PNG/WebP and flattened onto white for
    JPEG. Nothing ever appears at `path` unless the whole file was written.
    """
    path = Path(path)
    fmt = output_format(path)
    bgr = image.bgr
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected H x W x 3 uint8 BGR pixels, got {bgr.dtype} {bgr.shape}")
    if image.alpha is not None and (image.alpha.dtype != np.uint8 or image.alpha.shape != bgr.shape[:2]):
        raise ValueError(f"alpha {image.alpha.dtype} {image.alpha.shape} does not match pixels {bgr.shape}")
    height, width = bgr.shape[:2]
    if max(width, height) > MAX_SIDE[fmt]:
        raise OutputError(
            f"cannot write {path}: {width}x{height} is too large for {fmt} (at most {MAX_SIDE[fmt]} pixels a side); "
            "write .png instead"
        )
    pil = _to_pil(image, fmt, path)
    _write_atomically(pil, path, fmt, _save_options(image, pil, fmt, quality))
