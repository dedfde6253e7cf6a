"""The cluster's head lost mid-job: the job fails with cluster_lost, the service stays up and says why, refuses
uploads with 503, and runs jobs again once a cluster answers at the same address, without a restart."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.ray.conftest import RayCluster, driver_processes, requires_ray, start_cluster
from tests.web.conftest import Photos, wait_until
from tests.web.server import start_service_process
from web.jobs.outcomes import CLUSTER_LOST_MESSAGE

pytestmark = [pytest.mark.slow, requires_ray]

# Generous for a loaded 2-core machine: a Ray worker process and the worker's imports for every job.
JOB_TIMEOUT = 120.0
# From the head's loss to the job's failure: measured about 12 s here (Ray ends the driver process when its
# raylet, the head's, goes); attached to another node's raylet, Ray ends it after 60 s without the GCS.
LOST_TIMEOUT = 90.0
# Until a fresh driver has connected to the new head: restart backoff (at most 30 s) plus its start.
RECONNECT_TIMEOUT = 150.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(cluster: RayCluster) -> None:
    for node in list(cluster.gpu_nodes):
        cluster.cluster.remove_node(node, allow_graceful=False)
    cluster.gpu_nodes.clear()
    cluster.cluster.shutdown()


def test_head_lost_mid_job_fails_it_keeps_the_service_up_and_a_new_head_runs_jobs_again(
    ray_models: Path, edsr_model_slow: Path, photos: Photos, tmp_path: Path
) -> None:
    port = _free_port()
    first: RayCluster | None = start_cluster(ray_models, gpu_nodes=1, port=port)
    second: RayCluster | None = None
    data = tmp_path / "data"
    log_path = tmp_path / "service.log"
    env = {"SR_DATA_DIR": str(data), "SR_MODEL_PATH": str(edsr_model_slow), "SR_BACKEND": "ray",
           "SR_RAY_ADDRESS": first.address}
    service = start_service_process(log_path, env, timeout=60)
    try:
        client = service.client()
        wait_until(lambda: client.get("/healthz").status == 200, timeout=RECONNECT_TIMEOUT, interval=0.5,
                   what="the service to connect")
        (driver,) = driver_processes(service.proc.pid)
        job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
        wait_until(lambda: client.job(job_id)["tiles"]["total"] > 0, timeout=JOB_TIMEOUT, interval=0.2,
                   what="the job to start on the node")

        assert first is not None
        first.cluster.remove_node(first.cluster.head_node, allow_graceful=False)
        lost_at = time.monotonic()
        failed = client.wait(job_id, timeout=LOST_TIMEOUT)
        took = time.monotonic() - lost_at
        assert failed["status"] == "failed", failed
        assert failed["error"] == {"code": "cluster_lost", "message": CLUSTER_LOST_MESSAGE}
        assert took < LOST_TIMEOUT
        assert not [p for p in (data / "results").iterdir() if job_id in p.name]

        # The service is up, answers, says why, and refuses uploads with 503 without keeping anything.
        assert service.proc.poll() is None
        health = client.get("/healthz")
        assert health.status == 503
        backend = health.json()["backend"]
        assert backend["ok"] is False and "Ray cluster" in backend["reason"], backend
        reply = client.upload(photos.small_png, filename="meanwhile.png")
        assert reply.status == 503, reply.body
        assert reply.json()["error"]["code"] == "unavailable"
        assert [p.name for p in (data / "uploads").iterdir() if p.name != ".gitkeep"] == []
        text = log_path.read_text(errors="replace")
        assert "running job(s) failed with cluster_lost" in text and job_id in text
        assert "starting a new one" in text
        # The lost driver has ended, and no other is left behind.
        wait_until(lambda: not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE, timeout=30,
                   what="the lost driver to end")

        _stop(first)
        first = None
        second = start_cluster(ray_models, gpu_nodes=1, port=port)
        assert second.address == env["SR_RAY_ADDRESS"]
        wait_until(lambda: client.get("/healthz").status == 200, timeout=RECONNECT_TIMEOUT, interval=0.5,
                   what="the service to connect to the new head")
        assert service.proc.poll() is None
        after = client.upload(photos.small_png, filename="after.png").json()["id"]
        done = client.wait(after, timeout=JOB_TIMEOUT)
        assert done["status"] == "done", done
        assert client.get(f"/api/jobs/{after}/result").status == 200

        # Stopping the service stops its driver.
        drivers = driver_processes(service.proc.pid)
        assert len(drivers) == 1
        service.terminate()
        assert service.proc.returncode == 0
        psutil.wait_procs(drivers, timeout=30)
        assert not [d for d in drivers if d.is_running() and d.status() != psutil.STATUS_ZOMBIE]
    finally:
        service.terminate()
        for cluster in (first, second):
            if cluster is not None:
                _stop(cluster)
