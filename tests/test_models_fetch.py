"""`sr-models` against a real HTTP server on loopback: downloads, verification, failures that leave nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from infer import REPO_ROOT
from infer.errors import EXIT_MODEL, EXIT_USAGE
from infer.models import default_model_path, file_digests, find_entry, load_manifest, models_dir

SMALL = ["ESPCN_x2", "FSRCNN_x3"]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests: list[str]
    mode: str  # "serve", "drop" (half the bytes, then hang up), "trickle" (a little, then stall)
    release: threading.Event


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.server.mode == "serve":
            return super().do_GET()
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.mode == "drop":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(data[:4096])
            self.wfile.flush()
            self.server.release.wait(30)


@pytest.fixture
def mirror(tmp_path: Path, shared_models: Path) -> Iterator[tuple[str, Path, _Server]]:
    """A folder of model copies served on 127.0.0.1; returns (base URL, served folder, server)."""
    root = tmp_path / "mirror"
    served = root / "models"
    served.mkdir(parents=True)
    for name in SMALL:
        shutil.copy(shared_models / f"{name}.pb", served)
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.requests, server.mode, server.release = [], "serve", threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/models", served, server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_MODEL")}
    env.update(extra)
    return env


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infer.models", *args],
        cwd=REPO_ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_downloads_verifies_and_does_not_download_twice(mirror, tmp_path: Path, shared_models: Path) -> None:
    base_url, _, server = mirror
    dest = tmp_path / "models"
    result = _run("--dir", str(dest), "fetch", *SMALL, "--base-url", base_url)
    assert result.returncode == 0, result.stderr
    assert _leftovers(dest) == sorted(f"{n}.pb" for n in SMALL)
    for name in SMALL:
        assert (dest / f"{name}.pb").read_bytes() == (shared_models / f"{name}.pb").read_bytes()
    assert sorted(server.requests) == sorted(f"/models/{n}.pb" for n in SMALL)

    again = _run("--dir", str(dest), "fetch", "espcn_x2.pb", "FSRCNN_x3", "--base-url", base_url)
    assert again.returncode == 0, again.stderr
    assert "already present and verified" in again.stderr
    assert len(server.requests) == 2  # nothing downloaded the second time

    verify = _run("--dir", str(dest), "verify", env=_env(SR_MODEL_PATH=str(dest / "FSRCNN_x3.pb")))
    assert verify.returncode == 0, verify.stderr
    assert "ESPCN_x2: ok" in verify.stdout and "FSRCNN_x3: ok" in verify.stdout
    # Without SR_MODEL_PATH the default is EDSR_x3, which is not there.
    no_default = _run("--dir", str(dest), "verify")
    assert no_default.returncode == EXIT_MODEL and "sr-models fetch EDSR_x3" in no_default.stderr


def test_fetch_uses_the_environment_for_folder_and_mirror(mirror, tmp_path: Path) -> None:
    base_url, _, server = mirror
    dest = tmp_path / "env-models"
    result = _run("fetch", "ESPCN_x2", env=_env(SR_MODELS_DIR=str(dest), SR_MODELS_BASE_URL=base_url + "/"))
    assert result.returncode == 0, result.stderr
    assert _leftovers(dest) == ["ESPCN_x2.pb"]
    assert server.requests == ["/models/ESPCN_x2.pb"]


def test_corrupted_download_fails_and_leaves_nothing(mirror, tmp_path: Path) -> None:
    base_url, served, _ = mirror
    data = bytearray((served / "ESPCN_x2.pb").read_bytes())
    data[1000] ^= 0xFF  # same size, different bytes
    (served / "ESPCN_x2.pb").write_bytes(bytes(data))
    (served / "FSRCNN_x3.pb").write_bytes(b"<html>not the model</html>")
    dest = tmp_path / "models"
    for name, problem in (("ESPCN_x2", "wrong checksum"), ("FSRCNN_x3", "wrong size")):
        result = _run("--dir", str(dest), "fetch", name, "--base-url", base_url)
        assert result.returncode == EXIT_MODEL, result.stderr
        assert problem in result.stderr and "nothing was kept" in result.stderr
        assert _leftovers(dest) == []


def test_connection_dropped_midway_leaves_nothing(mirror, tmp_path: Path) -> None:
    base_url, _, server = mirror
    server.mode = "drop"
    dest = tmp_path / "models"
    result = _run("--dir", str(dest), "fetch", "ESPCN_x2", "--base-url", base_url)
    assert result.returncode == EXIT_MODEL, result.stderr
    assert "interrupted" in result.stderr and "run the command again" in result.stderr
    assert _leftovers(dest) == []


def test_stopping_a_download_removes_the_part_file(mirror, tmp_path: Path) -> None:
    base_url, _, server = mirror
    server.mode = "trickle"
    dest = tmp_path / "models"
    proc = subprocess.Popen(
        [sys.executable, "-m", "infer.models", "--dir", str(dest), "fetch", "ESPCN_x2", "--base-url", base_url],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (dest / "ESPCN_x2.pb.part").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "download never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "nothing partial was kept" in stderr
    assert _leftovers(dest) == []


def test_unreachable_source_gives_the_offline_message(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "models"
    result = _run("--dir", str(dest), "fetch", "EDSR_x3", "--base-url", f"http://127.0.0.1:{port}/m")
    assert result.returncode == EXIT_MODEL
    assert f"could not reach 127.0.0.1:{port}" in result.stderr
    assert "download" in result.stderr and "on a machine with internet" in result.stderr
    assert "SR_MODEL_PATH" in result.stderr and str(dest / "EDSR_x3.pb") in result.stderr
    assert _leftovers(dest) == []


def test_missing_file_on_the_server_is_a_clear_error(mirror, tmp_path: Path) -> None:
    base_url, _, _ = mirror
    dest = tmp_path / "models"
    result = _run("--dir", str(dest), "fetch", "LapSRN_x8", "--base-url", base_url)
    assert result.returncode == EXIT_MODEL
    assert "HTTP 404" in result.stderr
    assert _leftovers(dest) == []


def test_verify_reports_a_damaged_copy(tmp_path: Path, shared_models: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    shutil.copy(shared_models / "FSRCNN_x3.pb", dest)
    damaged = bytearray((shared_models / "ESPCN_x3.pb").read_bytes())
    damaged[-1] ^= 1
    (dest / "ESPCN_x3.pb").write_bytes(bytes(damaged))
    result = _run("--dir", str(dest), "verify")
    assert result.returncode == EXIT_MODEL
    assert "FSRCNN_x3: ok" in result.stdout and "ESPCN_x3: wrong checksum" in result.stdout
    assert "sr-models fetch ESPCN_x3" in result.stderr
    named_missing = _run("--dir", str(dest), "verify", "EDSR_x3")
    assert named_missing.returncode == EXIT_MODEL and "EDSR_x3: missing" in named_missing.stdout


def test_unknown_model_name_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("--dir", str(tmp_path), "fetch", "EDSR_x5")
    assert result.returncode == EXIT_USAGE
    assert "unknown model 'EDSR_x5'" in result.stderr and "EDSR_x3" in result.stderr


def test_list_shows_every_model_and_what_is_present(tmp_path: Path, shared_models: Path) -> None:
    shutil.copy(shared_models / "ESPCN_x4.pb", tmp_path)
    result = _run("--dir", str(tmp_path), "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["models"]}
    assert {"EDSR_x2", "EDSR_x3", "EDSR_x4", "FSRCNN-small_x3", "LapSRN_x8"} <= set(rows)
    assert rows["ESPCN_x4"]["status"] == "present" and rows["EDSR_x3"]["status"] == "missing"
    assert rows["EDSR_x3"]["default"] and not rows["EDSR_x3"]["installed"] and rows["ESPCN_x4"]["installed"]
    text = _run("--dir", str(tmp_path), "list").stdout.splitlines()
    espcn = next(line for line in text if "ESPCN_x4" in line)
    edsr = next(line for line in text if "EDSR_x3" in line)
    assert espcn.rstrip().endswith("installed") and "(default)" not in espcn
    assert "not installed" in edsr and "(default)" in edsr
    assert any("sr-models fetch EDSR_x3" in line for line in text)


def test_list_and_verify_follow_the_default_from_the_environment(tmp_path: Path, shared_models: Path) -> None:
    shutil.copy(shared_models / "ESPCN_x4.pb", tmp_path)
    env = _env(SR_MODEL_PATH=str(tmp_path / "ESPCN_x4.pb"))
    rows = {r["name"]: r for r in json.loads(_run("--dir", str(tmp_path), "list", "--json", env=env).stdout)["models"]}
    assert rows["ESPCN_x4"]["default"] and not rows["EDSR_x3"]["default"]
    assert _run("--dir", str(tmp_path), "verify", env=env).returncode == 0


def test_verify_fails_when_nothing_is_installed(tmp_path: Path) -> None:
    result = _run("--dir", str(tmp_path), "verify")
    assert result.returncode == EXIT_MODEL
    assert "default model" in result.stderr and "sr-models fetch EDSR_x3" in result.stderr


def test_manifest_matches_the_real_model_files(shared_models: Path) -> None:
    entries = load_manifest()
    for path in sorted(shared_models.glob("*.pb")):
        entry = find_entry(path.stem, entries)
        git_sha1, sha256 = file_digests(path)
        assert (path.stat().st_size, git_sha1, sha256) == (entry.bytes, entry.git_sha1, entry.sha256), path.name
        assert entry.url.endswith("/" + path.name) and entry.url.startswith("https://raw.githubusercontent.com/")
    edsr = {e.name: e for e in entries if e.algo == "edsr"}
    assert sorted(edsr) == ["EDSR_x2", "EDSR_x3", "EDSR_x4"]
    assert edsr["EDSR_x3"].bytes == 38524784 and edsr["EDSR_x3"].git_sha1 == "9b9082ceca0d5a2fc6d6bae7456e2c7934b3aa4d"


def test_git_blob_sha1_is_what_git_computes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello\n")
    # `git hash-object` of "hello\n"
    assert file_digests(path) == ("ce013625030ba8dba906f756967f9e9ca394464a", hashlib.sha256(b"hello\n").hexdigest())


def test_default_model_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SR_MODEL_PATH", raising=False)
    monkeypatch.delenv("SR_MODELS_DIR", raising=False)
    assert default_model_path() == REPO_ROOT / "models" / "EDSR_x3.pb"
    monkeypatch.setenv("SR_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path and default_model_path() == tmp_path / "EDSR_x3.pb"
    monkeypatch.setenv("SR_MODEL_PATH", str(tmp_path / "ESPCN_x3.pb"))
    assert default_model_path() == tmp_path / "ESPCN_x3.pb"


def test_real_esrgan_entries_are_checked_by_sha256(mirror, tmp_path: Path) -> None:
    entries = {e.name: e for e in load_manifest()}
    expected = {
        "RealESRGAN_x4plus": ("v0.1.0", 67040989, "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"),
        "RealESRGAN_x2plus": ("v0.2.1", 67061725, "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"),
        "realesr-general-x4v3": ("v0.2.5.0", 4885111, "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292"),
        "realesr-general-wdn-x4v3": ("v0.2.5.0", 4885111, "1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca"),
    }
    for name, (release, size, sha256) in expected.items():
        entry = entries[name]
        assert entry.url == f"https://github.com/xinntao/Real-ESRGAN/releases/download/{release}/{name}.pth"
        assert (entry.file, entry.bytes, entry.sha256, entry.git_sha1) == (f"{name}.pth", size, sha256, None)
    # The right size with other bytes: the SHA-256 tells.
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "realesr-general-x4v3.pth").write_bytes(b"\0" * 4885111)
    result = _run("--dir", str(dest), "verify", "realesr-general-x4v3")
    assert result.returncode == EXIT_MODEL and "wrong checksum (SHA-256" in result.stdout
    # A mirror serving something else under the name: refused, nothing kept.
    base_url, served, _ = mirror
    (served / "realesr-general-x4v3.pth").write_bytes(b"\0" * 4885111)
    fresh = tmp_path / "fresh"
    result = _run("--dir", str(fresh), "fetch", "realesr-general-x4v3.pth", "--base-url", base_url)
    assert result.returncode != 0 and "SHA-256" in result.stderr
    assert [n for n in _leftovers(fresh) if not n.startswith(".")] == []


def test_the_face_files_are_in_the_catalog_and_fetched_only_when_asked(tmp_path: Path) -> None:
    entries = {e.name: e for e in load_manifest()}
    gfpgan, yunet = entries["GFPGANv1.4"], entries["yunet"]
    assert (gfpgan.file, gfpgan.bytes, gfpgan.purpose) == ("GFPGANv1.4.pth", 348_632_874, "faces")
    assert gfpgan.sha256 == "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"
    assert gfpgan.url == "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
    assert (yunet.file, yunet.bytes, yunet.licence) == ("face_detection_yunet_2023mar.onnx", 232_589, "MIT")
    assert yunet.sha256 == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    # `make run` fetches its MODELS only: never the 349 MB face restorer.
    make_models = next(line for line in (REPO_ROOT / "Makefile").read_text().splitlines() if line.startswith("MODELS ?="))
    assert "GFPGAN" not in make_models and "yunet" not in make_models

    listed = _run("--dir", str(tmp_path), "list")
    assert listed.returncode == 0, listed.stderr
    line = listed.stdout.splitlines()
    at = next(i for i, text in enumerate(line) if "GFPGANv1.4" in text)
    assert "(faces)" in line[at] and "not installed" in line[at]
    assert "Apache-2.0" in line[at + 1] and "non-commercial" in line[at + 1] and "StyleGAN2" in line[at + 1]
    rows = {r["name"]: r for r in json.loads(_run("--dir", str(tmp_path), "list", "--json").stdout)["models"]}
    assert rows["GFPGANv1.4"]["purpose"] == "faces" and "non-commercial" in rows["GFPGANv1.4"]["licence"]["note"]


def test_a_face_file_is_checked_by_its_sha256(mirror, tmp_path: Path) -> None:
    """The face files are release assets with no git blob id: their SHA-256 alone must refuse a wrong copy."""
    base_url, served, _ = mirror
    (served / "face_detection_yunet_2023mar.onnx").write_bytes(b"\0" * 232_589)
    dest = tmp_path / "models"
    result = _run("--dir", str(dest), "fetch", "yunet", "--base-url", base_url)
    assert result.returncode == EXIT_MODEL and "SHA-256" in result.stderr, result.stderr
    assert _leftovers(dest) == []


def test_fetch_tries_every_model_and_sums_up_what_failed(mirror, tmp_path: Path, shared_models: Path) -> None:
    """LapSRN_x8 is not on the mirror and comes first; the two that are still come in, and the summary says how
    to bring in the missing one."""
    base_url, _, server = mirror
    dest = tmp_path / "models"
    dest.mkdir()
    shutil.copy(shared_models / "ESPCN_x3.pb", dest)
    result = _run("--dir", str(dest), "fetch", "LapSRN_x8", "ESPCN_x2", "ESPCN_x3", "FSRCNN_x3", "--base-url", base_url)
    assert result.returncode == EXIT_MODEL, result.stderr
    assert _leftovers(dest) == ["ESPCN_x2.pb", "ESPCN_x3.pb", "FSRCNN_x3.pb"]
    assert sorted(server.requests) == ["/models/ESPCN_x2.pb", "/models/FSRCNN_x3.pb", "/models/LapSRN_x8.pb"]
    err = result.stderr
    assert "HTTP 404" in err
    assert "fetched: ESPCN_x2, FSRCNN_x3" in err and "already present: ESPCN_x3" in err and "failed: LapSRN_x8" in err
    assert f"  LapSRN_x8: {base_url}/LapSRN_x8.pb" in err
    assert "--base-url URL" in err and "SR_MODELS_BASE_URL" in err and f"copy the files into {dest}" in err
    assert "sr-models verify LapSRN_x8" in err
    assert err.rstrip().endswith("1 of 4 models could not be fetched: LapSRN_x8"), err


def test_a_mirror_folder_can_be_read_without_a_server(tmp_path: Path, shared_models: Path) -> None:
    folder = tmp_path / "mirror"
    folder.mkdir()
    shutil.copy(shared_models / "ESPCN_x2.pb", folder)
    dest = tmp_path / "models"
    result = _run("--dir", str(dest), "fetch", "ESPCN_x2", "FSRCNN_x2", "--base-url", folder.as_uri())
    assert result.returncode == EXIT_MODEL, result.stderr
    assert _leftovers(dest) == ["ESPCN_x2.pb"]
    assert "fetched: ESPCN_x2" in result.stderr and f"  FSRCNN_x2: {folder.as_uri()}/FSRCNN_x2.pb" in result.stderr
    again = _run("--dir", str(dest), "fetch", "ESPCN_x2", "--base-url", folder.as_uri())
    assert again.returncode == 0 and "failed" not in again.stderr, again.stderr
