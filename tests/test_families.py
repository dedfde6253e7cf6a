"""Model families and engines are registries: every family's facts in one place, auto picks by family and device."""

from __future__ import annotations

import pytest

from infer.engines import ENGINES, create_engine
from infer.errors import ModelError
from infer.families import FAMILIES, Colour
from infer.modelspec import spec_from_path


@pytest.mark.parametrize(
    "name,algo,scale",
    [("EDSR_x3.pb", "edsr", 3), ("edsr_x4.pb", "edsr", 4), ("FSRCNN-small_x3.pb", "fsrcnn", 3),
     ("ESPCN_x2.pb", "espcn", 2), ("LapSRN_x8.pb", "lapsrn", 8), ("EDSR_x3_trained.pb", "edsr", 3)],
)
def test_family_and_scale_from_the_file_name(name: str, algo: str, scale: int):
    spec = spec_from_path(name)
    assert (spec.algo, spec.scale) == (algo, scale)
    assert spec.family is FAMILIES[algo]


@pytest.mark.parametrize("name,words", [("EDSRx3.pb", "cannot tell"), ("EDSR_x8.pb", "scales 2, 3, 4"),
                                        ("weights.bin", "cannot tell"), ("LapSRN_x3.pb", "scales 2, 4, 8")])
def test_names_that_say_nothing_usable_are_refused(name: str, words: str):
    with pytest.raises(ModelError, match=words):
        spec_from_path(name)


def test_flags_override_the_name():
    spec = spec_from_path("weights.pb", algo="espcn", scale=4)
    assert (spec.algo, spec.scale, spec.channels) == ("espcn", 4, 1)


def test_every_family_declares_consistent_facts():
    for family in FAMILIES.values():
        assert family.scales and family.tile > 0 and family.tile_pad >= 0
        assert (family.mean_bgr is not None) == (family.colour is Colour.BGR_MINUS_MEAN)
        assert family.channels == (3 if family.colour is Colour.BGR_MINUS_MEAN else 1)
        assert set(family.cpu_engines) <= set(ENGINES)
        assert set(family.auto_half) <= {"bf16", "fp16"}
        assert family.window_overhead == 0 or 1 <= family.window_overhead <= 2


def test_edsr_tile_depends_on_the_engine(edsr_model, photo, tmp_path):
    """OpenCV keeps the family's measured tile (256: its memory grows past it); the torch engine takes the window
    the job's memory allows, so the small photo runs whole."""
    from tests.helpers import run_worker

    for engine in ("opencv", "torch"):
        code, events, err = run_worker("--input", photo, "--output", tmp_path / "o.png", "--model", edsr_model,
                                       "--engine", engine)
        assert code == 0, err
        assert events[0]["tile"] == events[-1]["tile"]
        if engine == "opencv":
            assert events[0]["tile"] == FAMILIES["edsr"].tile == 256
        else:
            assert events[0]["tile"] > 320 and events[0]["tiles"] == 1


def test_auto_engine_on_the_cpu_follows_the_family():
    """EDSR runs on torch (measured faster at the default window); the small luma networks on OpenCV,
    which finishes them before torch has been imported."""
    edsr = create_engine("auto", "cpu", "auto", FAMILIES["edsr"])
    fsrcnn = create_engine("auto", "cpu", "auto", FAMILIES["fsrcnn"])
    assert (edsr.name, edsr.device) == ("torch", "cpu")
    assert (fsrcnn.name, fsrcnn.precision) == ("opencv", "fp32")
    assert create_engine("opencv", "cpu").name == "opencv"


def test_catalog_offers_what_is_installed(shared_models, tmp_path):
    import shutil

    from infer.catalog import Catalog, NoSuchChoice
    from tests.fixtures.edsr_graph import write_edsr_graph

    for name in ("FSRCNN_x3", "ESPCN_x3", "LapSRN_x4"):
        shutil.copy(shared_models / f"{name}.pb", tmp_path)
    write_edsr_graph(tmp_path / "EDSR_x3.pb")
    (tmp_path / "EDSR_x2.pb").write_bytes(b"")  # an interrupted download is not offered
    (tmp_path / "notes.pb").write_bytes(b"x")  # nor a file that names no family
    catalog = Catalog.load(tmp_path)
    assert [m.id for m in catalog.models] == ["EDSR_x3", "FSRCNN_x3", "ESPCN_x3", "LapSRN_x4"]
    assert catalog.scales() == [3, 4]
    assert catalog.pick(scale=3, quality="best").model.id == "EDSR_x3"
    assert catalog.pick(scale=3, quality="fast").model.id == "FSRCNN_x3"
    assert catalog.pick(scale=4, quality="fast").model.id == "LapSRN_x4"
    assert catalog.pick(model_id="fsrcnn_x3").model.id == "FSRCNN_x3"
    assert catalog.pick(quality="fast").model.id == "FSRCNN_x3"
    with pytest.raises(NoSuchChoice, match="scales available: x3, x4"):
        catalog.pick(scale=2)
    with pytest.raises(NoSuchChoice, match="installed: EDSR_x3, FSRCNN_x3"):
        catalog.pick(model_id="EDSR_x4")
    with pytest.raises(NoSuchChoice, match="best, fast"):
        catalog.pick(scale=3, quality="ultra")


def test_quality_is_best_for_the_highest_rank_at_a_scale(shared_models, tmp_path):
    import shutil

    from infer.catalog import Catalog
    from tests.fixtures.edsr_graph import write_edsr_graph

    for name in ("FSRCNN_x3", "ESPCN_x3", "LapSRN_x4", "FSRCNN_x4"):
        shutil.copy(shared_models / f"{name}.pb", tmp_path)
    write_edsr_graph(tmp_path / "EDSR_x3.pb")
    catalog = Catalog.load(tmp_path)
    assert {m.id: catalog.quality_of(m) for m in catalog.models} == {
        "EDSR_x3": "best", "ESPCN_x3": "fast", "FSRCNN_x3": "fast", "LapSRN_x4": "best", "FSRCNN_x4": "fast",
    }
    # Alone at its scale, a fast network is the best there is.
    only = Catalog.load(tmp_path / "only", tmp_path / "FSRCNN_x3.pb")
    assert only.quality_of(only.models[0]) == "best"
