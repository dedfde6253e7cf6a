"""The one restart scenario, for every backend: a service with a done job, a running one and queued ones is
stopped (SIGTERM) or killed (SIGKILL) and started again on the same data folder. Finished results stay
byte for byte, the interrupted job fails with the message for how the service ended, queued jobs run, no
process of the interrupted job survives, nothing of it is left in results/, and the next upload runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from tests.web.conftest import wait_until
from tests.web.server import start_service_process, worker_processes
from web.jobs.outcomes import RESTART_MESSAGE, STOP_MESSAGE

Held = TypeVar("Held")


@dataclass
class Backend(Generic[Held]):
    """How the scenario finds and checks the interrupted job's processes on one backend."""

    env: dict[str, str]  # SR_* settings besides the data folder and the model
    locate: Callable[[Path, str], Held]  # (data folder, job id) -> the running job's processes
    after_stop: Callable[[Held, str], None]  # checks right after the first service ended (SIGTERM or SIGKILL)
    ended: Callable[[Held, str], None]  # checks, once the second service is up, that they are gone
    timeout: float = 30.0


@dataclass
class Restarted:
    interrupted: dict[str, Any]  # the running job as the second service reports it
    queued: list[dict[str, Any]]


def expected_error(stop: str) -> dict[str, str]:
    return {"code": "interrupted", "message": STOP_MESSAGE if stop == "SIGTERM" else RESTART_MESSAGE}


def restart_with_jobs(tmp_path: Path, model: Path, small: bytes, slow: bytes, backend: Backend[Any], stop: str,
                      queued: int = 2) -> Restarted:
    """Runs the scenario and checks what every backend must do; returns the interrupted and queued jobs."""
    data = tmp_path / "data"
    env = {"SR_DATA_DIR": str(data), "SR_MODEL_PATH": str(model), "SR_CONCURRENCY": "1", **backend.env}
    log = tmp_path / "service.log"
    timeout = backend.timeout
    first = start_service_process(log, env, timeout=timeout)
    second = None
    try:
        client = first.client()
        wait_until(lambda: client.get("/healthz").status == 200, timeout=timeout, what="the service to be ready")
        finished = client.wait(client.upload(small, filename="finished.png").json()["id"], timeout=timeout)
        assert finished["status"] == "done", finished
        result = client.get(finished["links"]["result"]).body
        running = client.upload(slow, filename="running.png").json()
        waiting = [client.upload(small, filename=f"queued{i}.png").json() for i in range(queued)]
        wait_until(lambda: client.job(running["id"])["tiles"]["total"] > 0, timeout=timeout,
                   what="the slow job to start")
        held = backend.locate(data, running["id"])
        assert [client.job(job["id"])["status"] for job in waiting] == ["queued"] * queued
        if stop == "SIGTERM":
            first.terminate()
        else:
            first.kill()
        backend.after_stop(held, stop)

        second = start_service_process(log, env, timeout=timeout)
        client = second.client()
        backend.ended(held, stop)
        assert client.get(finished["links"]["result"]).body == result
        interrupted = client.wait(running["id"], timeout=timeout)
        assert interrupted["status"] == "failed"
        assert interrupted["error"] == expected_error(stop)
        assert not [p.name for p in (data / "results").iterdir() if running["id"] in p.name]
        jobs = [client.wait(job["id"], timeout=timeout) for job in waiting]
        assert [job["status"] for job in jobs] == ["done"] * queued
        wait_until(lambda: client.get("/healthz").status == 200, timeout=timeout, what="the new service to be ready")
        after = client.upload(small, filename="after.png").json()["id"]
        assert client.wait(after, timeout=timeout)["status"] == "done"
    finally:
        first.terminate()
        if second is not None:
            second.terminate()
    assert worker_processes(data) == []
    return Restarted(interrupted, jobs)
