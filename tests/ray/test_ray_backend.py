"""SR_BACKEND=ray against a real cluster on loopback: same results as the local backend, only on GPU-declaring
nodes, a fresh process per job, progress as it happens, cancel, timeout and lost drivers, many clients at once
(a lost node: tests/ray/test_ray_node_lost.py, on a cluster of its own)."""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tests.ray.conftest import (
    LOOPBACK,
    Placement,
    RayCluster,
    driver_processes,
    gone,
    placement,
    requires_ray,
    wait_healthy,
)
from tests.web.conftest import Photos, wait_until
from tests.web.restart import Backend, restart_with_jobs
from tests.web.server import LiveServer, start_live_server, worker_processes
from web.backends.ray.backend import SILENT_S
from web.backends.ray.task import work_root
from web.jobs.outcomes import CLUSTER_LOST_MESSAGE

pytestmark = [pytest.mark.slow, requires_ray]

# Generous: a loaded 2-core machine starts a Ray worker process and the worker's imports for every job.
JOB_TIMEOUT = 120.0


def _placement(server: LiveServer, job_id: str) -> Placement:
    return wait_until(lambda: placement(server, job_id), timeout=JOB_TIMEOUT, what=f"job {job_id} to be placed")


def _node_workers(job_id: str) -> list[psutil.Process]:
    """Worker processes run by the Ray task of this job (their input lies in the node's job folder)."""
    return [p for p in worker_processes(job_id) if any(str(work_root()) in arg for arg in p.cmdline())]


def _workers_of(job_ids: list[str]) -> list[psutil.Process]:
    """Running worker processes of these jobs on the nodes (their input lies in the job's folder)."""
    prefixes = tuple(f"{work_root()}/{job_id}-" for job_id in job_ids)
    found = []
    for proc in worker_processes(work_root()):
        try:
            if proc.is_running() and any(arg.startswith(prefixes) for arg in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _crop(source: Path, box: tuple[int, int, int, int]) -> bytes:
    with Image.open(source) as image:
        buf = io.BytesIO()
        image.convert("RGB").crop(box).save(buf, format="PNG")
        return buf.getvalue()


def test_cluster_is_on_loopback_only(ray_cluster: RayCluster) -> None:
    assert ray_cluster.address.startswith(f"{LOOPBACK}:")
    assert ray_cluster.cluster.head_node.node_ip_address == LOOPBACK
    assert all(node.node_ip_address == LOOPBACK for node in ray_cluster.gpu_nodes)


def test_results_equal_the_local_backend_on_gpu_nodes_in_fresh_processes(
    ray_server, ray_cluster: RayCluster, photos: Photos, tmp_path: Path, shared_models: Path
) -> None:
    server = ray_server(concurrency=2)
    client = server.client()
    assert {node.node_ip_address for node in ray_cluster.cluster.list_all_nodes()} == {LOOPBACK}
    uploads = [(photos.small_png, "a.png", {}), (photos.small_jpg, "b.jpg", {}),
               (photos.small_png, "c.png", {"format": "webp"}), (photos.small_jpg, "d.jpg", {"format": "png"})]
    ids = [client.upload(data, filename=name, fields=fields).json()["id"] for data, name, fields in uploads]
    jobs = [client.wait(job_id, timeout=JOB_TIMEOUT) for job_id in ids]
    assert [job["status"] for job in jobs] == ["done"] * len(ids), jobs
    remote = [client.get(f"/api/jobs/{job_id}/result").body for job_id in ids]

    local = start_live_server(tmp_path / "local", model_path=shared_models / "FSRCNN_x3.pb", auth_token=None)
    try:
        local_client = local.client()
        local_ids = [local_client.upload(d, filename=n, fields=f).json()["id"] for d, n, f in uploads]
        for job_id in local_ids:
            assert local_client.wait(job_id, timeout=JOB_TIMEOUT)["status"] == "done"
        expected = [local_client.get(f"/api/jobs/{job_id}/result").body for job_id in local_ids]
    finally:
        local.stop()
    assert [len(r) for r in remote] == [len(e) for e in expected]
    assert remote == expected

    where = [placement(server, job_id) for job_id in ids]
    assert all(w is not None for w in where), where
    assert {w.node_id for w in where} <= ray_cluster.gpu_node_ids()
    assert ray_cluster.head_node_id not in {w.node_id for w in where}
    # max_calls=1 in the task's declaration: every job in a worker process of its own.
    task_pids = [w.task_pid for w in where]
    assert len(set(task_pids)) == len(task_pids), task_pids
    assert all(gone(pid) for pid in task_pids + [w.worker_pid for w in where])
    assert not list(work_root().glob(f"{ids[-1]}-*"))


def test_progress_reaches_the_row_and_delete_kills_the_remote_worker(
    ray_server, photos: Photos, edsr_model_slow: Path
) -> None:
    server = ray_server(model_path=edsr_model_slow)
    client = server.client()
    job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
    # Part of the photo done while the job is still running: progress (within its window) came before `done`.
    seen = wait_until(
        lambda: (lambda j: j if j["status"] == "running" and 0 < j["progress"] < 1 else None)(
            client.job(job_id)
        ),
        timeout=JOB_TIMEOUT,
        interval=0.05,
        what="a progress event in the job row",
    )
    where = _placement(server, job_id)
    assert psutil.pid_exists(where.worker_pid) and not gone(where.worker_pid)
    assert _node_workers(job_id), "the worker runs on the node"

    assert client.delete(f"/api/jobs/{job_id}").status == 204
    wait_until(lambda: gone(where.worker_pid) and gone(where.task_pid), timeout=30, what="the remote processes to end")
    wait_until(lambda: server.services.runner.workers_running() == 0, timeout=30, what="the runner to settle")
    assert _node_workers(job_id) == []
    assert client.get(f"/api/jobs/{job_id}").status == 404
    assert not [p for p in (server.data_dir / "results").iterdir() if job_id in p.name]
    wait_until(lambda: not list(work_root().glob(f"{job_id}-*")), timeout=30, what="the node's job folder to go")


def test_timeout_is_enforced_by_the_front_end(ray_server, photos: Photos, edsr_model_slow: Path) -> None:
    server = ray_server(model_path=edsr_model_slow, job_timeout_s=20.0)
    client = server.client()
    job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
    where = _placement(server, job_id)
    # Frozen, it cannot finish in time however fast this machine is.
    try:
        psutil.Process(where.worker_pid).suspend()
    except psutil.NoSuchProcess:
        pass
    failed = client.wait(job_id, timeout=JOB_TIMEOUT)
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "timeout",
        "message": "took longer than 20 seconds (SR_JOB_TIMEOUT_S) and was stopped; try a smaller photo",
    }
    wait_until(lambda: gone(where.worker_pid) and gone(where.task_pid), timeout=30, what="the remote processes to end")
    assert not [p for p in (server.data_dir / "results").iterdir() if job_id in p.name]


def test_twenty_uploads_from_concurrent_clients(ray_server, ray_cluster: RayCluster, shared_photos: Path) -> None:
    server = ray_server(concurrency=2)
    source = shared_photos / "astronaut.png"
    crops = [_crop(source, (40 + 17 * i, 30 + 11 * i, 88 + 17 * i, 70 + 11 * i)) for i in range(20)]
    ids: dict[int, str] = {}
    errors: list[str] = []
    peak = 0
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            running = server.services.runner.workers_running()
            # This test's own workers only: other test runs on a shared machine use the same folder.
            workers = len(_workers_of(list(ids.values())))
            peak = max(peak, running, workers)
            time.sleep(0.02)

    def client_thread(first: int) -> None:
        client = server.client()
        for i in range(first, len(crops), 5):
            reply = client.upload(crops[i], filename=f"crop{i}.png")
            if reply.status != 202:
                errors.append(f"{i}: {reply.status} {reply.body!r}")
                continue
            ids[i] = reply.json()["id"]

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        client = server.client()
        jobs = {i: client.wait(job_id, timeout=JOB_TIMEOUT * 2) for i, job_id in ids.items()}
    finally:
        sampling = False
        sampler.join()
    assert sorted(jobs) == list(range(20))
    assert all(job["status"] == "done" for job in jobs.values()), [j["error"] for j in jobs.values()]
    assert 1 <= peak <= 2, f"saw {peak} jobs at once with SR_CONCURRENCY=2"

    results = {i: Image.open(io.BytesIO(client.get(f"/api/jobs/{ids[i]}/result").body)).convert("RGB") for i in ids}
    originals = {i: Image.open(io.BytesIO(crops[i])).convert("RGB") for i in ids}
    for i, result in results.items():
        assert result.size == (originals[i].width * 3, originals[i].height * 3)
        small = result.resize(originals[i].size, Image.Resampling.BOX)
        distances = {j: _distance(small, original) for j, original in originals.items()}
        assert min(distances, key=distances.get) == i, f"result of crop {i} looks like crop {min(distances, key=distances.get)}"
    nodes = {placement(server, ids[i]).node_id for i in ids}
    assert nodes == ray_cluster.gpu_node_ids(), "both GPU-declaring nodes took jobs, and only they"


def _distance(a: Image.Image, b: Image.Image) -> float:
    pa, pb = a.tobytes(), b.tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb)) / len(pa)


def test_cpu_only_jobs_also_get_a_fresh_process_each(ray_server, photos: Photos) -> None:
    server = ray_server(ray_gpus_per_job=0, ray_cpus_per_job=1)
    client = server.client()
    ids = [client.upload(photos.small_png, filename=f"cpu{i}.png").json()["id"] for i in range(3)]
    assert [client.wait(job_id, timeout=JOB_TIMEOUT)["status"] for job_id in ids] == ["done"] * 3
    task_pids = [placement(server, job_id).task_pid for job_id in ids]
    assert len(set(task_pids)) == 3, task_pids


def _remote_processes_end(job: "_RemoteJob", stop: str) -> None:
    where = job.where
    wait_until(lambda: gone(where.worker_pid) and gone(where.task_pid), timeout=60,
               what="the interrupted job's remote processes to end")


def test_front_end_killed_while_a_remote_job_runs_marks_it_failed_and_its_remote_processes_end(
    ray_cluster: RayCluster, photos: Photos, edsr_model_slow: Path, tmp_path: Path
) -> None:
    backend = Backend(
        env={"SR_BACKEND": "ray", "SR_RAY_ADDRESS": ray_cluster.address},
        locate=_locate_remote_job,
        after_stop=_driver_dies_with_its_service,
        ended=_remote_processes_end,
        timeout=JOB_TIMEOUT,
    )
    restart_with_jobs(tmp_path, edsr_model_slow, photos.small_png, photos.slow_png, backend, "SIGKILL", queued=0)


@dataclass
class _RemoteJob:
    where: Placement
    drivers: list[psutil.Process]


def _locate_remote_job(data: Path, job_id: str) -> _RemoteJob:
    where = wait_until(lambda: placement(data, job_id), timeout=JOB_TIMEOUT, what="the placement line")
    drivers = [p for p in psutil.process_iter(["cmdline"])
               if "web.backends.ray.driver" in (p.info["cmdline"] or []) and _data_dir_of(p) == str(data)]
    assert len(drivers) == 1, drivers
    return _RemoteJob(where, drivers)


def _data_dir_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("SR_DATA_DIR")
    except psutil.Error:
        return None


def _driver_dies_with_its_service(job: _RemoteJob, stop: str) -> None:
    # The driver process dies with the service (parent-death signal), so Ray ends the job's task.
    wait_until(lambda: all(gone(d.pid) for d in job.drivers), timeout=30, what="the killed service's Ray driver to end")


def test_driver_process_killed_mid_job_fails_it_and_a_new_driver_runs_the_next(
    ray_server, photos: Photos, edsr_model_slow: Path
) -> None:
    server = ray_server(model_path=edsr_model_slow)
    client = server.client()
    (driver,) = driver_processes(os.getpid())
    job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
    where = _placement(server, job_id)
    driver.kill()

    failed = client.wait(job_id, timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "cluster_lost", "message": CLUSTER_LOST_MESSAGE}
    health = client.get("/healthz")
    assert health.status == 503 and "Ray driver process" in health.json()["backend"]["reason"]
    assert client.upload(photos.small_png, filename="meanwhile.png").status == 503
    # Ray ends the tasks of a driver that died, and the worker goes with its task.
    wait_until(lambda: gone(where.worker_pid) and gone(where.task_pid), timeout=60,
               what="the dead driver's task and worker to end")

    wait_healthy(server, timeout=120)
    (restarted,) = driver_processes(os.getpid())
    assert restarted.pid != driver.pid
    after = client.upload(photos.small_png, filename="after.png").json()["id"]
    assert client.wait(after, timeout=JOB_TIMEOUT)["status"] == "done"


def test_a_driver_that_stops_answering_is_killed_and_replaced(ray_server, photos: Photos, edsr_model_slow: Path) -> None:
    server = ray_server(model_path=edsr_model_slow)
    client = server.client()
    (driver,) = driver_processes(os.getpid())
    job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
    _placement(server, job_id)
    driver.suspend()  # alive, but answers nothing: as a driver stuck in a call into Ray
    failed = client.wait(job_id, timeout=SILENT_S + 60)
    assert failed["error"] == {"code": "cluster_lost", "message": CLUSTER_LOST_MESSAGE}
    assert gone(driver.pid)
    wait_healthy(server, timeout=120)
    after = client.upload(photos.small_png, filename="after.png").json()["id"]
    assert client.wait(after, timeout=JOB_TIMEOUT)["status"] == "done"



def test_preloaded_jobs_are_forked_from_a_launcher_the_ray_worker_process_keeps(
    ray_server, ray_cluster: RayCluster, photos: Photos
) -> None:
    """Last in this module: the Ray worker processes it leaves keep their launchers until the cluster stops."""
    server = ray_server(worker_start="preloaded", result_cache="off")
    client = server.client()
    first = client.wait(client.upload(photos.small_png, filename="first.png").json()["id"], timeout=JOB_TIMEOUT)
    assert first["status"] == "done" and "startup" in first["timings"], first  # plain while the launcher imports
    expected = client.get(f"/api/jobs/{first['id']}/result").body
    deadline = time.monotonic() + 240
    while True:
        job = client.wait(client.upload(photos.small_png, filename="next.png").json()["id"], timeout=JOB_TIMEOUT)
        assert job["status"] == "done", job
        if "fork" in job["timings"]:
            break
        assert time.monotonic() < deadline, "no job was forked from the node's launcher in 240 s"
        time.sleep(1.0)
    assert client.get(f"/api/jobs/{job['id']}/result").body == expected
    where = placement(server, job["id"])
    assert where is not None and where.node_id in ray_cluster.gpu_node_ids()
    # The job's process was the launcher's child, not the task's, and it has ended with its job.
    assert gone(where.worker_pid) and not gone(where.task_pid)
