"""Decoding and encoding of real image files: formats, orientation, modes, metadata, limits, atomic writes."""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from infer import REPO_ROOT, images
from infer.errors import InputError, OutputError, TooLargeError, UsageError
from infer.images import DecodedImage

LIMIT = 16_000_000
NOT_READABLE = "not a readable PNG/JPEG/WebP/BMP/TIFF/GIF image"


# ----------------------------------------------------------------------------- helpers


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _bgr_to_rgb(d: DecodedImage) -> np.ndarray:
    return d.bgr[..., ::-1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG written chunk by chunk, for layouts Pillow cannot save (48-bit RGB, lying headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw_rows))
            + _chunk(b"IEND", b""))


def _temp_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.fixture(scope="module")
def crop(shared_photos: Path) -> np.ndarray:
    """A 48x40 RGB piece of a real photo: detailed, asymmetric, and cheap to encode."""
    return _rgb(shared_photos / "astronaut.png")[100:140, 200:248].copy()


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt, ext, lossless", [
    ("PNG", "png", True), ("BMP", "bmp", True), ("TIFF", "tif", True), ("WEBP", "webp", False),
    ("JPEG", "jpg", False), ("GIF", "gif", False),
])
def test_each_input_format_decodes_to_upright_bgr(tmp_path, crop, fmt, ext, lossless):
    path = tmp_path / f"in.{ext}"
    Image.fromarray(crop).save(path, format=fmt)
    decoded = images.decode(path, LIMIT)
    assert decoded.source_format == fmt
    assert decoded.bgr.shape == (40, 48, 3) and decoded.bgr.dtype == np.uint8
    assert decoded.bgr.flags.c_contiguous
    assert images.probe(path) == (48, 40, fmt)
    expected = _rgb(path)  # what Pillow itself reads back, so GIF's palette and JPEG's loss are accounted for
    assert np.array_equal(_bgr_to_rgb(decoded), expected)
    if lossless:
        assert np.array_equal(_bgr_to_rgb(decoded), crop)


@pytest.mark.parametrize("ext, max_mean_error", [("png", 0.0), ("jpg", 3.0), ("webp", 4.0)])
def test_round_trip_through_each_output_format(tmp_path, shared_photos, ext, max_mean_error):
    source = images.decode(shared_photos / "coffee.png", LIMIT)
    out = tmp_path / f"out.{ext}"
    images.encode(source, out)
    again = images.decode(out, LIMIT)
    assert again.bgr.shape == source.bgr.shape == (400, 600, 3)
    assert np.abs(again.bgr.astype(int) - source.bgr).mean() <= max_mean_error
    assert os.listdir(tmp_path) == [out.name]


def test_output_format_from_extension():
    assert images.output_format("a/b.PNG") == "PNG"
    assert images.output_format("x.jpg") == images.output_format("x.JPEG") == "JPEG"
    assert images.output_format("x.webp") == "WEBP"
    for bad in ("x.gif", "x.bmp", "x.tiff", "noext", "x.png.txt"):
        with pytest.raises(UsageError, match=r"\.png, \.jpg, \.jpeg or \.webp"):
            images.output_format(bad)


def test_jpeg_quality_and_chroma_subsampling(tmp_path, shared_photos):
    source = images.decode(shared_photos / "coffee.png", LIMIT)
    high, low = tmp_path / "high.jpg", tmp_path / "low.jpg"
    images.encode(source, high, quality=95)
    images.encode(source, low, quality=60)
    with Image.open(high) as a, Image.open(low) as b:
        assert JpegImagePlugin.get_sampling(a) == 0  # 4:4:4
        assert JpegImagePlugin.get_sampling(b) == 2  # 4:2:0
    assert low.stat().st_size < high.stat().st_size / 2


def test_webp_quality_is_applied(tmp_path, shared_photos):
    source = images.decode(shared_photos / "coffee.png", LIMIT)
    images.encode(source, tmp_path / "q90.webp", quality=90)
    images.encode(source, tmp_path / "q30.webp", quality=30)
    assert (tmp_path / "q30.webp").stat().st_size < (tmp_path / "q90.webp").stat().st_size / 2


def test_gif_with_200_frames_uses_the_first(tmp_path):
    frames = [Image.new("RGB", (16, 12), (i, 255 - i, (7 * i) % 256)) for i in range(200)]
    frames[0] = Image.new("RGB", (16, 12), (200, 30, 60))
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=20)
    with Image.open(path) as im:
        assert im.n_frames == 200
    t = time.perf_counter()
    decoded = images.decode(path, LIMIT)
    assert time.perf_counter() - t < 1.0
    assert tuple(_bgr_to_rgb(decoded)[5, 5]) == (200, 30, 60)
    assert decoded.bgr.shape == (12, 16, 3)


def test_multipage_tiff_uses_the_first_page(tmp_path, crop):
    first = Image.fromarray(crop)
    others = [Image.new("RGB", (64, 64), (0, 255, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    path = tmp_path / "pages.tiff"
    first.save(path, save_all=True, append_images=others)
    with Image.open(path) as im:
        assert im.n_frames == 3
    decoded = images.decode(path, LIMIT)
    assert np.array_equal(_bgr_to_rgb(decoded), crop)


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1)])
@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_tiny_images(tmp_path, size, ext):
    width, height = size
    arr = np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3) * 30
    path = tmp_path / f"tiny.{ext}"
    Image.fromarray(arr).save(path)
    decoded = images.decode(path, LIMIT)
    assert decoded.bgr.shape == (height, width, 3)
    out = tmp_path / f"out.{ext}"
    images.encode(decoded, out)
    with Image.open(out) as im:
        assert im.size == (width, height)


# ----------------------------------------------------------------------------- orientation and metadata


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(tmp_path, crop, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    Image.fromarray(crop).save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    decoded = images.decode(path, LIMIT)
    assert np.array_equal(_bgr_to_rgb(decoded), expected)
    w, h = images.probe(path)[:2]
    assert (h, w) == expected.shape[:2]


def _camera_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Maker"  # Make
    exif[0x0110] = "Model 7"  # Model
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    sub[0xA002] = 48  # PixelXDimension
    sub[0xA003] = 40  # PixelYDimension
    return exif


def test_orientation_6_jpeg_is_rotated_and_written_upright_with_its_exif(tmp_path, crop):
    path = tmp_path / "phone.jpg"
    Image.fromarray(crop).save(path, exif=_camera_exif(6).tobytes(), quality=95)
    decoded = images.decode(path, LIMIT)
    # Orientation 6: the stored picture must be turned 90 degrees clockwise to be seen upright.
    assert decoded.bgr.shape == (48, 40, 3)
    stored = _rgb(path)
    assert np.array_equal(_bgr_to_rgb(decoded), np.rot90(stored, -1))
    assert images.probe(path) == (40, 48, "JPEG")

    for ext in ("jpg", "png", "webp"):
        out = tmp_path / f"out.{ext}"
        images.encode(decoded, out)
        with Image.open(out) as im:
            assert im.size == (40, 48)
            exif = im.getexif()
            assert exif[0x0112] == 1
            assert exif[0x010F] == "Maker" and exif[0x0110] == "Model 7"
            sub = exif.get_ifd(0x8769)
            assert sub[0x9003] == "2024:05:06 07:08:09"
            assert (sub[0xA002], sub[0xA003]) == (40, 48)  # the written size, not the source's
        assert images.decode(out, LIMIT).bgr.shape == (48, 40, 3)  # not rotated a second time


def test_no_empty_exif_sub_ifd_is_added(tmp_path, crop):
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x010F] = "Maker"
    path = tmp_path / "plain.jpg"
    Image.fromarray(crop).save(path, exif=exif.tobytes())
    images.encode(images.decode(path, LIMIT), tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert dict(im.getexif()) == {0x0112: 1, 0x010F: "Maker"}


def test_tiff_orientation_applied_once_and_layout_tags_not_carried(tmp_path, crop):
    path = tmp_path / "scan.tif"
    Image.fromarray(crop).save(path, exif=_camera_exif(8))
    assert images.probe(path) == (40, 48, "TIFF")
    decoded = images.decode(path, LIMIT)
    assert np.array_equal(_bgr_to_rgb(decoded), np.rot90(crop, 1))  # 8: turn 90 degrees anticlockwise
    kept = Image.Exif()
    kept.load(decoded.exif)
    assert kept[0x010F] == "Maker" and kept.get(0x0112, 1) == 1
    assert not {256, 257, 273, 279} & set(kept)  # the TIFF's own size and strip offsets stay behind


def test_icc_profile_is_kept(tmp_path, shared_photos):
    with Image.open(shared_photos / "chelsea.png") as im:
        icc = im.info["icc_profile"]
    decoded = images.decode(shared_photos / "chelsea.png", LIMIT)
    assert decoded.icc_profile == icc
    for ext in ("png", "jpg", "webp"):
        out = tmp_path / f"out.{ext}"
        images.encode(decoded, out)
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == icc, ext


def test_profile_that_does_not_fit_the_pixels_is_dropped(tmp_path, shared_photos, caplog):
    gray = images.decode(shared_photos / "camera.png", LIMIT)
    rgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    gray.icc_profile = rgb_profile
    with caplog.at_level(logging.WARNING, logger="infer.images"):
        images.encode(gray, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L" and "icc_profile" not in im.info
    assert "colour profile" in caplog.text


# ----------------------------------------------------------------------------- pixel modes


def _alpha_crop(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    return np.dstack([crop, alpha])


def test_rgba_alpha_is_preserved(tmp_path, crop):
    rgba = _alpha_crop(crop)
    path = tmp_path / "in.png"
    Image.fromarray(rgba, "RGBA").save(path)
    decoded = images.decode(path, LIMIT)
    assert np.array_equal(decoded.alpha, rgba[..., 3])
    assert np.array_equal(_bgr_to_rgb(decoded), crop)
    for ext in ("png", "webp"):
        out = tmp_path / f"out.{ext}"
        images.encode(decoded, out)
        with Image.open(out) as im:
            assert im.mode == "RGBA"
            assert np.array_equal(np.asarray(im)[..., 3], rgba[..., 3]), ext


def test_jpeg_output_flattens_alpha_onto_white_and_says_so(tmp_path, crop, caplog):
    rgba = _alpha_crop(crop)
    decoded = DecodedImage(bgr=np.ascontiguousarray(crop[..., ::-1]), alpha=rgba[..., 3].copy())
    out = tmp_path / "out.jpg"
    with caplog.at_level(logging.WARNING, logger="infer.images"):
        images.encode(decoded, out, quality=100)
    assert "white" in caplog.text and ".png" in caplog.text
    written = _rgb(out).astype(int)
    assert np.abs(written[:, 0] - 255).max() <= 3  # alpha 0: white
    assert np.abs(written[:, -1] - crop[:, -1]).mean() <= 3  # alpha 255: the photo


def test_opaque_alpha_to_jpeg_is_not_reported(tmp_path, crop, caplog):
    decoded = DecodedImage(bgr=np.ascontiguousarray(crop[..., ::-1]), alpha=np.full(crop.shape[:2], 255, np.uint8))
    with caplog.at_level(logging.WARNING, logger="infer.images"):
        images.encode(decoded, tmp_path / "out.jpg")
    assert caplog.text == ""


def test_grayscale_stays_grayscale(tmp_path, shared_photos):
    decoded = images.decode(shared_photos / "camera.png", LIMIT)
    assert decoded.grayscale and decoded.alpha is None
    assert np.array_equal(decoded.bgr[..., 0], decoded.bgr[..., 2])
    assert np.array_equal(decoded.bgr[..., 0], np.asarray(Image.open(shared_photos / "camera.png")))
    for ext in ("png", "jpg"):
        out = tmp_path / f"out.{ext}"
        images.encode(decoded, out)
        with Image.open(out) as im:
            assert im.mode == "L", ext
        assert images.decode(out, LIMIT).grayscale


def test_grayscale_with_alpha_is_written_as_la(tmp_path, crop):
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    alpha = _alpha_crop(crop)[..., 3]
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(path)
    decoded = images.decode(path, LIMIT)
    assert decoded.grayscale and np.array_equal(decoded.alpha, alpha)
    images.encode(decoded, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "LA"
        assert np.array_equal(np.asarray(im), np.dstack([gray, alpha]))


def test_palette_png_with_transparent_index(tmp_path):
    pal = Image.new("P", (6, 4), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (3, 0, 6, 4))
    path = tmp_path / "pal.png"
    pal.save(path, transparency=0)
    decoded = images.decode(path, LIMIT)
    assert not decoded.grayscale
    assert np.array_equal(decoded.alpha[:, :3], np.zeros((4, 3), np.uint8))
    assert np.array_equal(decoded.alpha[:, 3:], np.full((4, 3), 255, np.uint8))
    assert tuple(decoded.bgr[0, 5]) == (255, 0, 0)  # blue, in BGR order


def test_gif_transparency_becomes_alpha(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.paste(0, (0, 0, 2, 4))
    path = tmp_path / "t.gif"
    im.save(path, transparency=0)
    decoded = images.decode(path, LIMIT)
    assert decoded.alpha is not None
    assert decoded.alpha[:, :2].max() == 0 and decoded.alpha[:, 2:].min() == 255
    assert tuple(_bgr_to_rgb(decoded)[0, 3]) == (10, 200, 30)


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 255, 256, 32896, 65280, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    decoded = images.decode(path, LIMIT)
    assert decoded.grayscale
    assert decoded.bgr[0, :, 0].tolist() == [0, 0, 1, 128, 255, 255]


def test_48_bit_rgb_png_is_scaled_not_clipped(tmp_path):
    samples = np.array([[[0, 257, 65535], [32896, 1000, 40000]]], dtype=">u2")
    path = tmp_path / "deep_rgb.png"
    path.write_bytes(_png(2, 1, 16, 2, b"".join(b"\x00" + row.tobytes() for row in samples)))
    decoded = images.decode(path, LIMIT)
    assert _bgr_to_rgb(decoded).tolist() == [[[0, 1, 255], [128, 3, 156]]]


def test_bilevel_image_is_grayscale(tmp_path):
    bits = Image.new("1", (9, 3), 0)
    bits.paste(1, (0, 0, 4, 3))
    path = tmp_path / "fax.png"
    bits.save(path)
    decoded = images.decode(path, LIMIT)
    assert decoded.grayscale
    assert decoded.bgr[:, :4].min() == 255 and decoded.bgr[:, 4:].max() == 0


def test_32_bit_integer_and_float_tiffs_are_scaled(tmp_path):
    ints = np.array([[0, 257, 65535]], dtype=np.int32)
    Image.fromarray(ints, "I").save(tmp_path / "i.tif")
    assert images.decode(tmp_path / "i.tif", LIMIT).bgr[0, :, 0].tolist() == [0, 1, 255]
    floats = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    assert images.decode(tmp_path / "f.tif", LIMIT).bgr[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32)  # no nominal range: stretched, not clipped
    Image.fromarray(wide, "F").save(tmp_path / "w.tif")
    decoded = images.decode(tmp_path / "w.tif", LIMIT)
    assert decoded.grayscale and decoded.bgr[0, :, 0].tolist() == [0, 128, 255]


def test_rgb_png_with_transparent_colour(tmp_path, crop):
    path = tmp_path / "key.png"
    keyed = crop.copy()
    keyed[:5] = (1, 2, 3)
    Image.fromarray(keyed).save(path, transparency=(1, 2, 3))
    decoded = images.decode(path, LIMIT)
    assert decoded.alpha is not None
    assert decoded.alpha[:5].max() == 0 and decoded.alpha[5:].min() == 255


def test_lab_tiff_is_converted_to_rgb(tmp_path, crop):
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    ImageCms.applyTransform(Image.fromarray(crop), to_lab).save(tmp_path / "lab.tif")
    with Image.open(tmp_path / "lab.tif") as im:
        assert im.mode == "LAB"
    decoded = images.decode(tmp_path / "lab.tif", LIMIT)
    assert np.abs(_bgr_to_rgb(decoded).astype(int) - crop).mean() < 3


def test_animated_webp_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    decoded = images.decode(path, LIMIT)
    assert tuple(_bgr_to_rgb(decoded)[4, 4]) == (250, 10, 10)


def test_cmyk_jpeg_gets_sensible_rgb(tmp_path, crop):
    path = tmp_path / "print.jpg"
    Image.fromarray(crop).convert("CMYK").save(path, quality=98)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    decoded = images.decode(path, LIMIT)
    assert decoded.bgr.shape == (40, 48, 3)
    assert np.abs(_bgr_to_rgb(decoded).astype(int) - crop).mean() < 4


def test_cmyk_profile_never_travels_to_the_rgb_result(tmp_path, crop, caplog):
    # No CMYK profile can be generated here; an RGB profile in a CMYK file exercises the same rule (the
    # profile cannot be applied, so the plain conversion is used) and the fallback path.
    rgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "print.jpg"
    Image.fromarray(crop).convert("CMYK").save(path, quality=98, icc_profile=rgb_profile)
    with Image.open(path) as im:
        assert im.mode == "CMYK" and im.info["icc_profile"] == rgb_profile
    with caplog.at_level(logging.WARNING, logger="infer.images"):
        decoded = images.decode(path, LIMIT)
    assert decoded.icc_profile is None
    assert "CMYK colour profile" in caplog.text
    assert np.abs(_bgr_to_rgb(decoded).astype(int) - crop).mean() < 4


# ----------------------------------------------------------------------------- pixel limit


def test_pixel_limit_boundary(tmp_path, crop):
    path = tmp_path / "p.png"
    Image.fromarray(crop).save(path)
    assert images.decode(path, 48 * 40).bgr.shape == (40, 48, 3)
    with pytest.raises(TooLargeError) as err:
        images.decode(path, 48 * 40 - 1)
    message = err.value.message
    assert "48x40" in message and "1919 pixels" in message and "SR_MAX_PIXELS" in message
    assert err.value.exit_code == 4


def _bomb(path: Path) -> Path:
    """A 1 KB PNG whose header declares 50000 x 50000 pixels."""
    path.write_bytes(_png(50000, 50000, 8, 2, b"\x00" * 1000))
    return path


def test_bomb_is_refused_from_the_header_quickly(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2000
    assert images.probe(bomb) == (50000, 50000, "PNG")
    t = time.perf_counter()
    with pytest.raises(TooLargeError, match="50000x50000"):
        images.decode(bomb, LIMIT)
    assert time.perf_counter() - t < 0.5


def test_bomb_is_refused_without_allocating_pixels(tmp_path):
    """Under a 1 GiB address-space cap, decoding the 7.5 GB bomb could only end in TooLargeError."""
    bomb = _bomb(tmp_path / "bomb.png")
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from infer import images
        from infer.errors import TooLargeError
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        try:
            images.decode({str(bomb)!r}, 10**12)  # a limit that lets it through to the decoder
        except MemoryError:
            print("decoder allocated")
        except Exception as exc:
            print(type(exc).__name__)
        try:
            images.decode({str(bomb)!r}, 16_000_000)
        except TooLargeError:
            print("refused")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = result.stdout.split()
    # The control run proves the cap bites when pixels are really allocated.
    assert lines[0] in ("decoder allocated", "OutOfMemoryError"), result.stdout + result.stderr
    assert lines[-1] == "refused", result.stdout + result.stderr


def test_pillow_bomb_limit_never_preempts_ours(tmp_path, crop, monkeypatch):
    path = tmp_path / "p.png"
    Image.fromarray(crop).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 48x40 is over twice Pillow's limit now
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert images.decode(path, LIMIT).bgr.shape == (40, 48, 3)
        assert images.probe(path) == (48, 40, "PNG")
    assert Image.MAX_IMAGE_PIXELS == 100  # restored afterwards
    with pytest.raises(TooLargeError):
        images.decode(path, 50)


# ----------------------------------------------------------------------------- unreadable input


def _valid_bytes(fmt: str, crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format=fmt)
    return buf.getvalue()


def _bad_png_crc(crop: np.ndarray, chunk: bytes) -> bytes:
    data = bytearray(_valid_bytes("PNG", crop))
    at = data.index(chunk)
    length = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4 + length] ^= 0xFF  # first CRC byte
    return bytes(data)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.txt", "not a photo")
    return buf.getvalue()


BAD_FILES = {
    "truncated.jpg": lambda c: _valid_bytes("JPEG", c)[: len(_valid_bytes("JPEG", c)) // 2],
    "truncated.png": lambda c: _valid_bytes("PNG", c)[: len(_valid_bytes("PNG", c)) // 2],
    "truncated_end.png": lambda c: _valid_bytes("PNG", c)[:-20],
    "truncated.webp": lambda c: _valid_bytes("WEBP", c)[:-40],
    "truncated.gif": lambda c: _valid_bytes("GIF", c)[: len(_valid_bytes("GIF", c)) // 2],
    "truncated.bmp": lambda c: _valid_bytes("BMP", c)[:-100],
    "truncated.tif": lambda c: _valid_bytes("TIFF", c)[:-100],
    "bad_idat_crc.png": lambda c: _bad_png_crc(c, b"IDAT"),
    "bad_ihdr_crc.png": lambda c: _bad_png_crc(c, b"IHDR"),
    "random.jpg": lambda c: np.random.default_rng(1).bytes(4096),
    "page.png": lambda c: b"<!DOCTYPE html><html><body><img src=x></body></html>",
    "drawing.png": lambda c: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
    "doc.jpg": lambda c: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
    "archive.jpg": lambda c: _zip_bytes(),
    "empty.png": lambda c: b"",
    "ico.png": lambda c: _valid_bytes("ICO", c),  # a real image, but not an accepted format
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_are_refused_clearly(tmp_path, crop, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name](crop))
    with pytest.raises(InputError, match=NOT_READABLE) as err:
        images.decode(path, LIMIT)
    assert err.value.exit_code == 3


@pytest.mark.parametrize("name", ["page.png", "random.jpg", "empty.png", "archive.jpg"])
def test_probe_refuses_non_images(tmp_path, crop, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name](crop))
    with pytest.raises(InputError, match=NOT_READABLE):
        images.probe(path)


def test_missing_file_and_folder_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        images.decode(tmp_path / "nope.jpg", LIMIT)
    with pytest.raises(InputError, match="folder"):
        images.decode(tmp_path, LIMIT)


# ----------------------------------------------------------------------------- atomic writes


@pytest.fixture()
def small(crop) -> DecodedImage:
    return DecodedImage(bgr=np.ascontiguousarray(crop[..., ::-1]))


def test_missing_folder_is_an_output_error(tmp_path, small):
    out = tmp_path / "missing" / "out.png"
    with pytest.raises(OutputError, match=r"cannot write .*out\.png: .*check the folder exists and is writable") as err:
        images.encode(small, out)
    assert err.value.exit_code == 7
    assert not (tmp_path / "missing").exists()


def test_parent_that_is_a_file_is_an_output_error(tmp_path, small):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        images.encode(small, tmp_path / "file" / "out.png")


def test_destination_that_is_a_folder_leaves_no_temp_file(tmp_path, small):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(OutputError):
        images.encode(small, tmp_path / "out.png")
    assert _temp_leftovers(tmp_path) == []
    assert (tmp_path / "out.png").is_dir()


def test_full_disk_leaves_neither_temp_nor_destination(tmp_path, shared_photos):
    """A real write failure (file-size limit: EFBIG, as on a full disk) in the middle of an encode."""
    out = tmp_path / "out.png"
    old = tmp_path / "old.png"
    old.write_bytes(b"previous result")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from infer import images
        from infer.errors import OutputError
        image = images.decode({str(shared_photos / "astronaut.png")!r}, 10**8)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        for target in ({str(out)!r}, {str(old)!r}):
            try:
                images.encode(image, target)
                print("written")
            except OutputError as exc:
                print("OutputError", exc.exit_code, exc.message)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("OutputError 7 cannot write") for line in lines), (
        result.stdout + result.stderr)
    assert not out.exists()
    assert old.read_bytes() == b"previous result"  # the previous file is untouched
    assert _temp_leftovers(tmp_path) == []


def test_interrupted_encode_leaves_no_files(tmp_path, small, monkeypatch):
    """Ctrl-C (or any exception) inside the encoder: the temp file goes, nothing reaches the destination."""
    seen: list[str] = []

    def interrupted_save(self, fp, *args, **kwargs):
        fp.write(b"partial data")
        seen.extend(_temp_leftovers(tmp_path))
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        images.encode(small, tmp_path / "out.jpg")
    assert len(seen) == 1  # the temp file existed beside the destination while writing
    assert os.listdir(tmp_path) == []


def test_replaces_existing_file_and_follows_umask(tmp_path, small):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    images.encode(small, out)
    with Image.open(out) as im:
        assert im.size == (48, 40)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.png"]


def test_webp_side_limit_is_an_output_error(tmp_path):
    tall = DecodedImage(bgr=np.zeros((16384, 1, 3), np.uint8))
    with pytest.raises(OutputError, match=r"\.png"):
        images.encode(tall, tmp_path / "out.webp")
    assert os.listdir(tmp_path) == []


def test_bad_pixel_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError):
        images.encode(DecodedImage(bgr=np.zeros((4, 4, 3), np.float32)), tmp_path / "a.png")
    with pytest.raises(ValueError):
        images.encode(DecodedImage(bgr=np.zeros((4, 4, 3), np.uint8), alpha=np.zeros((3, 4), np.uint8)),
                      tmp_path / "a.png")
    assert os.listdir(tmp_path) == []
