"""A plain `pip install .` in a fresh virtual environment: the packaged catalog, data folders outside
site-packages, and `sr-infer` without the worker's libraries saying what to install."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infer import REPO_ROOT

pytestmark = pytest.mark.slow

FRONT_END = ["Pillow>=10.0,<14", "psutil>=5.9", "flask>=3.0,<4", "gunicorn>=22", "prometheus-client>=0.20"]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the project's wheel installed without its dependencies."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    # A copy of the tracked files, so that the build leaves nothing in the checkout.
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "wheel", source, cwd=root)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "wheel").glob("photo_upscaler-*.whl")
    env_dir = root / "venv"
    made = run(sys.executable, "-m", "venv", env_dir, cwd=root)
    assert made.returncode == 0, made.stderr
    assert "include-system-site-packages = false" in (env_dir / "pyvenv.cfg").read_text()
    installed = run(env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=root)
    assert installed.returncode == 0, installed.stderr
    return env_dir


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SR_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def site_packages(env_dir: Path) -> Path:
    out = run(env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=env_dir)
    return Path(out.stdout.strip())


def test_sr_models_reads_the_packaged_catalog_and_keeps_models_in_the_current_folder(
    venv: Path, shared_models: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    listed = run(venv / "bin" / "sr-models", "list", "--json", cwd=work, env=clean_env())
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert Path(body["dir"]) == work / "models"
    assert not Path(body["dir"]).is_relative_to(site_packages(venv))
    assert {"EDSR_x3", "FSRCNN_x3"} <= {m["name"] for m in body["models"]}

    # Fetched from a mirror folder, the file lands there; SR_MODELS_DIR still wins.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(shared_models / "FSRCNN_x3.pb", mirror)
    fetched = run(venv / "bin" / "sr-models", "fetch", "FSRCNN_x3", "--base-url", mirror.as_uri(), cwd=work, env=clean_env())
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert (work / "models" / "FSRCNN_x3.pb").is_file()
    elsewhere = tmp_path / "elsewhere"
    chosen = run(venv / "bin" / "sr-models", "list", "--json", cwd=work, env={**clean_env(), "SR_MODELS_DIR": str(elsewhere)})
    assert Path(json.loads(chosen.stdout)["dir"]) == elsewhere
    assert not any(p.name in ("models", "uploads", "results", "state") for p in site_packages(venv).iterdir())


def test_sr_infer_without_the_worker_libraries_says_what_to_install(venv: Path, tmp_path: Path) -> None:
    for args in (["--help"], ["--input", "a.png", "--output", "b.png"]):
        result = run(venv / "bin" / "sr-infer", *args, cwd=tmp_path, env=clean_env())
        assert result.returncode == 5, result.stderr
        assert "Traceback" not in result.stderr
        assert "pip install '.[worker]'" in result.stderr and "numpy" in result.stderr, result.stderr
        event = json.loads(result.stdout.splitlines()[-1])
        assert (event["event"], event["code"], event["exit_code"]) == ("error", "model_error", 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sr_web_keeps_its_data_in_the_current_folder(venv: Path, tmp_path: Path) -> None:
    deps = run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", *FRONT_END, cwd=tmp_path, timeout=300)
    if deps.returncode != 0:
        pytest.skip(f"the front end's libraries could not be installed here: {deps.stderr.strip()[-300:]}")
    assert run(venv / "bin" / "python", "-c", "import numpy", cwd=tmp_path).returncode != 0
    work = tmp_path / "work"
    work.mkdir()
    port = _free_port()
    server = subprocess.Popen([str(venv / "bin" / "sr-web"), "--host", "127.0.0.1", "--port", str(port)], cwd=work,
                              env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/options", timeout=5) as reply:
                    options = json.load(reply)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
                time.sleep(0.3)
        # No model yet: the page says so; the data folders are in the current folder, not in site-packages.
        assert options["available"] is False and options["fix_command"] == "sr-models fetch EDSR_x3"
        assert {"uploads", "results", "state"} <= {p.name for p in work.iterdir()}
        assert not any(p.name in ("uploads", "results", "state") for p in site_packages(venv).iterdir())
    finally:
        server.terminate()
        server.wait(timeout=30)
