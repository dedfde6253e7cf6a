"""The precision policy (auto, fp32, bf16, fp16 on each device) and the fp32 rerun of tiles that overflow."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from infer.errors import UsageError
from infer.families import FAMILIES
from infer.precision import Precision, choose, cpu_flags, cpu_has_native_bf16
from tests.helpers import auto_precision_on_cpu, psnr, read, run_worker

ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx512f amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd aes crc32 atomics\n"


@pytest.mark.parametrize(
    "cpuinfo,native",
    [(ZEN5, True), (SKYLAKE, False), (SAPPHIRE, True), (GRAVITON3, True), (GRAVITON2, False), ("", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo: str, native: bool):
    assert cpu_has_native_bf16(cpu_flags(cpuinfo)) is native


def test_auto_precision_on_each_device():
    edsr, luma = FAMILIES["edsr"].auto_half, FAMILIES["fsrcnn"].auto_half
    assert choose("auto", "cpu", native_bf16=True, auto_half=edsr) is Precision.BF16
    assert choose("auto", "cpu", native_bf16=False, auto_half=edsr) is Precision.FP32
    assert choose("auto", "cuda", native_bf16=True, auto_half=edsr) is Precision.BF16  # Ampere and later
    assert choose("auto", "cuda", native_bf16=False, auto_half=edsr) is Precision.FP16  # Volta, Turing
    # Y in 0..1 loses grey levels to bf16's short mantissa: luma families get fp16 or fp32
    assert choose("auto", "cpu", native_bf16=True, auto_half=luma) is Precision.FP32
    assert choose("auto", "cuda", native_bf16=True, auto_half=luma) is Precision.FP16
    # an engine without half precision always gets fp32 from auto, and refuses it when asked
    assert choose("auto", "cpu", native_bf16=True, supported=(Precision.FP32,)) is Precision.FP32
    with pytest.raises(UsageError, match="runs fp32, not bf16"):
        choose("bf16", "cpu", native_bf16=True, supported=(Precision.FP32,), engine="OpenCV's engine")
    assert choose("fp16", "cpu", native_bf16=False) is Precision.FP16
    with pytest.raises(UsageError, match="--precision must be one of"):
        choose("int8", "cpu", native_bf16=True)


def test_default_worker_runs_torch_in_the_measured_precision(edsr_model: Path, photo: Path, tmp_path: Path):
    env = {"SR_CACHE_DIR": str(tmp_path / "cache")}
    code, events, err = run_worker("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model, env=env)
    assert code == 0, err
    done = events[-1]
    assert done["engine"] == "torch" and done["device"] == "cpu"
    assert done["precision"] == auto_precision_on_cpu(done)
    assert done["precision_fallbacks"] == 0
    if not cpu_has_native_bf16():
        # Emulated bf16 is never worth a probe.
        assert "cpu_rates" not in done and not (tmp_path / "cache").exists()
        return
    first = done["cpu_rates"]
    assert first["cached"] is False and first["fp32_gflops"] > 1 and first["bf16_gflops"] > 1
    kept = json.loads((tmp_path / "cache" / "cpu-rates.json").read_text())
    (key, entry), = kept.items()
    assert "torch" in key and "threads" in key
    assert (entry["fp32_gflops"], entry["bf16_gflops"]) == (first["fp32_gflops"], first["bf16_gflops"])

    code, events, err = run_worker("--input", photo, "--output", tmp_path / "o2.png", "--model", edsr_model, env=env)
    assert code == 0, err
    assert events[-1]["cpu_rates"] == {**first, "cached": True}


def _with_rates(cache: Path, fp32: float, bf16: float) -> None:
    """The cache as if this machine had measured these rates (its key copied from a real run's)."""
    path = cache / "cpu-rates.json"
    (key,) = json.loads(path.read_text())
    path.write_text(json.dumps({key: {"fp32_gflops": fp32, "bf16_gflops": bf16}}))


def test_auto_follows_the_measured_rates_not_the_flag(edsr_model: Path, photo: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    env = {"SR_CACHE_DIR": str(cache)}
    args = ("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model)
    first = run_worker(*args, env=env)  # measures and keeps this machine's key
    assert first.exit_code == 0, first.stderr
    if not cpu_has_native_bf16():
        assert first.last["precision"] == "fp32" and not cache.exists()
        return
    # bf16 well ahead, behind, within the probe's spread, and a cache that says nothing was measured.
    for (fp32, bf16), expected in (((100.0, 250.0), "bf16"), ((250.0, 150.0), "fp32"), ((100.0, 110.0), "fp32"),
                                   ((0.0, 0.0), "fp32")):
        _with_rates(cache, fp32, bf16)
        done = run_worker(*args, env=env).last
        assert done["precision"] == expected and done["cpu_rates"]["cached"] is True, (fp32, bf16, done)
    # Asked for, bf16 runs whatever was measured.
    _with_rates(cache, 250.0, 150.0)
    assert run_worker(*args, "--precision", "bf16", env=env).last["precision"] == "bf16"


def test_another_machines_rates_in_the_cache_are_not_used(edsr_model: Path, photo: Path, tmp_path: Path):
    """A cache folder shared between machines (a home folder on NFS) keeps each machine's rates under its own key."""
    cache = tmp_path / "cache"
    cache.mkdir()
    other = "Other CPU | flags 000000000000 | torch 0.0 | 2 threads"
    (cache / "cpu-rates.json").write_text(json.dumps({other: {"fp32_gflops": 100.0, "bf16_gflops": 250.0}}))
    run = run_worker("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model,
                     env={"SR_CACHE_DIR": str(cache)})
    assert run.exit_code == 0, run.stderr
    if not cpu_has_native_bf16():
        assert run.last["precision"] == "fp32" and "cpu_rates" not in run.last
        return
    assert run.last["cpu_rates"]["cached"] is False  # measured here, not read from the other machine
    assert run.last["precision"] == auto_precision_on_cpu(run.last)
    kept = json.loads((cache / "cpu-rates.json").read_text())
    assert len(kept) == 2 and kept[other] == {"fp32_gflops": 100.0, "bf16_gflops": 250.0}


def test_an_unreadable_or_unwritable_cache_costs_only_the_probe(edsr_model: Path, photo: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cpu-rates.json").write_text("{not json")
    args = ("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model)
    run = run_worker(*args, env={"SR_CACHE_DIR": str(cache)})
    assert run.exit_code == 0, run.stderr
    if cpu_has_native_bf16():
        assert run.last["cpu_rates"]["cached"] is False
        assert json.loads((cache / "cpu-rates.json").read_text())  # measured again and rewritten whole
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    run = run_worker(*args, env={"SR_CACHE_DIR": str(blocked / "cache")})
    assert run.exit_code == 0, run.stderr
    assert run.last["precision"] == auto_precision_on_cpu(run.last)
    if cpu_has_native_bf16():
        assert "cannot keep the CPU's measured rates" in run.stderr
    assert not list(cache.glob(".cpu-rates-*"))  # no temporary file left


def test_opencv_refuses_half_precision_on_the_cpu(edsr_model: Path, photo: Path, tmp_path: Path):
    code, events, _ = run_worker("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model,
                                 "--engine", "opencv", "--precision", "bf16")
    assert code == 2 and events[-1]["code"] == "usage"
    assert "runs fp32, not bf16" in events[-1]["message"]
    assert not (tmp_path / "o.png").exists()


def _bright_and_dark(path: Path) -> Path:
    """Left half dark (its features stay inside fp16's range), right half bright (they overflow)."""
    rng = np.random.default_rng(4)
    img = np.empty((48, 96, 3), np.uint8)
    img[:, :48] = rng.integers(20, 60, (48, 48, 3))
    img[:, 48:] = rng.integers(235, 256, (48, 48, 3))
    cv2.imwrite(str(path), img)
    return path


def test_overflowing_tiles_are_run_again_in_fp32(edsr_model_fp16_overflow: Path, tmp_path: Path):
    photo = _bright_and_dark(tmp_path / "in.png")
    # No context pad, so that the dark tile's window holds no bright pixel.
    common = ("--input", photo, "--model", edsr_model_fp16_overflow, "--engine", "torch", "--tile", "48", "--tile-pad", "0")
    code, events, err = run_worker(*common, "--output", tmp_path / "fp32.png", "--precision", "fp32")
    assert code == 0, err
    reference = read(tmp_path / "fp32.png")

    code, events, err = run_worker(*common, "--output", tmp_path / "fp16.png", "--precision", "fp16")
    assert code == 0, err
    done = events[-1]
    # Two tiles: the bright one overflowed and ran again, the dark one did not.
    assert done["precision"] == "fp16" and done["tiles_run"] == 2
    assert done["precision_fallbacks"] == 1
    got = read(tmp_path / "fp16.png")
    assert np.abs(got.astype(int) - reference).max() <= 2
    assert got[:, 144:].min() > 200  # the bright half is bright, not a black or NaN patch


def test_overflow_fixture_really_overflows_fp16_without_the_check(edsr_model_fp16_overflow: Path):
    """Guards the test above: without the rerun, fp16 gives non-finite values on the bright half only."""
    import torch

    from infer.engines.graph_plan import build_plan
    from infer.engines.torch_net import PlanNet
    from infer.tfgraph import read_graph

    net = PlanNet(build_plan(read_graph(edsr_model_fp16_overflow))).eval().to(torch.float16)
    mean = np.array(FAMILIES["edsr"].mean_bgr, np.float32)
    with torch.inference_mode():
        bright = net(torch.from_numpy((np.full((1, 3, 16, 16), 245, np.float32) - mean[None, :, None, None])).half())
        dark = net(torch.from_numpy((np.full((1, 3, 16, 16), 40, np.float32) - mean[None, :, None, None])).half())
    assert not torch.isfinite(bright).all() and torch.isfinite(dark).all()


@pytest.fixture(scope="module")
def trained_edsr() -> Path:
    from tests.fixtures.train_edsr import DEFAULT_OUTPUT

    assert DEFAULT_OUTPUT.is_file(), f"{DEFAULT_OUTPUT} is committed with the repository"
    return DEFAULT_OUTPUT


def test_trained_edsr_in_bf16_is_within_50_db_of_fp32(trained_edsr: Path, shared_photos: Path, tmp_path: Path):
    """On the trained fixture (random weights say nothing about precision): bf16 and fp16 against fp32."""
    crop = read(shared_photos / "coffee.png")[100:196, 200:328]
    photo = tmp_path / "coffee_crop.png"
    cv2.imwrite(str(photo), crop)
    outs = {}
    for precision in ("fp32", "bf16", "fp16"):
        out = tmp_path / f"{precision}.png"
        code, events, err = run_worker("--input", photo, "--output", out, "--model", trained_edsr,
                                       "--engine", "torch", "--precision", precision)
        assert code == 0, err
        assert events[-1]["precision_fallbacks"] == 0
        outs[precision] = read(out)
    assert psnr(outs["bf16"], outs["fp32"]) >= 50
    assert psnr(outs["fp16"], outs["fp32"]) >= 50
