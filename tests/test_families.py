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


def test_auto_engine_on_the_cpu_follows_the_family():
    """EDSR runs on torch (measured faster at the default window); the small luma networks on OpenCV,
    which finishes them before torch has been imported."""
    edsr = create_engine("auto", "cpu", "auto", FAMILIES["edsr"])
    fsrcnn = create_engine("auto", "cpu", "auto", FAMILIES["fsrcnn"])
    assert (edsr.name, edsr.device) == ("torch", "cpu")
    assert (fsrcnn.name, fsrcnn.precision) == ("opencv", "fp32")
    assert create_engine("opencv", "cpu").name == "opencv"
