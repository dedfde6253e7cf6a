"""Load on loopback against a real `python -m web`: the soak script in a reduced size (full size: bench/soak.py),
and the service's open files and memory staying flat over many requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from infer import REPO_ROOT
from tests.reliability.inputs import encode, rgb
from tests.web.server import start_service_process, worker_processes

SOAK = REPO_ROOT / "bench" / "soak.py"


def test_soak_reduced(tmp_path: Path, fsrcnn_model: Path) -> None:
    """12 uploads from 4 clients, 2 workers: all done, each result its own photo's, never more than 2 workers,
    memory within the script's stated margin, no worker left."""
    out = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--jobs", "12", "--clients", "4", "--concurrency", "2",
         "--model", str(fsrcnn_model), "--max-seconds", "90", "--json", str(out)],
        capture_output=True, text=True, timeout=150, cwd=REPO_ROOT, env=env,
    )
    assert out.is_file(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failures"] == [] and report["errors"] == 0, report["failures"]
    assert report["done"] == 12 and not report["timed_out"]
    assert 1 <= report["peak_workers"] <= 2
    assert report["workers_left"] == 0
    assert report["rss_after_mb"] - report["rss_before_mb"] <= report["rss_margin_mb"], report
    assert report["fds_after"] - report["fds_before"] <= report["fds_margin"], report
    assert report["ok"] and proc.returncode == 0, proc.stderr[-3000:]


def test_many_requests_leave_no_open_files_behind(tmp_path: Path, fsrcnn_model: Path) -> None:
    """Every request runs on a new thread of the threaded server; what a thread opens must close with it."""
    data = tmp_path / "data"
    service = start_service_process(tmp_path / "service.log",
                                    {"SR_DATA_DIR": str(data), "SR_MODEL_PATH": str(fsrcnn_model)})
    try:
        client = service.client()
        job = client.wait(client.upload(encode(rgb(16, 12), "PNG")).json()["id"])
        assert job["status"] == "done"
        proc = psutil.Process(service.proc.pid)
        for _ in range(20):
            client.get(f"/api/jobs/{job['id']}")
        before = proc.num_fds()
        for _ in range(300):
            assert client.get(f"/api/jobs/{job['id']}").status == 200
        # The last request's thread may still be on its way out.
        deadline = time.monotonic() + 3
        while proc.num_fds() - before > 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.num_fds() - before <= 4, f"{proc.num_fds() - before} more open files after 300 requests"
    finally:
        service.terminate()
    assert worker_processes(data) == []
