"""Every bad and awkward photo file the reliability tests send, generated in memory (no binary fixtures)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The pixel limit the tests run the service and the worker with; the boundary cases are built around it.
MAX_PIXELS = 3000


@dataclass(frozen=True)
class BadFile:
    """A file the service must not turn into a result, and how each side is expected to answer it.

    `refused` is (HTTP status, error code) when the upload itself is refused, before any worker starts;
    None means the header looks like a photo, so the job is accepted and the worker fails it with `job_code`.
    """

    name: str
    filename: str
    data: bytes
    exit_code: int
    message: str  # a fragment the worker's message (and the service's) must contain
    refused: tuple[int, str] | None = None
    job_code: str = "bad_input"


@dataclass(frozen=True)
class GoodFile:
    """An awkward but valid photo: it must come back `scale` times larger, upright."""

    name: str
    filename: str
    data: bytes
    width: int  # as displayed (EXIF orientation applied)
    height: int
    grayscale: bool = False
    alpha: bool = False


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture (gradients plus one colour per seed): survives upscaling recognisably."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 216, size=3).astype(np.float32)
    r = base[0] + 30 * np.sin(x / max(width, 1) * 3.1)
    g = base[1] + 30 * np.cos(y / max(height, 1) * 3.1)
    b = base[2] + 20 * np.sin((x + y) / max(width + height, 1) * 6.2)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(pattern(width, height, seed))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares `width` x `height` RGB pixels; its data holds only a few rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (3 * width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def flip_crc(data: bytes, chunk: bytes) -> bytes:
    """The PNG with the stored CRC of its first `chunk` chunk damaged."""
    out = bytearray(data)
    at = out.index(chunk)
    (length,) = struct.unpack(">I", out[at - 4:at])
    out[at + 4 + length] ^= 0xFF
    return bytes(out)


def cut_in_scan(jpeg: bytes) -> bytes:
    """The JPEG cut half way through its compressed pixels: the header is intact, the picture is not."""
    start = jpeg.index(b"\xff\xda")
    return jpeg[: start + (len(jpeg) - start) // 2]


def header_over_no_pixels(width: int, height: int, kept: int = 16) -> bytes:
    """A JPEG whose header says `width` x `height`, then `kept` bytes of compressed pixels and the end marker:
    libjpeg stops at the marker and Pillow, which silences its warning, fills the rest with grey."""
    data = bytearray(encode(rgb(64, 48, seed=17), "JPEG", quality=90))
    frame = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    scan = data.index(b"\xff\xda")
    (length,) = struct.unpack(">H", data[scan + 2:scan + 4])
    return bytes(data[: scan + 2 + length + kept]) + b"\xff\xd9"


def zip_file() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", "these are not the pixels you are looking for")
    return buf.getvalue()


def gif_frames(n: int = 200) -> bytes:
    frames = [Image.new("RGB", (20, 16), ((3 * i) % 256, 255 - i, 90)) for i in range(n)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)


def tiff_pages() -> bytes:
    first = rgb(24, 18, seed=5)
    return encode(first, "TIFF", save_all=True, append_images=[rgb(60, 60, seed=6), rgb(8, 8, seed=7)])


def exif_rotated_jpeg() -> bytes:
    """40x30 stored, orientation 6 (turn 90 degrees clockwise): displayed as 30x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(rgb(40, 30, seed=8), "JPEG", exif=exif.tobytes(), quality=95)


def cmyk_jpeg() -> bytes:
    return encode(rgb(32, 24, seed=9).convert("CMYK"), "JPEG", quality=95)


def gray16_png() -> bytes:
    values = np.linspace(0, 65535, 32 * 24).reshape(24, 32).astype(np.uint16)
    return encode(Image.fromarray(values), "PNG")


def rgba_png() -> bytes:
    image = rgb(32, 24, seed=10).convert("RGBA")
    alpha = np.full((24, 32), 255, np.uint8)
    alpha[:, :16] = 80
    image.putalpha(Image.fromarray(alpha))
    return encode(image, "PNG")


def bad_files() -> list[BadFile]:
    valid_png = encode(rgb(40, 30, seed=1), "PNG")
    valid_jpg = encode(rgb(40, 30, seed=2), "JPEG", quality=90)
    not_readable = "not a readable"
    unsupported = (415, "unsupported_type")
    return [
        BadFile("zero-byte file", "empty.jpg", b"", 3, not_readable, refused=(400, "empty_file")),
        BadFile("truncated JPEG", "half.jpg", cut_in_scan(valid_jpg), 3, "damaged or incomplete"),
        BadFile("JPEG with a whole header and almost no pixel data", "hollow.jpg", header_over_no_pixels(60, 50), 3,
                "damaged or incomplete"),
        BadFile("JPEG cut inside its header", "stub.jpg", valid_jpg[:200], 3, not_readable, refused=unsupported),
        BadFile("truncated PNG", "half.png", valid_png[: len(valid_png) // 2], 3, "damaged or incomplete"),
        BadFile("PNG with a bad IHDR CRC", "crc.png", flip_crc(valid_png, b"IHDR"), 3, not_readable,
                refused=unsupported),
        BadFile("PNG with a bad IDAT CRC", "crc2.png", flip_crc(valid_png, b"IDAT"), 3, "checksum mismatch"),
        BadFile("random bytes named .jpg", "random.jpg", np.random.default_rng(3).bytes(5000), 3, not_readable,
                refused=unsupported),
        BadFile("HTML named .png", "page.png", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
                3, not_readable, refused=unsupported),
        BadFile("SVG named .png", "drawing.png",
                b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">'
                b'<rect width="100%" height="100%"/></svg>', 3, not_readable, refused=unsupported),
        BadFile("PDF named .jpg", "scan.jpg", b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<<>>\n%%EOF\n", 3,
                not_readable, refused=unsupported),
        BadFile("ZIP named .png", "photos.png", zip_file(), 3, not_readable, refused=unsupported),
        BadFile("decompression bomb (50000x50000 PNG header)", "bomb.png", png_bomb(), 4, "50000x50000",
                refused=(422, "too_many_pixels"), job_code="too_many_pixels"),
        BadFile("one pixel over SR_MAX_PIXELS", "over.png", encode(rgb(MAX_PIXELS + 1, 1, seed=4), "PNG"), 4,
                f"{MAX_PIXELS + 1}x1", refused=(422, "too_many_pixels"), job_code="too_many_pixels"),
    ]


def good_files() -> list[GoodFile]:
    def png(image: Image.Image) -> bytes:
        return encode(image, "PNG")

    under = (MAX_PIXELS // 50, 50)  # exactly at the limit: allowed
    return [
        GoodFile("1x1 PNG", "dot.png", png(rgb(1, 1, seed=11)), 1, 1),
        GoodFile("1xN PNG", "column.png", png(rgb(1, 40, seed=12)), 1, 40),
        GoodFile("Nx1 JPEG", "row.jpg", encode(rgb(40, 1, seed=13), "JPEG"), 40, 1),
        GoodFile("grayscale PNG", "gray.png", png(rgb(32, 24, seed=14).convert("L")), 32, 24, grayscale=True),
        GoodFile("palette PNG", "palette.png", png(rgb(32, 24, seed=15).convert("P")), 32, 24),
        GoodFile("16-bit grayscale PNG", "deep.png", gray16_png(), 32, 24, grayscale=True),
        GoodFile("CMYK JPEG", "print.jpg", cmyk_jpeg(), 32, 24),
        GoodFile("RGBA PNG", "logo.png", rgba_png(), 32, 24, alpha=True),
        GoodFile("EXIF-rotated JPEG (orientation 6)", "phone.jpg", exif_rotated_jpeg(), 30, 40),
        GoodFile("GIF with 200 frames", "anim.gif", gif_frames(200), 20, 16),
        GoodFile("TIFF with 3 pages", "pages.tiff", tiff_pages(), 24, 18),
        GoodFile("exactly SR_MAX_PIXELS", "limit.png", png(rgb(*under, seed=16)), *under),
    ]
