"""Model licences as data: the catalog's facts, each installed model's licence, SR_ALLOWED_LICENCES, and what
`sr-models list`, the API and /healthz say."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infer import REPO_ROOT
from infer.catalog import Catalog, NoSuchChoice
from infer.licences import TERMS, UNKNOWN, ModelLicence, parse_allowed
from infer.models import load_manifest
from tests.test_catalog import pb_models, scanned  # noqa: F401  (module fixtures: real models, scanned once)
from tests.test_models_fetch import _env, _leftovers, _run, mirror  # noqa: F401

# The community's photo models, as published (OpenModelDB's facts): release URL, bytes, SHA-256, licence.
PHOTO_MODELS = {
    "4xNomosWebPhoto_RealPLKSR": (
        "https://github.com/Phhofm/models/releases/download/4xNomosWebPhoto_RealPLKSR/4xNomosWebPhoto_RealPLKSR.pth",
        29_683_482, "a9db66c9b674c6a5025b6ef3bee71a57c33b8605d8a2de0980470f89002efbbe", "CC-BY-4.0", "realplksr"),
    "4xNomosWebPhoto_esrgan": (
        "https://github.com/Phhofm/models/releases/download/4xNomosWebPhoto_esrgan/4xNomosWebPhoto_esrgan.pth",
        33_688_212, "131bb044af9fff0c748e460df1dce5aff018e2cd44340bbc6d97e683cdc0d491", "CC-BY-4.0", "esrgan"),
    "4xRealWebPhoto_v4_dat2": (
        "https://github.com/Phhofm/models/releases/download/4xRealWebPhoto_v4_dat2/4xRealWebPhoto_v4_dat2.pth",
        140_299_118, "9b82f8f60826e59b9d2e56a6e6ad9a842b84d57a9ec5ed7377bf120032b2c4c9", "CC-BY-4.0", "dat"),
    "4xPurePhoto-span": (
        "https://github.com/starinspace/StarinspaceUpscale/releases/download/Models/4xPurePhoto-span.pth",
        9_016_490, "c689eec59771ed3eaffc10eea933c44fdb9131f83251c51c5bab4cae7c4d3bf2", "CC-BY-SA-4.0", "span"),
}


def test_every_catalog_model_has_a_known_licence_that_allows_commercial_use() -> None:
    entries = load_manifest()
    for entry in entries:
        terms = TERMS.get(entry.licence)
        assert terms is not None, f"{entry.name}: {entry.licence!r} is not a known SPDX identifier"
        assert terms.commercial, f"{entry.name} is under a non-commercial licence, which the catalog never offers"
        assert entry.attribution and entry.source.startswith("https://github.com/"), entry.name
    photo = {e.name: e for e in entries if e.name in PHOTO_MODELS}
    assert set(photo) == set(PHOTO_MODELS)
    for name, (url, size, sha256, licence, algo) in PHOTO_MODELS.items():
        entry = photo[name]
        assert (entry.url, entry.bytes, entry.sha256, entry.licence, entry.algo, entry.scale) == (
            url, size, sha256, licence, algo, 4)
        assert entry.file == url.rsplit("/", 1)[1] and entry.git_sha1 is None


def test_the_photo_models_are_fetched_from_their_url_and_checked_by_sha256(mirror, tmp_path: Path) -> None:  # noqa: F811
    """No file with their bytes is here: a mirror serves each under its name at its size, with other bytes.
    The download is asked for by the file's name under the mirror, read whole, and refused by its SHA-256."""
    base_url, served, server = mirror
    for name, (url, size, sha256, _, _) in PHOTO_MODELS.items():
        file_name = url.rsplit("/", 1)[1]
        with open(served / file_name, "wb") as out:
            out.truncate(size)
        dest = tmp_path / name
        result = _run("--dir", str(dest), "fetch", name, "--base-url", base_url, timeout=120)
        assert result.returncode != 0 and "SHA-256" in result.stderr and sha256 in result.stderr, result.stderr
        assert f"/models/{file_name}" in server.requests
        assert [n for n in _leftovers(dest) if not n.startswith(".")] == []


def test_a_custom_checkpoint_has_no_known_licence_and_a_catalog_file_has_its_own(
        scanned: Path, pb_models: Path, tmp_path: Path) -> None:  # noqa: F811
    shutil.copy(scanned / "my-custom-x4.pth", tmp_path)
    for name in ("FSRCNN_x3.pb", "EDSR_x3.pb"):
        shutil.copy(pb_models / name, tmp_path)
    from infer import scans
    scans.scan_files([tmp_path / "my-custom-x4.pth"])
    models = {m.id: m for m in Catalog.load(tmp_path).models}
    assert models["my-custom-x4"].licence == ModelLicence()
    assert models["my-custom-x4"].licence.line() == "licence unknown"
    assert models["FSRCNN_x3"].licence.id == "Apache-2.0" and "Saafke" in models["FSRCNN_x3"].licence.line()
    # A graph under the catalog's name with other bytes (here a small EDSR) is not the catalog's file.
    assert models["EDSR_x3"].licence.id == UNKNOWN


def test_allowed_licences_leave_out_the_others_and_say_so(scanned: Path, pb_models: Path, tmp_path: Path) -> None:  # noqa: F811
    from infer import scans

    shutil.copy(scanned / "my-custom-x4.pth", tmp_path)
    scans.scan_files([tmp_path / "my-custom-x4.pth"])
    shutil.copy(pb_models / "FSRCNN_x3.pb", tmp_path)
    shutil.copy(pb_models / "ESPCN_x3.pb", tmp_path)
    default = tmp_path / "my-custom-x4.pth"

    everything = Catalog.load(tmp_path, default)
    assert {m.id for m in everything.models} == {"my-custom-x4", "FSRCNN_x3", "ESPCN_x3"} and not everything.withheld

    apache = Catalog.load(tmp_path, default, allowed_licences=parse_allowed("apache-2.0"))
    assert {m.id for m in apache.models} == {"FSRCNN_x3", "ESPCN_x3"}
    assert apache.default is not None and apache.default.id in ("FSRCNN_x3", "ESPCN_x3")
    assert "SR_ALLOWED_LICENCES" in (apache.default_note or "") and "my-custom-x4.pth has no known licence" in (
        apache.default_note or "")
    assert apache.withheld_note() == ("not offered because SR_ALLOWED_LICENCES does not list their licence: "
                                      "my-custom-x4 (unknown)")
    with pytest.raises(NoSuchChoice, match="my-custom-x4 is not offered on this service") as refused:
        apache.pick(model_id="my-custom-x4")
    assert refused.value.code == "bad_model"

    both = Catalog.load(tmp_path, default, allowed_licences=parse_allowed("Apache-2.0, unknown"))
    assert {m.id for m in both.models} == {"my-custom-x4", "FSRCNN_x3", "ESPCN_x3"} and both.default.id == "my-custom-x4"

    # The worker's own pick reads the same setting.
    env = {"SR_MODELS_DIR": str(tmp_path), "SR_MODEL_PATH": str(default), "SR_ALLOWED_LICENCES": "MIT"}
    assert Catalog.from_env(env).models == []


def test_an_unknown_licence_name_is_refused_with_the_known_ones() -> None:
    assert parse_allowed(None) is None and parse_allowed(" , ") is None
    assert parse_allowed("cc-by-4.0,Unknown") == frozenset({"CC-BY-4.0", UNKNOWN})
    with pytest.raises(ValueError, match="'GPL' is not a licence this service knows.*CC-BY-SA-4.0.*unknown"):
        parse_allowed("MIT,GPL")


def test_list_shows_each_licence_and_credits_the_authors(scanned: Path, tmp_path: Path) -> None:  # noqa: F811
    shutil.copy(scanned / "my-custom-x4.pth", tmp_path)
    subprocess.run([sys.executable, "-m", "infer.models", "--dir", str(tmp_path), "scan"], cwd=REPO_ROOT,
                   env=_env(), capture_output=True, check=True, timeout=300)
    listed = _run("--dir", str(tmp_path), "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    at = next(i for i, text in enumerate(lines) if text.split()[:1] == ["4xNomosWebPhoto_RealPLKSR"])
    assert "CC-BY-4.0" in lines[at] and "not installed" in lines[at]
    assert "by Philip Hofmann (Phhofm)" in lines[at + 1] and "https://github.com/Phhofm/models" in lines[at + 1]
    edsr = next(text for text in lines if text.split()[:1] == ["EDSR_x3"])
    assert "Apache-2.0" in edsr
    custom = next(text for text in lines if "my-custom-x4" in text and "offered" in text)
    assert "licence unknown" in custom
    data = json.loads(_run("--dir", str(tmp_path), "list", "--json").stdout)
    rows = {r["name"]: r for r in data["models"]}
    assert rows["4xPurePhoto-span"]["licence"]["id"] == "CC-BY-SA-4.0"
    assert rows["4xPurePhoto-span"]["licence"]["url"] == "https://creativecommons.org/licenses/by-sa/4.0/"
    checkpoint = next(r for r in data["checkpoints"] if r["file"] == "my-custom-x4.pth")
    assert checkpoint["licence"]["id"] == UNKNOWN
