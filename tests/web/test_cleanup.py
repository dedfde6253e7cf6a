"""Time-to-live clean-up done by the service itself, and when uploads are removed or kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.web.conftest import Photos, StartServer, wait_until


def test_expired_jobs_and_stray_files_are_removed(start_server: StartServer, photos: Photos, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    stray = data / "uploads" / "left-over.png"
    stray.write_bytes(b"old")
    old = time.time() - 3600
    os.utime(stray, (old, old))
    fresh_stray = data / "results" / "someone-elses.txt"
    fresh_stray.parent.mkdir()
    fresh_stray.write_text("new")
    keep = data / "uploads" / ".gitkeep"
    keep.touch()
    os.utime(keep, (old, old))

    ttl = 30.0  # a sweep every 7.5 s
    server = start_server(data_dir=data, result_ttl_h=ttl / 3600)
    client = server.client()
    job = client.wait(client.upload(photos.small_png).json()["id"])
    assert job["status"] == "done"
    result = data / "results" / f"{job['id']}.png"
    assert result.is_file()
    assert not stray.exists(), "a file older than the TTL was left in uploads/"

    # The job finished a minute ago as far as the sweep can tell; the stray file is new.
    os.utime(fresh_stray)
    assert server.services.store.update(job["id"], finished_at=time.time() - 2 * ttl)
    wait_until(lambda: client.get(f"/api/jobs/{job['id']}").status == 404, timeout=60, what="the job to expire")
    assert not result.exists()
    assert not (data / "state" / "logs" / f"{job['id']}.log").exists()
    assert keep.exists()
    assert fresh_stray.exists(), "a file younger than the TTL went"
    aged = time.time() - 2 * ttl
    os.utime(fresh_stray, (aged, aged))
    wait_until(lambda: not fresh_stray.exists(), timeout=60, what="the stray result file to expire")


def test_upload_is_kept_only_when_asked(start_server: StartServer, photos: Photos) -> None:
    for keep in (False, True):
        server = start_server(keep_uploads=keep)
        client = server.client()
        job = client.wait(client.upload(photos.small_png).json()["id"])
        assert job["status"] == "done"
        assert (server.data_dir / "uploads" / f"{job['id']}.png").exists() is keep
