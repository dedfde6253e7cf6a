"""`make run` on a machine that cannot reach the model sources, with `.pb` models copied into the models folder:
the terminal says what was fetched and what was not, and the page enlarges with the models that are there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from infer import REPO_ROOT
from tests.web.client import HttpClient

pytestmark = pytest.mark.slow

COPIED = ("FSRCNN_x3.pb", "ESPCN_x2.pb", "ESPCN_x4.pb", "LapSRN_x8.pb", "LapSRN_x4.pb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _venv_of_this_checkout(folder: Path) -> Path:
    """A VENV for the Makefile whose commands run this checkout's code with this interpreter, its setup
    marked done (setting up takes minutes and is not what is tested here)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    commands = {"sr-models": "from infer.models import main", "sr-web": "from web.__main__ import main"}
    for name, source in commands.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO_ROOT}" exec "{sys.executable}" -c '
                          f'"import sys; {source}; sys.exit(main())" "$@"\n')
        script.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    (folder / ".installed").touch()
    return folder


def test_make_run_offline_says_what_it_fetched_and_enlarges_with_the_copied_models(
    shared_models: Path, photos, tmp_path: Path
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    models = tmp_path / "models"
    models.mkdir()
    for name in COPIED:
        shutil.copy(shared_models / name, models)
    venv = _venv_of_this_checkout(tmp_path / "venv")
    port = _free_port()
    closed = _free_port()  # nothing listens there: every download is refused at once
    proxy = f"http://127.0.0.1:{closed}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_") and k.lower() not in ("no_proxy",)}
    env.update(SR_MODELS_DIR=str(models), SR_DATA_DIR=str(tmp_path / "data"),
               HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile"), "-o", f"{venv}/.installed", "run",
         f"VENV={venv}", f"PORT={port}", "HOST=127.0.0.1"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(make.stdout or []), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/api/options", timeout=5) as reply:
                    options = json.load(reply)
                break
            except OSError:
                assert make.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.3)
        output = "".join(lines)
        # The terminal: what was there, what failed with the URL tried, and how to bring it in.
        assert "already present: FSRCNN_x3, ESPCN_x2, ESPCN_x4, LapSRN_x8" in output, output
        assert "failed: EDSR_x3, realesr-general-x4v3, realesr-general-wdn-x4v3" in output, output
        assert "https://raw.githubusercontent.com/Saafke/EDSR_Tensorflow/master/models/EDSR_x3.pb" in output
        assert "--base-url" in output and "warning: not every model" in output
        assert "Traceback" not in output

        # The page offers what is installed and a photo is enlarged through the server.
        assert options["available"] is True, options
        offered = {m["id"] for m in options["models"]}
        assert {"FSRCNN_x3", "ESPCN_x2", "ESPCN_x4", "LapSRN_x8", "LapSRN_x4"} <= offered, offered
        client = HttpClient(url)
        queued = client.upload(photos.small_png, fields={"kind": "faithful", "scale": "4"})
        assert queued.status == 202, queued.body
        done = client.wait(queued.json()["id"])
        assert done["status"] == "done", done
        assert (done["model"], done["scale"]) == ("LapSRN_x4", 4)
        assert done["output"]["download_name"] == "photo_x4_LapSRN_x4.png"
        assert not (REPO_ROOT / "models" / "EDSR_x3.pb.part").exists()
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
