"""A full disk: the data folder on a small tmpfs that fills up. The person reads a plain message, the remedy goes to
the log, /healthz turns unhealthy below SR_MIN_FREE_MB, nothing partial is left, and freeing space is enough."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.reliability.conftest import Observe, assert_settled, leftovers, wait_idle
from tests.reliability.inputs import encode, rgb
from tests.reliability.outcomes import outcome
from tests.web.conftest import StartServer, wait_until
from tests.web.server import worker_processes
from web.guards.space import OUT_OF_SPACE_MESSAGE

GROUP = "Faults"
DISK_MB = 8
MIN_FREE_MB = 1.0
MB = 1024 * 1024
SMALL = encode(rgb(24, 18, seed=41), "PNG")
RECOVERS = "yes; once space is freed /healthz is 200 and the next job is done, no restart"


def _unavailable(reason: str) -> None:
    if os.environ.get("SR_TEST_STRICT") == "1":
        pytest.fail(f"{reason}; SR_TEST_STRICT=1 makes this an error")
    pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A DISK_MB tmpfs mounted for this test (root only); unmounted after the servers have stopped."""
    where = tmp_path / "disk"
    where.mkdir()
    if shutil.which("mount") is None:
        _unavailable("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        _unavailable(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); it needs root")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill_until_free(disk: Path, free_mb: float) -> None:
    """Grows `disk/filler` (or shrinks it) until the filesystem has about `free_mb` MB free."""
    filler = disk / "filler"
    size = filler.stat().st_size if filler.exists() else 0
    target = size + shutil.disk_usage(disk).free - int(free_mb * MB)
    assert target >= 0, f"cannot leave {free_mb} MB free on a {DISK_MB} MB disk"
    with open(filler, "ab") as out:
        out.truncate(0)
        out.write(b"\0" * target)  # tmpfs allocates what is written, not what is truncated to
    assert abs(shutil.disk_usage(disk).free / MB - free_mb) < 0.1


def _fill_completely(disk: Path) -> None:
    """Writes until the filesystem refuses more: nothing can grow, the job database included."""
    chunk = 65536
    with open(disk / "filler", "ab", buffering=0) as out:
        try:
            for _ in range(DISK_MB * MB // chunk + 1):
                out.write(b"\0" * chunk)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
    assert shutil.disk_usage(disk).free < chunk


def _free_mb(disk: Path) -> float:
    return shutil.disk_usage(disk).free / MB


def test_a_full_disk_is_told_plainly_and_freeing_space_is_enough(
    small_disk: Path, start_server: StartServer, slow_photo: bytes, observe: Observe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = start_server(small_disk / "data", min_free_mb=MIN_FREE_MB, result_cache="off")
    client = server.client()
    health = client.get("/healthz")
    assert health.status == 200 and health.json()["disk"]["ok"] is True
    assert health.json()["disk"]["free_mb"] == pytest.approx(_free_mb(small_disk), abs=0.5)

    # 1. Above the threshold, but the result (1800x1200, about 2.7 MB as PNG) does not fit: the worker fails
    # writing it (exit 7); the person reads the plain message, the worker's own goes to the logs.
    _fill_until_free(small_disk, 1.6)
    failed = client.wait(client.upload(slow_photo, filename="coffee.png").json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "output_error", "message": OUT_OF_SPACE_MESSAGE}
    assert server.services.store.get(failed["id"]).exit_code == 7
    job_log = (server.data_dir / "state" / "logs" / f"{failed['id']}.log").read_text(errors="replace")
    assert "No space left on device" in job_log
    assert any("No space left on device" in r.getMessage() and failed["id"] in r.getMessage()
               for r in caplog.records if r.levelno >= logging.ERROR)
    wait_idle(server)
    assert leftovers(server.data_dir) == []
    observe(GROUP, f"data folder's filesystem full while the worker writes the result ({DISK_MB} MB tmpfs)",
            http=outcome("job failed output_error (worker exit 7)", failed["error"]["message"]),
            left="HTTP: nothing (partial result and upload removed); the worker's message in the job log "
                 "and the service log", answering=RECOVERS)

    # 2. The upload itself fills the disk while it streams in: 507, and no partial file.
    _fill_until_free(small_disk, 1.2)
    noise = encode(Image.fromarray(np.random.default_rng(7).integers(0, 256, (800, 900, 3), np.uint8)), "PNG")
    assert len(noise) > 2 * MB
    jobs_before = server.services.store.counts()
    refused = client.upload(noise, filename="noise.png")
    assert refused.status == 507, refused.body
    assert refused.json()["error"] == {"code": "out_of_space", "message": OUT_OF_SPACE_MESSAGE}
    assert sorted(p.name for p in (server.data_dir / "uploads").iterdir()) == []
    assert server.services.store.counts() == jobs_before
    assert _free_mb(small_disk) == pytest.approx(1.2, abs=0.1)
    assert any("filled up while it was saved" in r.getMessage() and "SR_DATA_DIR" in r.getMessage()
               for r in caplog.records)
    observe(GROUP, "data folder's filesystem fills up while an upload streams in",
            http=outcome(f"HTTP {refused.status} out_of_space (no job)", refused.json()["error"]["message"]),
            left="HTTP: nothing in uploads/", answering=RECOVERS)

    # 3. Below SR_MIN_FREE_MB: /healthz says so, and an upload is refused before anything is written.
    _fill_until_free(small_disk, 0.5)
    health = client.get("/healthz")
    assert health.status == 503
    body = health.json()
    assert body["status"] == "unhealthy"
    assert body["disk"] == {"free_mb": pytest.approx(0.5, abs=0.1), "min_free_mb": MIN_FREE_MB, "ok": False}
    assert "SR_MIN_FREE_MB" in body["reason"] and str(small_disk) not in health.body.decode()
    used = shutil.disk_usage(small_disk).used
    refused = client.upload(SMALL, filename="small.png")
    assert refused.status == 507
    assert refused.json()["error"] == {"code": "out_of_space", "message": OUT_OF_SPACE_MESSAGE}
    assert refused.header("Retry-After") == "60"
    assert shutil.disk_usage(small_disk).used == used
    assert sorted(p.name for p in (server.data_dir / "uploads").iterdir()) == []
    assert any("SR_MIN_FREE_MB" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    metrics = client.get("/metrics").body.decode()
    assert 'sr_uploads_rejected_total{status="507"} 2.0' in metrics
    observe(GROUP, f"data folder below SR_MIN_FREE_MB ({MIN_FREE_MB:g} MB)",
            http=outcome(f"HTTP {refused.status} out_of_space (no job, nothing read)",
                         refused.json()["error"]["message"]) + f"; /healthz {health.status}: \"{body['reason']}\"",
            left="nothing", answering="/healthz 503 while below; " + RECOVERS)

    # 4. Space freed: healthy again and jobs run, without a restart.
    (small_disk / "filler").unlink()
    assert client.get("/healthz").status == 200
    done = client.wait(client.upload(slow_photo, filename="coffee.png").json()["id"])
    assert done["status"] == "done", done
    assert done["output"]["width"] == 1800
    assert_settled(server)


@pytest.mark.parametrize("min_free_mb, refused", [(1e12, True), (0, False)])
def test_the_threshold_is_sr_min_free_mb_and_0_turns_it_off(
    start_server: StartServer, min_free_mb: float, refused: bool
) -> None:
    # Any disk has less than a million terabytes free; with 0 even a full one would take uploads.
    client = start_server(min_free_mb=min_free_mb).client()
    health = client.get("/healthz")
    assert (health.status, health.json()["disk"]["ok"]) == ((503, False) if refused else (200, True))
    reply = client.upload(SMALL)
    assert reply.status == (507 if refused else 202), reply.body


def test_a_disk_that_fills_completely_while_a_job_runs_fails_the_job_and_the_service_recovers(
    small_disk: Path, start_server: StartServer, edsr_model_slow: Path, slow_photo: bytes, observe: Observe
) -> None:
    # Filled from outside (another program) while the worker computes: the worker cannot write the result,
    # and the job database may not be able to grow either.
    server = start_server(small_disk / "data", model_path=edsr_model_slow, min_free_mb=MIN_FREE_MB,
                          result_cache="off", job_timeout_s=120)
    client = server.client()
    with Image.open(io.BytesIO(slow_photo)) as coffee:
        photo = encode(coffee.crop((0, 0, 300, 200)), "PNG")  # seconds of work with this model
    job = client.upload(photo, filename="coffee.png").json()
    client.wait(job["id"], until=("running",), timeout=60)
    _fill_completely(small_disk)
    assert client.get("/healthz").status == 503
    refused = client.upload(SMALL)
    assert refused.status == 507
    wait_until(lambda: not worker_processes(server.data_dir), timeout=120, what="the worker to end")
    # Its failure may not be recordable yet (the row cannot grow); it is, once space is freed.
    time.sleep(1.0)
    (small_disk / "filler").unlink()
    failed = client.wait(job["id"], timeout=30)
    assert failed["status"] == "failed", failed
    assert failed["error"]["message"] == OUT_OF_SPACE_MESSAGE
    assert client.get("/healthz").status == 200
    done = client.wait(client.upload(SMALL).json()["id"], timeout=120)
    assert done["status"] == "done", done
    assert_settled(server)
    observe(GROUP, "data folder's filesystem filled completely by another program while a job runs (the job "
            "database cannot grow either)",
            http=outcome("job failed output_error, recorded once space is freed", failed["error"]["message"])
            + f"; uploads meanwhile HTTP {refused.status} out_of_space",
            left="HTTP: nothing (partial result and upload removed)", answering=RECOVERS)
