"""A service process killed outright and started again: finished results stay, interrupted jobs fail clearly,
queued jobs run, and no orphaned worker survives."""

from __future__ import annotations

from pathlib import Path

from tests.web.conftest import Photos, wait_until
from tests.web.server import start_service_process, worker_processes
from web.runner import RESTART_MESSAGE


def test_restart_keeps_results_fails_interrupted_and_requeues_waiting(
    tmp_path: Path, photos: Photos, edsr_model_slow: Path
) -> None:
    data = tmp_path / "data"
    env = {"SR_DATA_DIR": str(data), "SR_MODEL_PATH": str(edsr_model_slow), "SR_CONCURRENCY": "1"}
    log = tmp_path / "service.log"
    first = start_service_process(log, env)
    second = None
    try:
        client = first.client()
        finished = client.upload(photos.small_png, filename="first.png").json()
        assert client.wait(finished["id"])["status"] == "done"
        result = client.get(f"/api/jobs/{finished['id']}/result").body

        interrupted = client.upload(photos.slow_png, filename="slow.png").json()
        waiting = client.upload(photos.small_png, filename="waiting.png").json()
        wait_until(lambda: client.job(interrupted["id"])["tiles"]["total"] > 0, what="the slow job to start")
        assert client.job(waiting["id"])["status"] == "queued"

        first.kill()
        # The worker leads its own process group, so it outlives a killed service...
        orphans = worker_processes(interrupted["id"])
        assert orphans, "expected the running worker to outlive the killed service"

        second = start_service_process(log, env)
        client = second.client()
        # ...until the new service finds it and ends it.
        assert worker_processes(interrupted["id"]) == []

        again = client.job(finished["id"])
        assert again["status"] == "done"
        assert client.get(f"/api/jobs/{finished['id']}/result").body == result

        failed = client.job(interrupted["id"])
        assert failed["status"] == "failed"
        assert failed["error"] == {"code": "interrupted", "message": RESTART_MESSAGE}
        assert not [p for p in (data / "results").iterdir() if interrupted["id"] in p.name]

        assert client.wait(waiting["id"])["status"] == "done"
    finally:
        first.terminate()
        if second is not None:
            second.terminate()
    assert worker_processes(data) == []
