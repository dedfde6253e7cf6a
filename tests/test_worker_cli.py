"""The real worker process: results equal OpenCV's dnn_superres, events, exit codes, metadata, atomic output."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from infer import REPO_ROOT
from tests.helpers import WORKER, auto_precision_on_cpu, run_worker
from tests.reliability.inputs import header_over_no_pixels



def dnn_superres(model: Path, algo: str, scale: int, bgr: np.ndarray) -> np.ndarray:
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(model))
    sr.setModel(algo, scale)
    return sr.upsample(bgr)


def assert_no_leftovers(folder: Path, allowed: set[str]) -> None:
    names = {p.name for p in folder.iterdir()}
    assert names <= allowed, f"unexpected files left behind: {sorted(names - allowed)}"


# --- results ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", ["0", "16"])
def test_fsrcnn_x3_equals_dnn_superres(shared_models: Path, photo: Path, tmp_path: Path, tile: str):
    model = shared_models / "FSRCNN_x3.pb"
    out = tmp_path / "out.png"
    code, events, err = run_worker("--input", photo, "--output", out, "--model", model, "--tile", tile, "--tile-pad", "12")
    assert code == 0, err
    got = cv2.imread(str(out))
    ref = dnn_superres(model, "fsrcnn", 3, cv2.imread(str(photo)))
    assert got.shape == (120, 168, 3)
    assert np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("variant", ["edsr_model", "edsr_model_plain"])
@pytest.mark.parametrize("tile", ["0", "16"])
def test_edsr_fixture_equals_dnn_superres(request, photo: Path, tmp_path: Path, variant: str, tile: str):
    model = request.getfixturevalue(variant)
    out = tmp_path / "out.png"
    # 7 stacked 3x3 convolutions: a context of 8 pixels covers the whole receptive field.
    # fp32 is the exact path (the default engine, torch, in full precision).
    code, events, err = run_worker("--input", photo, "--output", out, "--model", model, "--tile", tile, "--tile-pad", "8",
                                   "--precision", "fp32")
    assert code == 0, err
    got = cv2.imread(str(out))
    ref = dnn_superres(model, "edsr", 3, cv2.imread(str(photo)))
    assert got.shape == ref.shape == (120, 168, 3)
    assert np.abs(got.astype(int) - ref).max() <= 1
    # and the fixture behaves like an image upscaler, not noise
    nearest = cv2.resize(cv2.imread(str(photo)), None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
    assert np.abs(got.astype(int) - nearest).mean() < 20


def test_luma_model_chroma_is_seamless_even_without_pad(shared_models: Path, photo: Path, tmp_path: Path):
    model = shared_models / "ESPCN_x3.pb"
    out = tmp_path / "out.png"
    code, _, err = run_worker("--input", photo, "--output", out, "--model", model, "--tile", "8", "--tile-pad", "0")
    assert code == 0, err
    got = cv2.imread(str(out))
    ref = dnn_superres(model, "espcn", 3, cv2.imread(str(photo)))
    # Y may show seams with no context (that is what tile-pad is for); Cr/Cb must not.
    got_c = cv2.cvtColor(got, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(int)
    ref_c = cv2.cvtColor(ref, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(int)
    assert np.abs(got_c - ref_c).max() <= 2


# --- the event stream ------------------------------------------------------------------------


def test_event_stream(edsr_model: Path, photo: Path, tmp_path: Path):
    out = tmp_path / "out.webp"
    code, events, err = run_worker("--input", photo, "--output", out, "--model", edsr_model, "--tile", "16")
    assert code == 0, err
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"progress"}
    start, done = events[0], events[-1]
    assert start["algo"] == "edsr" and start["scale"] == 3 and start["engine"] == "torch" and start["device"] == "cpu"
    assert start["precision"] == done["precision"] == auto_precision_on_cpu(done)
    assert (start["width"], start["height"]) == (56, 40)
    total = start["tiles"]
    # One event as each tile is done; one within a tile only where a tile takes a second or more (a stalled machine).
    whole = sorted({(e["done"], e["total"]) for e in events[1:-1] if e["done"] > 0})
    assert whole == [(i, total) for i in range(1, total + 1)] and total == 4 * 3
    fractions = [e["fraction"] for e in events[1:-1]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert done["output"] == str(out) and (done["width"], done["height"]) == (168, 120)
    assert set(done["seconds"]) >= {"decode", "load", "infer", "encode", "total"}
    assert done["peak_rss_mb"] > 10 and done["tile"] == 16
    assert Image.open(out).format == "WEBP"
    assert "no CUDA GPU found" in start.get("note", "")


def test_model_from_environment_and_module_entry_point(edsr_model: Path, photo: Path, tmp_path: Path):
    out = tmp_path / "out.png"
    run = run_worker("--input", photo, "--output", out, env={"SR_MODEL_PATH": str(edsr_model)},
                     python_args=("-m", "infer.sr_infer"))
    assert run.exit_code == 0, run.stderr
    assert run.last["event"] == "done"
    assert Image.open(out).size == (168, 120)


# --- exit codes ------------------------------------------------------------------------------


def expect_error(code: int, events: list[dict], exit_code: int, words: str) -> dict:
    assert code == exit_code, events
    assert events and events[-1]["event"] == "error"
    assert [e["event"] for e in events].count("error") == 1
    assert words.lower() in events[-1]["message"].lower(), events[-1]["message"]
    return events[-1]


def test_exit_2_usage(edsr_model: Path, photo: Path, tmp_path: Path):
    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model, "--tile", "-3")
    expect_error(code, events, 2, "--tile")
    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "o.gif", "--model", edsr_model)
    expect_error(code, events, 2, "png")
    code, events, _ = run_worker("--output", tmp_path / "o.png")
    expect_error(code, events, 2, "--input")
    assert_no_leftovers(tmp_path, set())


def test_exit_3_not_an_image(edsr_model: Path, tmp_path: Path):
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    code, events, _ = run_worker("--input", bad, "--output", tmp_path / "o.png", "--model", edsr_model)
    expect_error(code, events, 3, "not a readable")
    code, events, _ = run_worker("--input", tmp_path / "missing.png", "--output", tmp_path / "o.png", "--model", edsr_model)
    expect_error(code, events, 3, "missing.png")
    assert_no_leftovers(tmp_path, {"holiday.jpg"})


def test_exit_3_a_large_header_over_almost_no_pixel_data(shared_models: Path, tmp_path: Path):
    """Under 1 kB saying 4000x3000: refused as damaged, never upscaled from the grey the decoder would fill in."""
    hollow = tmp_path / "hollow.jpg"
    hollow.write_bytes(header_over_no_pixels(4000, 3000))
    assert Image.open(hollow).size == (4000, 3000) and hollow.stat().st_size < 1000
    started = time.monotonic()
    code, events, err = run_worker("--input", hollow, "--output", tmp_path / "o.png", "--model",
                                   shared_models / "FSRCNN_x3.pb")
    error = expect_error(code, events, 3, "damaged or incomplete")
    assert "upload it again" in error["message"] and [e["event"] for e in events] == ["error"]
    assert "premature end of data segment" in err  # libjpeg's own words, for the operator
    assert time.monotonic() - started < 20
    assert_no_leftovers(tmp_path, {"hollow.jpg"})


def test_exit_4_over_the_pixel_limit(edsr_model: Path, photo: Path, tmp_path: Path):
    out = tmp_path / "o.png"
    code, events, _ = run_worker("--input", photo, "--output", out, "--model", edsr_model, "--max-pixels", "2000")
    err = expect_error(code, events, 4, "pixels")
    assert "56x40" in err["message"] and "SR_MAX_PIXELS" in err["message"]
    code, events, _ = run_worker("--input", photo, "--output", out, "--model", edsr_model, env={"SR_MAX_PIXELS": "2239"})
    expect_error(code, events, 4, "pixels")
    code, events, _ = run_worker("--input", photo, "--output", out, "--model", edsr_model, env={"SR_MAX_PIXELS": "2240"})
    assert code == 0
    # a decompression bomb: a tiny PNG whose header claims 50000 x 50000
    bomb = tmp_path / "bomb.png"
    _write_bomb_png(bomb, 50000, 50000)
    t0 = time.monotonic()
    code, events, _ = run_worker("--input", bomb, "--output", tmp_path / "b.png", "--model", edsr_model)
    expect_error(code, events, 4, "pixels")
    assert time.monotonic() - t0 < 20


def _write_bomb_png(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def test_exit_5_model_missing_or_invalid(photo: Path, tmp_path: Path):
    out = tmp_path / "o.png"
    code, events, _ = run_worker("--input", photo, "--output", out, "--model", tmp_path / "EDSR_x3.pb")
    expect_error(code, events, 5, "sr-models fetch EDSR_x3")
    corrupt = tmp_path / "models" / "EDSR_x3.pb"
    corrupt.parent.mkdir()
    corrupt.write_bytes(np.random.default_rng(2).bytes(10000))
    code, events, _ = run_worker("--input", photo, "--output", out, "--model", corrupt)
    expect_error(code, events, 5, "EDSR_x3")
    code, events, _ = run_worker("--input", photo, "--output", out, "--model", tmp_path / "weights.bin")
    expect_error(code, events, 5, "--algo")
    assert not out.exists()


def _address_space_after_imports() -> int:
    """The virtual memory of a process that has imported what the worker imports, in bytes."""
    probe = ("import cv2, numpy, infer.sr_infer\n"
             "try:\n    import torch, infer.engines.torch; torch.zeros(1)\nexcept ImportError:\n    pass\n"
             "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) * 1024


def test_exit_6_out_of_memory(edsr_model: Path, tmp_path: Path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)).save(big, compress_level=0)
    out = tmp_path / "o.png"
    # Room for the interpreter and libraries (measured: a CUDA build of PyTorch maps some 3 GB more than a
    # CPU build), not for the 4500x4500 result and the smallest windows' activations beside it: 40 and 120 MB
    # more gave exit 6, 200 MB let the window halve to 274 pixels and the job finish.
    limit = _address_space_after_imports() + 80 * 2**20

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    code, events, err = run_worker(
        "--input", big, "--output", out, "--model", edsr_model, "--tile", "0",
        env={"OPENCV_FOR_THREADS_NUM": "1", "OMP_NUM_THREADS": "1"}, preexec_fn=cap_memory,
    )
    expect_error(code, events, 6, "memory")
    assert_no_leftovers(tmp_path, {"big.png"})


def test_exit_7_output_not_writable(edsr_model: Path, photo: Path, tmp_path: Path):
    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "nowhere" / "o.png", "--model", edsr_model)
    expect_error(code, events, 7, "does not exist")
    # /proc accepts no new files, even from root: the failure comes at the final write
    code, events, _ = run_worker("--input", photo, "--output", "/proc/sr_out.png", "--model", edsr_model)
    expect_error(code, events, 7, "cannot write")


def test_exit_1_cancelled_mid_job_leaves_nothing(edsr_model: Path, shared_photos: Path, tmp_path: Path):
    src = tmp_path / "in.png"
    Image.open(shared_photos / "astronaut.png").convert("RGB").save(src)
    out = tmp_path / "o.png"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "--input", str(src), "--output", str(out), "--model", str(edsr_model), "--tile", "32"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    events = [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 1
    assert events[-1]["event"] == "error" and "cancelled" in events[-1]["message"]
    assert_no_leftovers(tmp_path, {"in.png"})


def test_a_reduced_scale_never_holds_the_models_full_size_output(shared_models: Path, shared_photos: Path,
                                                                  tmp_path: Path):
    """ESPCN x4 writing 2x: the worker's peak RSS grows with the photo by less than the x4 image alone would take
    (holding it, as reducing the whole image does, grows it by that plus the 2x result)."""
    coffee = cv2.imread(str(shared_photos / "coffee.png"))
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    cv2.imwrite(str(small), coffee[:288, :288])  # a whole tile with its context: the engine's buffers at full size
    cv2.imwrite(str(big), cv2.resize(coffee, (1800, 1200), interpolation=cv2.INTER_CUBIC))
    peaks = {}
    for src in (small, big):
        code, events, err = run_worker("--input", src, "--output", tmp_path / f"{src.stem}_x2.png", "--model",
                                       shared_models / "ESPCN_x4.pb", "--outscale", "2", "--tile", "256",
                                       "--engine", "opencv")
        assert code == 0, err
        assert events[0]["ran"] == "ESPCN x4, reduced to 2x"
        peaks[src.stem] = events[-1]["peak_rss_mb"]
    full_size_mb = 1800 * 4 * 1200 * 4 * 3 / 2**20
    assert peaks["big"] - peaks["small"] < full_size_mb, (peaks, full_size_mb)
    assert Image.open(tmp_path / "big_x2.png").size == (3600, 2400)


# --- image handling end to end ---------------------------------------------------------------


def test_exif_orientation_and_metadata_carry_over(edsr_model: Path, photo: Path, tmp_path: Path):
    src = tmp_path / "phone.jpg"
    im = Image.open(photo).convert("RGB")  # 56 x 40
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x013B] = "Grandma"  # Artist
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(src, exif=exif.tobytes(), icc_profile=icc, quality=95)
    out = tmp_path / "phone_x3.jpg"
    code, events, err = run_worker("--input", src, "--output", out, "--model", edsr_model)
    assert code == 0, err
    res = Image.open(out)
    assert res.size == (120, 168)  # displayed upright: 40 x 56, times 3
    assert res.getexif().get(0x0112, 1) == 1
    assert res.getexif().get(0x013B) == "Grandma"
    assert res.info.get("icc_profile") == icc


def test_alpha_is_kept(edsr_model: Path, shared_photos: Path, tmp_path: Path):
    src = tmp_path / "logo.png"
    Image.open(shared_photos / "logo.png").convert("RGBA").resize((48, 48)).save(src)
    out = tmp_path / "logo_x3.png"
    code, _, err = run_worker("--input", src, "--output", out, "--model", edsr_model)
    assert code == 0, err
    res = Image.open(out)
    assert res.mode == "RGBA" and res.size == (144, 144)
    alpha_in = np.asarray(Image.open(src))[:, :, 3]
    expected = cv2.resize(alpha_in, (144, 144), interpolation=cv2.INTER_CUBIC)
    assert np.abs(np.asarray(res)[:, :, 3].astype(int) - expected).max() <= 1


def test_grayscale_stays_grayscale(shared_models: Path, shared_photos: Path, tmp_path: Path):
    src = tmp_path / "camera.png"
    Image.open(shared_photos / "camera.png").crop((200, 100, 260, 150)).save(src)
    out = tmp_path / "camera_x3.png"
    code, _, err = run_worker("--input", src, "--output", out, "--model", shared_models / "FSRCNN_x3.pb")
    assert code == 0, err
    res = Image.open(out)
    assert res.mode == "L" and res.size == (180, 150)


def test_failed_job_keeps_an_existing_output_untouched(edsr_model: Path, tmp_path: Path):
    out = tmp_path / "o.png"
    out.write_bytes(b"previous result")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(3).bytes(100))
    code, events, _ = run_worker("--input", bad, "--output", out, "--model", edsr_model)
    assert code == 3
    assert out.read_bytes() == b"previous result"
    assert_no_leftovers(tmp_path, {"o.png", "bad.png"})


def test_result_too_large_for_webp_is_refused_before_any_work(edsr_model: Path, tmp_path: Path):
    src = tmp_path / "wide.png"
    Image.new("RGB", (5500, 2), "gray").save(src)  # x3 = 16500 pixels wide; WebP stops at 16383
    code, events, _ = run_worker("--input", src, "--output", tmp_path / "o.webp", "--model", edsr_model)
    expect_error(code, events, 7, "write .png instead")
    assert [e["event"] for e in events] == ["error"]
