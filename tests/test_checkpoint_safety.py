"""A checkpoint is untrusted data: crafted archives run nothing in scan, `--model` or the face stage; no loader
reads a pickle but PyTorch's weights-only reader; scans run each file in a capped child; links out of the
models folder are not followed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from infer import REPO_ROOT
from tests.fixtures.code_archives import IRREGULARITIES, write_code_archive
from tests.helpers import run_worker


@pytest.fixture(scope="module")
def compact(realesrgan: dict[str, Path]) -> Path:
    return realesrgan["compact"]


def _sr_models(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infer.models", "--dir", str(folder), *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("irregularity", IRREGULARITIES)
def test_the_crafted_archive_is_live_and_hidden_from_zipfile(tmp_path: Path, irregularity: str) -> None:
    """The test's own archives are real threats: PyTorch's TorchScript loader runs them, zipfile misses them."""
    import torch

    from infer.checkpoints import _is_torchscript_zip

    marker = tmp_path / "written"
    archive = write_code_archive(tmp_path / "evil.pth", marker, irregularity)
    assert not _is_torchscript_zip(archive)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(archive).namelist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(archive))
    assert marker.read_bytes() == b"AAAA", "the archive's code did not run, so the refusals below prove nothing"


@pytest.mark.parametrize("irregularity", IRREGULARITIES)
def test_a_code_archive_is_refused_by_scan_and_model_with_no_side_effect(compact: Path, shared_photos: Path,
                                                                           tmp_path: Path, irregularity: str) -> None:
    marker = tmp_path / "written"
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(compact, folder / "fine.pth")
    evil = write_code_archive(folder / "evil.pth", marker, irregularity)

    scan = _sr_models(folder, "scan")
    assert scan.returncode == 0, scan.stderr
    assert "evil.pth: not offered: evil.pth is a TorchScript file" in scan.stdout, scan.stdout
    assert "fine.pth: offered" in scan.stdout
    record = json.loads((folder / "evil.pth.json").read_text())
    assert record["offered"] is False and "TorchScript" in record["reason"]
    assert not marker.exists(), "scanning ran the archive's code"

    out = tmp_path / "out.png"
    code, events, err = run_worker("--input", shared_photos / "chelsea.png", "--output", out, "--model", evil,
                                   "--max-pixels", "1000000")
    assert code == 5, err
    assert events[-1]["code"] == "model_error" and "TorchScript" in events[-1]["message"]
    assert not out.exists() and not marker.exists(), "the worker ran the archive's code"


@pytest.mark.slow
@pytest.mark.parametrize("irregularity", IRREGULARITIES[:2])
def test_a_code_archive_as_the_face_model_is_refused_with_no_side_effect(shared_models: Path, shared_photos: Path,
                                                                          tmp_path: Path, irregularity: str) -> None:
    from infer.faces.options import GFPGAN_FILE

    marker = tmp_path / "written"
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(shared_models / "FSRCNN_x3.pb", folder)
    face = write_code_archive(folder / GFPGAN_FILE, marker, irregularity)
    # The astronaut has a face, so the face stage reads the GFPGAN file.
    out = tmp_path / "out.png"
    code, events, err = run_worker("--input", shared_photos / "astronaut.png", "--output", out,
                                   "--model", folder / "FSRCNN_x3.pb", "--faces", "on", "--face-model", face,
                                   env={"SR_MODELS_DIR": str(folder)})
    assert code == 5, err
    assert events[-1]["code"] == "model_error" and "TorchScript" in events[-1]["message"], events[-1]
    assert not out.exists() and not marker.exists(), "the face stage ran the archive's code"


def test_a_refused_face_file_is_not_offered_and_healthz_says_why(shared_models: Path, tmp_path: Path) -> None:
    from infer import scans
    from infer.faces.options import GFPGAN_FILE
    from web import create_app, shutdown

    marker = tmp_path / "written"
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(shared_models / "FSRCNN_x3.pb", folder)
    write_code_archive(folder / GFPGAN_FILE, marker, IRREGULARITIES[0])
    app = create_app({"data_dir": tmp_path / "data", "auth_token": None, "model_path": folder / "FSRCNN_x3.pb",
                      "models_dir": folder})
    try:
        client = app.test_client()
        health = client.get("/healthz").get_json()
        assert GFPGAN_FILE in health["models_unscanned"]  # present but unchecked: not offered
        assert client.get("/api/options").get_json()["faces"]["available"] is False
        scans.scan_folder(folder)
        assert not marker.exists()
        health = client.get("/healthz").get_json()
        assert health["models_unscanned"] == []
        assert any(GFPGAN_FILE in n and "TorchScript" in n for n in health["notes"]), health["notes"]
        assert client.get("/api/options").get_json()["faces"]["available"] is False
    finally:
        shutdown(app)


def test_a_pickle_that_needs_a_global_is_refused_with_its_name(tmp_path: Path) -> None:
    import torch

    from infer import checkpoints
    from infer.errors import ModelError

    path = tmp_path / "namespace.pth"
    torch.save({"params": {"conv.weight": torch.zeros(1)}, "args": __import__("argparse").Namespace(lr=1)}, path)
    with pytest.raises(ModelError, match=r"refused: it asks for more than weights .*argparse\.Namespace"):
        checkpoints.load(path)


# Every call that could read a pickle or TorchScript: only `torch.load(..., weights_only=True)` may remain.
_UNSAFE = re.compile(r"load_state_dict_from_file|\.load_from_file\(|torch\.jit\.load|pickle\.loads?\(|pickle_module")


def test_no_code_path_reads_a_model_file_without_the_weights_only_reader() -> None:
    offenders = []
    for folder in ("infer", "web", "bench"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            offenders += [f"{source.relative_to(REPO_ROOT)}: {m.group(0)}" for m in _UNSAFE.finditer(text)]
            for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
                if "weights_only=True" not in call.group(1):
                    offenders.append(f"{source.relative_to(REPO_ROOT)}: {call.group(0)}")
    assert offenders == []


def test_links_that_leave_the_models_folder_are_not_followed(compact: Path, shared_models: Path, tmp_path: Path) -> None:
    from infer.catalog import installed_models

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(compact, outside / "far.pth")
    shutil.copy(shared_models / "ESPCN_x2.pb", outside)
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(compact, folder / "near.pth")
    (folder / "far.pth").symlink_to(outside / "far.pth")
    (folder / "ESPCN_x2.pb").symlink_to(outside / "ESPCN_x2.pb")
    (folder / "alias.pth").symlink_to("near.pth")  # stays inside: kept
    scan = _sr_models(folder, "scan")
    assert scan.returncode == 0, scan.stderr
    assert "far.pth: not followed: it is a link that leads outside" in scan.stdout
    assert "ESPCN_x2.pb: not followed" in scan.stdout
    assert not (folder / "far.pth.json").exists() and (folder / "alias.pth.json").exists()
    assert sorted(m.id for m in installed_models(folder)) == ["alias", "near"]


def test_a_scan_reads_each_file_in_a_capped_child(realesrgan: dict[str, Path], compact: Path, tmp_path: Path) -> None:
    from infer import scans

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(realesrgan["x4plus"], folder)
    shutil.copy(compact, folder / "small.pth")
    big = folder / realesrgan["x4plus"].name
    # No room beyond what the scanning process maps already: reading fails in the child, and only there.
    starved = scans.scan_file(big, scans.ScanLimits(memory_bytes=0, memory_per_file_byte=0))
    assert not starved.offered and starved.info is None and "memory" in starved.reason.lower(), starved
    # Building RRDBNet alone takes longer than a tenth of a second.
    slow = scans.scan_file(big, scans.ScanLimits(seconds=0.1))
    assert not slow.offered and "took longer than 0.1 s, so it was stopped and refused" in slow.reason
    assert scans.scan_file(folder / "small.pth").offered
    assert scans.scan_file(big).offered  # with the default limits
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == []
