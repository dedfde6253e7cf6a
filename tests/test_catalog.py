"""The one rule that picks a job's model (`Catalog.pick`), as a table: kinds x scales x installed sets, the
ranking, the default's stand-in and the denoise twin; real model files, checkpoints offered by real scans."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from infer.catalog import Catalog, NoSuchChoice
from infer.errors import ModelError

# The checkpoints a case may install, each a real converted Real-ESRGAN checkpoint under a catalog or custom name.
CHECKPOINTS = {
    "RealESRGAN_x4plus.safetensors": "x4plus",
    "realesr-animevideov3.pth": "compact",
    "realesr-general-x4v3.pth": "compact",
    "realesr-general-wdn-x4v3.pth": "compact",
    "my-custom-x4.pth": "compact",
}


@pytest.fixture(scope="module")
def scanned(realesrgan: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every checkpoint above, scanned once by the real scan (one reader process for all)."""
    from infer import scans

    folder = tmp_path_factory.mktemp("scanned")
    for name, source in CHECKPOINTS.items():
        shutil.copy(realesrgan[source], folder / name)
    assert all(s.offered for s in scans.scan_files([folder / n for n in CHECKPOINTS]))
    return folder


@pytest.fixture(scope="module")
def pb_models(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.edsr_graph import write_edsr_graph

    folder = tmp_path_factory.mktemp("pb")
    for name in ("FSRCNN_x3", "ESPCN_x3", "FSRCNN_x2", "LapSRN_x4"):
        shutil.copy(shared_models / f"{name}.pb", folder)
    for scale in (3, 4):
        write_edsr_graph(folder / f"EDSR_x{scale}.pb", scale=scale)
    return folder


@dataclass(frozen=True)
class Case:
    installed: tuple[str, ...]
    ask: dict
    expect: str  # "<model id>" or "<model id>@<written scale>" or "!<error code>"
    ranks: tuple[tuple[str, int], ...] = ()


CASES = {
    "nothing installed": Case((), {}, "!none"),
    "only a custom checkpoint: it is the default": Case(("my-custom-x4.pth",), {}, "my-custom-x4"),
    "only a custom checkpoint, restore at 2x": Case(("my-custom-x4.pth",), {"kind": "restore", "scale": 2}, "my-custom-x4@2"),
    "only a custom checkpoint, faithful": Case(("my-custom-x4.pth",), {"kind": "faithful"}, "!kind_unavailable"),
    "only .pb: the stand-in default is the best at x3": Case(("FSRCNN_x3.pb", "ESPCN_x3.pb", "LapSRN_x4.pb"), {}, "FSRCNN_x3"),
    "only .pb: fast at x3": Case(("FSRCNN_x3.pb", "ESPCN_x3.pb", "LapSRN_x4.pb"), {"quality": "fast", "scale": 3}, "FSRCNN_x3"),
    "only .pb: best at x4": Case(("FSRCNN_x3.pb", "ESPCN_x3.pb", "LapSRN_x4.pb"), {"quality": "best", "scale": 4}, "LapSRN_x4"),
    "only .pb: fast at x4 is not there": Case(("FSRCNN_x3.pb", "LapSRN_x4.pb"), {"kind": "fast", "scale": 4}, "!bad_scale"),
    "only .pb: a .pb serves a smaller scale": Case(("LapSRN_x4.pb",), {"model": "LapSRN_x4", "scale": 2}, "LapSRN_x4@2"),
    "only .pb: never enlarged": Case(("LapSRN_x4.pb",), {"model": "LapSRN_x4", "scale": 8}, "!bad_scale"),
    "only .pb: faithful at 2x from EDSR x3": Case(("EDSR_x3.pb", "LapSRN_x4.pb", "FSRCNN_x2.pb"), {"kind": "faithful", "scale": 2},
                                                   "EDSR_x3@2"),
    "the configured default when installed": Case(("EDSR_x3.pb", "FSRCNN_x3.pb", "RealESRGAN_x4plus.safetensors"), {}, "EDSR_x3"),
    "EDSR above LapSRN": Case(("EDSR_x4.pb", "LapSRN_x4.pb"), {"kind": "faithful", "scale": 4}, "EDSR_x4"),
    "EDSR above a checkpoint for best": Case(("EDSR_x4.pb", "RealESRGAN_x4plus.safetensors"), {"quality": "best", "scale": 4}, "EDSR_x4"),
    "a x4 checkpoint serves 3x": Case(("RealESRGAN_x4plus.safetensors",), {"kind": "restore", "scale": 3}, "RealESRGAN_x4plus@3"),
    "a x4 checkpoint serves 2x": Case(("RealESRGAN_x4plus.safetensors",), {"kind": "restore", "scale": 2}, "RealESRGAN_x4plus@2"),
    "a x4 checkpoint named at 3x": Case(("RealESRGAN_x4plus.safetensors",), {"model": "RealESRGAN_x4plus", "scale": 3}, "RealESRGAN_x4plus@3"),
    "the tie: x4plus over the anime video model": Case(("RealESRGAN_x4plus.safetensors", "realesr-animevideov3.pth"),
                                                     {"kind": "restore", "scale": 4}, "RealESRGAN_x4plus"),
    "general over the anime video model": Case(("realesr-general-x4v3.pth", "realesr-animevideov3.pth"),
                                               {"kind": "restore", "scale": 4}, "realesr-general-x4v3"),
    "x4plus over general": Case(("realesr-general-x4v3.pth", "RealESRGAN_x4plus.safetensors"), {"kind": "restore"}, "RealESRGAN_x4plus"),
    "a custom checkpoint below catalog ones": Case(("my-custom-x4.pth", "realesr-animevideov3.pth"),
                                                   {"kind": "restore", "scale": 4}, "realesr-animevideov3"),
    "a custom checkpoint the operator ranks": Case(("my-custom-x4.pth", "RealESRGAN_x4plus.safetensors"),
                                                   {"kind": "restore", "scale": 4}, "my-custom-x4", (("my-custom-x4", 40),)),
    "the denoise twin is never a model": Case(("realesr-general-wdn-x4v3.pth",), {"kind": "restore"}, "!none"),
    "the twin beside its model": Case(("realesr-general-x4v3.pth", "realesr-general-wdn-x4v3.pth"),
                                      {"model": "realesr-general-wdn-x4v3"}, "!bad_model"),
    "kind and model disagree": Case(("FSRCNN_x3.pb", "RealESRGAN_x4plus.safetensors"), {"model": "FSRCNN_x3", "kind": "restore"},
                                    "!kind_conflict"),
    "an unknown kind": Case(("FSRCNN_x3.pb",), {"kind": "vivid"}, "!bad_kind"),
    "an unknown quality": Case(("FSRCNN_x3.pb",), {"quality": "ultra", "scale": 3}, "!bad_quality"),
    "a scale nothing gives": Case(("FSRCNN_x3.pb",), {"scale": 8}, "!bad_scale"),
}


def _install(case: Case, folder: Path, scanned: Path, pb_models: Path) -> None:
    from infer.scans import record_path

    for name in case.installed:
        if name.endswith(".pb"):
            shutil.copy(pb_models / name, folder)
        else:
            os.link(scanned / name, folder / name)
            shutil.copy(record_path(scanned / name), record_path(folder / name))


@pytest.mark.parametrize("name", list(CASES))
def test_pick(name: str, scanned: Path, pb_models: Path, tmp_path: Path) -> None:
    case = CASES[name]
    _install(case, tmp_path, scanned, pb_models)
    catalog = Catalog.load(tmp_path, ranks=dict(case.ranks))
    if case.expect == "!none":
        assert catalog.models == [] and catalog.default is None
        with pytest.raises(ModelError, match="no model is installed"):
            catalog.pick(**case.ask)
        return
    if case.expect.startswith("!"):
        with pytest.raises(NoSuchChoice) as refused:
            catalog.pick(**{"model_id" if k == "model" else k: v for k, v in case.ask.items()})
        assert refused.value.code == case.expect[1:], refused.value
        return
    pick = catalog.pick(**{"model_id" if k == "model" else k: v for k, v in case.ask.items()})
    model, _, written = case.expect.partition("@")
    assert (pick.model.id, pick.outscale) == (model, int(written) if written else None), pick.why


def test_the_table_is_what_pick_gives(scanned: Path, pb_models: Path, tmp_path: Path) -> None:
    case = Case(("EDSR_x3.pb", "FSRCNN_x3.pb", "FSRCNN_x2.pb", "LapSRN_x4.pb", "RealESRGAN_x4plus.safetensors",
                 "realesr-animevideov3.pth", "realesr-general-wdn-x4v3.pth"), {}, "")
    _install(case, tmp_path, scanned, pb_models)
    catalog = Catalog.load(tmp_path)
    assert catalog.table() == {
        "restore": {2: "RealESRGAN_x4plus", 3: "RealESRGAN_x4plus", 4: "RealESRGAN_x4plus"},
        "faithful": {2: "EDSR_x3", 3: "EDSR_x3", 4: "LapSRN_x4"},
        "fast": {2: "FSRCNN_x2", 3: "FSRCNN_x3"},
    }
    for kind, scales in catalog.table().items():
        for scale, model in scales.items():
            assert catalog.pick(kind=kind, scale=scale).model.id == model


def test_a_missing_default_has_a_stand_in_and_its_fix(pb_models: Path, tmp_path: Path) -> None:
    shutil.copy(pb_models / "ESPCN_x3.pb", tmp_path)
    shutil.copy(pb_models / "LapSRN_x4.pb", tmp_path)
    catalog = Catalog.load(tmp_path)
    assert catalog.default is not None and catalog.default.id == "ESPCN_x3"
    assert "EDSR_x3.pb is not installed" in (catalog.default_note or "")
    assert "sr-models fetch EDSR_x3" in (catalog.default_note or "")
    assert catalog.path_of("EDSR_x3.pb") == tmp_path / "EDSR_x3.pb"
    elsewhere = tmp_path / "elsewhere" / "FSRCNN_x3.pb"
    explicit = Catalog.load(tmp_path, elsewhere)
    assert explicit.path_of("fsrcnn_x3.pb") == elsewhere and explicit.path_of("ESPCN_x3.pb") == tmp_path / "ESPCN_x3.pb"


def test_the_worker_picks_with_the_same_catalog(scanned: Path, pb_models: Path, shared_photos: Path, tmp_path: Path) -> None:
    """`sr-infer --scale 4 --quality best` and `kind` on the web agree: the tie goes to x4plus, not by file name."""
    from PIL import Image

    from tests.helpers import run_worker

    folder = tmp_path / "models"
    folder.mkdir()
    _install(Case(("RealESRGAN_x4plus.safetensors", "realesr-animevideov3.pth", "FSRCNN_x3.pb"), {}, ""), folder,
             scanned, pb_models)
    src = tmp_path / "tiny.png"
    Image.open(shared_photos / "chelsea.png").convert("RGB").crop((100, 50, 116, 62)).save(src)
    code, events, err = run_worker("--input", src, "--output", tmp_path / "o.png", "--scale", "4", "--quality", "best",
                                   "--device", "cpu", env={"SR_MODELS_DIR": str(folder)})
    assert code == 0, err
    assert events[0]["model"].endswith("RealESRGAN_x4plus.safetensors")
    # Without EDSR_x3.pb, the worker's default is the catalog's stand-in, and it says so.
    code, events, err = run_worker("--input", src, "--output", tmp_path / "d.png", env={"SR_MODELS_DIR": str(folder)})
    assert code == 0, err
    assert events[0]["model"].endswith("FSRCNN_x3.pb") and "EDSR_x3.pb is not installed" in err
