"""Worker supervision seen from outside: the concurrency limit, killed workers, timeouts, a full queue, shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.web.conftest import Photos, StartServer, wait_until
from tests.web.server import worker_processes
from web.jobs.outcomes import STOP_MESSAGE


def _leftovers(folder: Path, job_id: str) -> list[str]:
    return [p.name for p in folder.iterdir() if job_id in p.name]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_never_more_workers_than_the_concurrency_limit(
    start_server: StartServer, photos: Photos, concurrency: int
) -> None:
    server = start_server(concurrency=concurrency)
    client = server.client()
    peak = 0
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, len(worker_processes(server.data_dir)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        ids = [client.upload(photos.small_png, filename=f"p{i}.png").json()["id"] for i in range(concurrency + 2)]
        jobs = [client.wait(job_id) for job_id in ids]
    finally:
        sampling = False
        sampler.join()
    assert [job["status"] for job in jobs] == ["done"] * len(ids)
    assert peak == concurrency, f"saw {peak} workers alive at once with SR_CONCURRENCY={concurrency}"
    # First in, first started. A job's start time is written after its worker is launched, outside the queue's
    # lock, so two jobs let go at once may record their starts in either order; what FIFO does fix is that a job
    # leaves the queue after every earlier one, so by its start all but `concurrency - 1` of those have finished.
    for index in range(concurrency, len(jobs)):
        finished = sorted(job["finished_at"] for job in jobs[:index])
        assert finished[index - concurrency] <= jobs[index]["started_at"], (index, jobs)


def test_worker_killed_mid_job_fails_the_job_and_the_next_one_runs(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow)
    client = server.client()
    job = client.upload(photos.slow_png, filename="slow.png").json()
    after = client.upload(photos.small_png).json()
    # Kill it once it has told us it started working on the photo.
    wait_until(lambda: client.job(job["id"])["tiles"]["total"] > 0, what="the start event")
    (worker,) = worker_processes(job["id"])
    worker.kill()

    failed = client.wait(job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_killed"
    assert "SIGKILL" in failed["error"]["message"] and "upload the photo again" in failed["error"]["message"]
    assert _leftovers(server.data_dir / "results", job["id"]) == []
    assert client.wait(after["id"])["status"] == "done"


def test_a_photo_in_one_window_shows_its_progress_before_it_ends(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    """The slow EDSR photo runs in one window: the job still moves from 0 towards 1 while the network runs."""
    client = start_server(model_path=edsr_model_slow).client()
    job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
    seen = wait_until(
        lambda: (lambda j: j if j["status"] == "running" and 0 < j["progress"] < 1 else None)(client.job(job_id)),
        interval=0.05, what="progress within the window")
    assert seen["tiles"] == {"done": 0, "total": 1}
    done = client.wait(job_id)
    assert done["status"] == "done" and done["progress"] == 1


def test_worker_past_its_timeout_is_killed_with_its_group(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, job_timeout_s=1.5)
    client = server.client()
    job = client.upload(photos.slow_png, filename="slow.png").json()
    workers = wait_until(lambda: worker_processes(job["id"]), what="the worker")
    # Freeze the worker so it cannot finish in time however fast this machine is.
    for worker in workers:
        try:
            worker.suspend()
        except psutil.NoSuchProcess:
            pass
    failed = client.wait(job["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "timeout",
        "message": "took longer than 1.5 seconds (SR_JOB_TIMEOUT_S) and was stopped; try a smaller photo",
    }
    assert worker_processes(job["id"]) == []
    assert _leftovers(server.data_dir / "results", job["id"]) == []
    assert 'sr_jobs_finished_total{outcome="timeout"} 1' in client.get("/metrics").body.decode()


def test_full_queue_answers_503_and_keeps_nothing(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, queue_size=1)
    client = server.client()
    running = client.upload(photos.slow_png).json()
    client.wait(running["id"], until=("running",))
    queued = client.upload(photos.small_png).json()
    reply = client.upload(photos.small_png)
    assert reply.status == 503
    assert reply.json()["error"]["code"] == "queue_full"
    assert reply.header("Retry-After") == "60"
    uploads = sorted(p.name.split(".")[0] for p in (server.data_dir / "uploads").iterdir())
    assert uploads == sorted([running["id"], queued["id"]])
    client.delete(f"/api/jobs/{running['id']}")


def test_shutdown_kills_running_workers_and_fails_their_jobs(
    start_server: StartServer, photos: Photos, edsr_model_slow: Path
) -> None:
    server = start_server(model_path=edsr_model_slow)
    client = server.client()
    job = client.upload(photos.slow_png).json()
    wait_until(lambda: worker_processes(job["id"]), what="the worker")
    server.stop()
    assert worker_processes(job["id"]) == []
    stored = server.services.store.get(job["id"])
    assert stored.state == "failed" and stored.error_message == STOP_MESSAGE
