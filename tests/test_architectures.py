"""spandrel's community architectures (RealPLKSR, DAT, SPAN, SwinIR, HAT, OmniSR) through the whole worker, with
random weights of smaller configurations of the same structure (window sizes, upsamplers) on an odd-sized photo."""

from __future__ import annotations

from pathlib import Path

import pytest

from infer import checkpoints, scans
from infer.precision import cpu_has_native_bf16
from tests.fixtures.architectures import ARCHITECTURES, write_checkpoint
from tests.helpers import psnr, read, run_worker

pytest.importorskip("spandrel")

# spandrel's architecture id of each (RealPLKSR is a kind of PLKSR to it).
IDS = {"RealPLKSR": "PLKSR", "DAT": "DAT", "SPAN": "SPAN", "SwinIR": "SwinIR", "HAT": "HAT", "OmniSR": "OmniSR"}
WIDTH, HEIGHT = 157, 71  # odd both ways, and wide enough for tiles with context either side whatever the alignment
TILE = 40
BF16_PSNR_DB = 45.0


@pytest.fixture(scope="module")
def models(shared_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each architecture's small random checkpoint, as .pth (a plain state dict) and .safetensors in turn."""
    folder = tmp_path_factory.mktemp("architectures")
    suffixes = (".pth", ".safetensors")
    return {name: write_checkpoint(name, folder / f"{name}{suffixes[i % 2]}", shared_photos, small=True)
            for i, name in enumerate(ARCHITECTURES)}


@pytest.fixture(scope="module")
def odd_photo(shared_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("odd") / "coffee_157x71.png"
    Image.open(shared_photos / "coffee.png").convert("RGB").crop((200, 100, 200 + WIDTH, 100 + HEIGHT)).save(path)
    return path


def test_spandrel_detects_each_and_the_scan_offers_it(models: dict[str, Path]):
    for scan, (name, path) in zip(scans.scan_files(list(models.values())), models.items()):
        assert scan.offered, (name, scan.reason)
        assert scan.info is not None and scan.info.architecture == IDS[name] and scan.info.scale == 4
        # Every one has measured CPU facts, not the unmeasured guess.
        assert checkpoints.cpu_facts(scan.info) is not checkpoints.UNMEASURED, name


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_runs_right_through_the_worker(name: str, models: dict[str, Path], odd_photo: Path, tmp_path: Path):
    model = models[name]
    info = checkpoints.inspect(model)
    facts = checkpoints.cpu_facts(info)

    def run(out: str, *flags: str) -> dict:
        done = run_worker("--input", odd_photo, "--output", tmp_path / out, "--model", model, "--json", *flags)
        assert done.exit_code == 0, done.stderr[-3000:]
        assert done.last["event"] == "done"
        assert (done.last["width"], done.last["height"]) == (WIDTH * 4, HEIGHT * 4)
        assert read(tmp_path / out).shape == (HEIGHT * 4, WIDTH * 4, 3)
        return done.last

    # bf16 asked for where the CPU has it, whatever `auto` measured here: its safety is what is tested.
    expected = "bf16" if cpu_has_native_bf16() and "bf16" in info.half_formats else "fp32"
    whole = run("whole.png", "--tile", "0", "--precision", expected)
    switched = whole.get("precision_switch")
    if switched is not None:
        # The descriptor claims bf16 but the network cannot run in it: the run says why and finishes in fp32.
        assert switched["from"] == expected and switched["to"] == "fp32" and "fp32" in switched["reason"]
        assert whole["precision"] == "fp32"
    else:
        assert whole["precision"] == expected
    if name == "SwinIR" and expected == "bf16":
        assert switched is not None, "SwinIR's bf16 forward mixes in an fp32 attention mask"

    fp32 = run("fp32.png", "--tile", "0", "--precision", "fp32")
    assert fp32["precision"] == "fp32"
    quality = psnr(read(tmp_path / "whole.png"), read(tmp_path / "fp32.png"))
    if whole["precision"] == "fp32":
        assert quality == float("inf")
    else:
        assert quality >= BF16_PSNR_DB, f"{name} in bf16 against fp32: {quality:.1f} dB"

    tiled = run("tiled.png", "--tile", str(TILE), "--tile-pad", str(facts.tile_pad), "--precision", expected)
    assert tiled["tiles_run"] > 1
    a, b = read(tmp_path / "whole.png"), read(tmp_path / "tiled.png")
    diff = abs(a.astype(int) - b.astype(int))
    assert diff.max() <= facts.tiled_max_diff and psnr(a, b) >= facts.tiled_psnr_db, (
        f"{name}: tiled against whole, max {diff.max()}, PSNR {psnr(a, b):.1f} dB")
