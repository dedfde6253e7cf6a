"""Custom checkpoints in the models folder: `sr-models scan` and `list`, the worker's --scale/--quality among
them, and a front end that offers them from their scan records without importing PyTorch or spandrel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from infer import REPO_ROOT
from tests.helpers import run_worker


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def folder(realesrgan: dict[str, Path], shared_models: Path, tmp_path: Path) -> Path:
    """A models folder as a person leaves it: a .pb, a real checkpoint, and three that must not be offered."""
    import torch

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(shared_models / "ESPCN_x4.pb", folder)
    shutil.copy(shared_models / "FSRCNN_x3.pb", folder)
    shutil.copy(realesrgan["compact"], folder / "my-anime-x4.pth")
    torch.save({"encoder.weight": torch.zeros(4, 4)}, folder / "mystery.pth")
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), str(folder / "scripted.pt"))
    torch.save({"params": _Payload(tmp_path / "pwned")}, folder / "evil.ckpt")
    return folder


def _sr_models(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    return subprocess.run([sys.executable, "-m", "infer.models", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=300)


def test_scan_and_list_say_what_is_offered_and_why_not(folder: Path, tmp_path: Path):
    listed = json.loads(_sr_models("--dir", str(folder), "list", "--json").stdout)
    assert {r["file"]: r["status"] for r in listed["checkpoints"]} == {
        "evil.ckpt": "not scanned", "my-anime-x4.pth": "not scanned", "mystery.pth": "not scanned", "scripted.pt": "not scanned"}
    done = _sr_models("--dir", str(folder), "scan")
    assert done.returncode == 0, done.stderr
    assert "my-anime-x4.pth: offered as my-anime-x4 (RealESRGAN Compact x4)" in done.stdout
    assert not (tmp_path / "pwned").exists(), "the payload ran"
    rows = {r["file"]: r for r in json.loads(_sr_models("--dir", str(folder), "list", "--json").stdout)["checkpoints"]}
    assert rows["my-anime-x4.pth"]["status"] == "offered" and rows["my-anime-x4.pth"]["architecture"] == "Compact"
    assert len(rows["my-anime-x4.pth"]["sha256"]) == 64
    assert "not an architecture spandrel recognises" in rows["mystery.pth"]["reason"]
    assert "TorchScript" in rows["scripted.pt"]["reason"]
    assert "refused" in rows["evil.ckpt"]["reason"]
    assert all(rows[f]["status"] == "not offered" for f in ("mystery.pth", "scripted.pt", "evil.ckpt"))
    text = _sr_models("--dir", str(folder), "list").stdout
    assert "my-anime-x4 (RealESRGAN Compact x4)  offered" in text and "mystery.pth  not offered:" in text
    # A changed file needs a new scan: its record no longer describes it.
    (folder / "my-anime-x4.pth").touch()
    os.utime(folder / "my-anime-x4.pth", ns=(1, 1))
    rows = {r["file"]: r for r in json.loads(_sr_models("--dir", str(folder), "list", "--json").stdout)["checkpoints"]}
    assert rows["my-anime-x4.pth"]["status"] == "not scanned"


def test_scan_reads_the_face_file_for_faces_and_never_offers_it_as_an_upscaler(folder: Path):
    # GFPGANv1.4.pth is the face stage's file: scanned for that purpose, so a file that is not GFPGAN is refused
    # with its reason, and it is never listed among the upscalers.
    from infer.catalog import installed_models

    face = folder / "GFPGANv1.4.pth"
    face.write_bytes((folder / "my-anime-x4.pth").read_bytes())
    done = _sr_models("--dir", str(folder), "scan")
    assert done.returncode == 0, done.stderr
    assert "GFPGANv1.4.pth: not used for faces: it holds a RealESRGAN Compact network, not GFPGAN" in done.stdout
    assert "my-anime-x4.pth: offered" in done.stdout
    listed = json.loads(_sr_models("--dir", str(folder), "list", "--json").stdout)
    row = next(r for r in listed["checkpoints"] if r["file"] == "GFPGANv1.4.pth")
    assert row["status"] == "not used for faces" and "not GFPGAN" in row["reason"]
    assert "GFPGANv1.4" not in {m.id for m in installed_models(folder)}


@pytest.mark.slow
def test_the_worker_chooses_a_scanned_checkpoint_by_scale_and_quality(folder: Path, photo: Path, tmp_path: Path):
    assert _sr_models("--dir", str(folder), "scan").returncode == 0
    env = {"SR_MODELS_DIR": str(folder)}
    out = tmp_path / "best.png"
    code, events, err = run_worker("--input", photo, "--output", out, "--scale", "4", "--quality", "best", env=env)
    assert code == 0, err
    assert events[0]["model"].endswith("my-anime-x4.pth") and events[0]["engine"] == "spandrel"
    assert Image.open(out).size == (56 * 4, 40 * 4)
    code, events, err = run_worker("--input", photo, "--output", tmp_path / "fast.png", "--scale", "4", "--quality", "fast", env=env)
    assert code == 0 and events[0]["model"].endswith("ESPCN_x4.pb"), err


_FRONT_END = textwrap.dedent("""
    import importlib.abc, json, sys
    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "spandrel", "torchvision", "safetensors"):
                raise ImportError(f"the front end imported {name}")
    sys.meta_path.insert(0, Refuse())
    from pathlib import Path
    from web import create_app, shutdown
    folder, data = Path(sys.argv[1]), Path(sys.argv[2])
    app = create_app({"data_dir": data, "auth_token": None, "models_dir": folder, "model_path": folder / "FSRCNN_x3.pb"})
    client = app.test_client()
    out = {"options": client.get("/api/options").get_json(), "healthz": client.get("/healthz").get_json()}
    if len(sys.argv) > 3:  # a job with the custom checkpoint, run by a real worker process
        import io, time
        reply = client.post("/api/jobs", data={"image": (io.BytesIO(Path(sys.argv[3]).read_bytes()), "p.png"),
                            "model": "my-anime-x4"}, content_type="multipart/form-data")
        job = reply.get_json()
        for _ in range(1200):
            job = client.get(f"/api/jobs/{job['id']}").get_json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        out["job"] = job
        out["torch_imported"] = "torch" in sys.modules
    shutdown(app)
    print(json.dumps(out))
""")


def test_a_front_end_without_pytorch_offers_and_runs_scanned_checkpoints(folder: Path, photo: Path, tmp_path: Path):
    def front_end(*job: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
        done = subprocess.run([sys.executable, "-c", _FRONT_END, str(folder), str(tmp_path / "data"), *job], cwd=REPO_ROOT,
                              env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return {**json.loads(done.stdout.splitlines()[-1]), "log": done.stderr}

    before = front_end()
    assert "my-anime-x4" not in [m["id"] for m in before["options"]["models"]]
    assert set(before["healthz"]["models_unscanned"]) == {"my-anime-x4.pth", "mystery.pth", "scripted.pt", "evil.ckpt"}
    assert "sr-models scan" in before["healthz"]["notes"][0] and "sr-models scan" in before["log"]

    assert _sr_models("--dir", str(folder), "scan").returncode == 0
    after = front_end(str(photo))
    offered = {m["id"]: m for m in after["options"]["models"]}
    assert offered["my-anime-x4"]["label"] == "my-anime-x4 (RealESRGAN Compact x4)" and offered["my-anime-x4"]["scale"] == 4
    assert offered["my-anime-x4"]["kind"] == "restore" and offered["FSRCNN_x3"]["kind"] == "fast"
    assert not {"mystery", "scripted", "evil"} & set(offered)
    assert after["healthz"]["models_unscanned"] == [] and after["healthz"]["notes"] == []
    job = after["job"]
    assert job["status"] == "done", job
    assert not after["torch_imported"]


def test_a_checkpoint_under_the_catalogs_name_is_custom_not_damaged(realesrgan: dict[str, Path], shared_models: Path,
                                                                    tmp_path: Path):
    """A converted checkpoint saved as RealESRGAN_x4plus.pth (another size than the catalog's) is a custom
    checkpoint in `list`, `list --json` and `verify`, which say its checksum differs and what that means; a
    truncated .pb is still a damaged download, and a checkpoint of its own name is custom."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(realesrgan["compact"], folder / "RealESRGAN_x4plus.pth")
    shutil.copy(realesrgan["compact"], folder / "my-anime-x4.pth")
    (folder / "ESPCN_x3.pb").write_bytes((shared_models / "ESPCN_x3.pb").read_bytes()[:5000])
    assert _sr_models("--dir", str(folder), "scan").returncode == 0

    listed = json.loads(_sr_models("--dir", str(folder), "list", "--json").stdout)
    models = {r["name"]: r for r in listed["models"]}
    assert models["RealESRGAN_x4plus"]["status"] == "custom checkpoint" and not models["RealESRGAN_x4plus"]["installed"]
    assert models["ESPCN_x3"]["status"] == "wrong size"
    assert all(r["url"].startswith("https://") for r in listed["models"])
    assert models["RealESRGAN_x4plus"]["url"].endswith("/RealESRGAN_x4plus.pth")
    checkpoints = {r["file"]: r for r in listed["checkpoints"]}
    assert checkpoints["RealESRGAN_x4plus.pth"]["catalog"] is False and checkpoints["my-anime-x4.pth"]["catalog"] is False

    text = _sr_models("--dir", str(folder), "list").stdout.splitlines()
    row = next(line for line in text if line.startswith("  RealESRGAN_x4plus "))
    assert row.endswith("custom checkpoint") and "wrong size" not in row, row
    assert any("is not the catalog's RealESRGAN_x4plus (its checksum differs)" in line
               and "RealESRGAN_x4plus (RealESRGAN Compact x4)" in line for line in text), text
    assert any("my-anime-x4 (RealESRGAN Compact x4)  offered (custom checkpoint)" in line for line in text), text
    # Long names (realesr-general-wdn-x4v3) keep the columns aligned: every row's size ends in the same place.
    rows = [line for line in text if line.endswith(("installed", "custom checkpoint", "wrong size", "(default)"))]
    assert len(rows) == len(listed["models"]) and len({line.index(" MB ") for line in rows}) == 1, rows

    verified = _sr_models("--dir", str(folder), "verify", "RealESRGAN_x4plus", "ESPCN_x3")
    assert "RealESRGAN_x4plus: custom checkpoint:" in verified.stdout and "its checksum differs" in verified.stdout
    assert "ESPCN_x3: wrong size" in verified.stdout
    assert verified.returncode == 5 and "`sr-models fetch ESPCN_x3`" in verified.stderr
    assert "fetch RealESRGAN_x4plus" not in verified.stderr, verified.stderr
