"""docs/scaling.md's single-machine trial, command by command: a Ray head that takes no jobs, a GPU node and a
CPU-only node started with `ray start` on separate loopback addresses, with Ray's token authentication; the
front end sends GPU jobs to the GPU node and, with SR_RAY_GPUS_PER_JOB=0, CPU jobs to the CPU node, never
to the head."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.deploy.deployfiles import free_port
from tests.ray.conftest import placement, requires_ray
from tests.ray.handrun import FrontEnd, HandRunCluster, hand_run  # noqa: F401 (a fixture)
from tests.web.conftest import Photos, wait_until
from web.backends.ray.driver import NODE_SAMPLE_S

pytestmark = [requires_ray, pytest.mark.slow]

HEAD_IP, GPU_IP, CPU_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
JOB_TIMEOUT = 120.0


@pytest.fixture
def node_models(tmp_path: Path, shared_models: Path) -> Path:
    """Each node's own models folder (SR_MODELS_DIR in the environment of its `ray start`)."""
    folder = tmp_path / "node-models"
    folder.mkdir()
    (folder / "FSRCNN_x3.pb").symlink_to(shared_models / "FSRCNN_x3.pb")
    return folder


def _start_head(hand_run: HandRunCluster) -> str:
    """The head, as the docs start it; its GCS address."""
    head = f"{HEAD_IP}:{free_port(HEAD_IP)}"
    assert hand_run.start_head(HEAD_IP, int(head.rsplit(":", 1)[1])).returncode == 0, hand_run.log[-1]
    assert "Ray runtime started." in hand_run.log[-1]
    return head


def _front_end(tmp_path: Path, hand_run: HandRunCluster, head: str, name: str = "front-end",
               **settings: str) -> FrontEnd:
    """sr-web with the Ray backend on this cluster, with its token; the front end has no model file."""
    return FrontEnd.start(tmp_path / name, {**hand_run.env, "SR_BACKEND": "ray", "SR_RAY_ADDRESS": head,
                                            "SR_MODEL_PATH": str(tmp_path / "FSRCNN_x3.pb"), **settings})


def _run_job(front_end: FrontEnd, photo: bytes) -> str:
    job_id = front_end.client.upload(photo, filename="a.png").json()["id"]
    job = front_end.client.wait(job_id, timeout=JOB_TIMEOUT)
    assert job["status"] == "done", job
    return job_id


def test_head_cpu_node_then_gpu_node_by_hand_with_token_auth(
    tmp_path: Path, hand_run: HandRunCluster, node_models: Path, photos: Photos
) -> None:
    started = time.monotonic()
    head = _start_head(hand_run)
    assert hand_run.join(head, CPU_IP, gpus=0, cpus=1, models_dir=node_models).returncode == 0, hand_run.log[-1]

    # Without the token nothing talks to the cluster.
    wrong = hand_run.run("status", f"--address={head}", env={"RAY_AUTH_TOKEN": "0" * 64, "RAY_AUTH_TOKEN_PATH": ""},
                         timeout=60)
    assert wrong.returncode != 0

    cpu_jobs = _front_end(tmp_path, hand_run, head, "cpu-front-end", SR_RAY_GPUS_PER_JOB="0", SR_RAY_CPUS_PER_JOB="1")
    gpu_jobs = _front_end(tmp_path, hand_run, head, "gpu-front-end")
    try:
        for front_end in (cpu_jobs, gpu_jobs):
            wait_until(lambda: front_end.client.get("/healthz").status == 200, timeout=60, interval=0.5,
                       what="the front end to connect with the token")
        # A CPU-only cluster: the jobs run on the CPU node, never on the head (--num-cpus=0).
        cpu_nodes = {placement(cpu_jobs.data_dir, _run_job(cpu_jobs, photos.small_png)).node_ip for _ in range(2)}
        assert cpu_nodes == {CPU_IP}
        first_job_s = time.monotonic() - started

        assert hand_run.join(head, GPU_IP, gpus=1, cpus=1, models_dir=node_models).returncode == 0, hand_run.log[-1]

        # `ray status`, as the docs show it: three nodes; the head's CPUs and GPUs are not offered to tasks.
        def three_nodes() -> str | None:
            status = hand_run.status(head)
            return status.stdout if status.returncode == 0 and status.stdout.count(" node_") == 3 else None

        text = wait_until(three_nodes, timeout=60, interval=1, what="ray status to list three nodes")
        assert "0.0/2.0 CPU" in text and "0.0/1.0 GPU" in text, text
        assert placement(gpu_jobs.data_dir, _run_job(gpu_jobs, photos.small_png)).node_ip == GPU_IP
    finally:
        gpu_jobs.stop()
        cpu_jobs.stop()
    print(f"\nhand-run cluster: first job done {first_job_s:.1f} s after the first `ray start`")


def test_a_job_without_a_node_shows_waiting_for_node_until_one_joins(
    tmp_path: Path, hand_run: HandRunCluster, node_models: Path, photos: Photos
) -> None:
    head = _start_head(hand_run)
    front_end = _front_end(tmp_path, hand_run, head)
    try:
        client = front_end.client
        # Only the head, which takes no jobs, and no autoscaler: /healthz says that no job can run.
        health = wait_until(lambda: (h := client.get("/healthz").json())["backend"]["autoscaler"] == "absent" and h,
                            timeout=60, interval=0.5, what="a connection")
        assert health["status"] == "unhealthy" and health["backend"]["worker_nodes_alive"] == 0, health
        assert health["reason"] == ("no node can run jobs now and this cluster has no autoscaler: start a worker "
                                    "node (docs/scaling.md)"), health
        job_id = client.upload(photos.small_png, filename="a.png").json()["id"]
        # The task waits, and everything says so.
        job = wait_until(lambda: (j := client.job(job_id))["status"] == "waiting_for_node" and j, timeout=60,
                         what="the job to wait for a node")
        assert job["estimate_seconds"] is None
        assert "sr_jobs_waiting_for_node 1.0" in client.get("/metrics").body.decode()
        health = client.get("/healthz")
        assert health.status == 503 and health.json()["jobs_waiting_for_node"] == 1
        assert "this cluster has no autoscaler: start a worker node" in health.json()["reason"]

        assert hand_run.join(head, GPU_IP, gpus=1, cpus=1, models_dir=node_models).returncode == 0, hand_run.log[-1]
        assert client.wait(job_id, timeout=JOB_TIMEOUT)["status"] == "done"
        assert placement(front_end.data_dir, job_id).node_ip == GPU_IP
        assert "sr_jobs_waiting_for_node 0.0" in client.get("/metrics").body.decode()
        health = wait_until(lambda: (h := client.get("/healthz")).status == 200 and h.json(), timeout=30,
                            interval=0.5, what="/healthz to count the node")
        assert health["jobs_waiting_for_node"] == 0 and health["backend"]["worker_nodes_alive"] == 1
        # What the cloud bills: the worker node's alive time, counted by the driver; the head is not a worker.
        node_seconds = re.compile(r'^sr_node_seconds_total\{kind="gpu"\} ([0-9.e+]+)$', re.M)

        def counted() -> float | None:
            text = client.get("/metrics").body.decode()
            found = node_seconds.search(text)
            return float(found[1]) if found and float(found[1]) > 0 and 'sr_nodes{kind="gpu"} 1.0' in text else None

        assert wait_until(counted, timeout=60, interval=1, what="the GPU node's seconds to be counted")
        assert 'kind="cpu"' not in client.get("/metrics").body.decode()
    finally:
        front_end.stop()


def test_results_are_cached_by_the_model_the_node_ran_and_a_rollout_is_not_served_old_results(
    tmp_path: Path, hand_run: HandRunCluster, shared_models: Path, photos: Photos
) -> None:
    # The front end has no model file: only the nodes do, under the name it asks for.
    old_models, new_models = tmp_path / "old-models", tmp_path / "new-models"
    for folder, source in ((old_models, "FSRCNN_x3.pb"), (new_models, "ESPCN_x3.pb")):
        folder.mkdir()
        (folder / "FSRCNN_x3.pb").symlink_to(shared_models / source)
    head = _start_head(hand_run)
    assert hand_run.join(head, GPU_IP, gpus=1, cpus=1, models_dir=old_models).returncode == 0, hand_run.log[-1]
    front_end = _front_end(tmp_path, hand_run, head, SR_RESULT_CACHE="shared")
    try:
        client = front_end.client
        wait_until(lambda: client.get("/healthz").status == 200, timeout=60, interval=0.5, what="a connection")

        def upscale() -> tuple[dict, bytes]:
            job_id = client.upload(photos.small_png, filename="a.png").json()["id"]
            job = client.wait(job_id, timeout=JOB_TIMEOUT)
            assert job["status"] == "done", job
            return job, client.get(f"/api/jobs/{job_id}/result").body

        first, old_result = upscale()
        assert not first["cached"]
        again, result = upscale()
        assert again["cached"] and result == old_result  # keyed by the SHA-256 the node reported

        # The rollout: the node replaced by one with another file under the same name.
        hand_run.stop_node(GPU_IP)
        assert hand_run.join(head, CPU_IP, gpus=1, cpus=1, models_dir=new_models).returncode == 0, hand_run.log[-1]
        wait_until(lambda: (s := hand_run.status(head)).returncode == 0 and s.stdout.count(" node_") == 2,
                   timeout=90, interval=1, what="Ray to know the old node gone and the new one there")
        time.sleep(NODE_SAMPLE_S + 2)  # the driver's next count of the nodes alive drops the old node's report

        rolled, new_result = upscale()
        assert not rolled["cached"] and new_result != old_result
        assert placement(front_end.data_dir, rolled["id"]).node_ip == CPU_IP
        cached_new, result = upscale()
        assert cached_new["cached"] and result == new_result
    finally:
        front_end.stop()


def test_healthz_says_when_the_live_nodes_lack_the_model(
    tmp_path: Path, hand_run: HandRunCluster, node_models: Path, photos: Photos
) -> None:
    empty = tmp_path / "empty-models"
    empty.mkdir()
    head = _start_head(hand_run)
    front_end = _front_end(tmp_path, hand_run, head)
    try:
        client = front_end.client
        # No worker node yet, and no autoscaler to start one: nothing to ask, and no job can run.
        health = wait_until(lambda: (h := client.get("/healthz").json())["backend"]["autoscaler"] == "absent" and h,
                            timeout=60, interval=0.5, what="a connection")
        assert any("no Ray worker node is alive" in note for note in health["notes"]), health
        assert "this cluster has no autoscaler" in health["reason"], health

        # A node that forgot the model (SR_MODELS_DIR pointing at an empty folder).
        assert hand_run.join(head, GPU_IP, gpus=1, cpus=1, models_dir=empty).returncode == 0, hand_run.log[-1]
        reply = wait_until(lambda: (h := client.get("/healthz")).status == 503 and "has the model" in h.json()["reason"]
                           and h.json(), timeout=60, interval=1, what="/healthz to see that no node has the model")
        assert "no live Ray worker node has the model FSRCNN_x3.pb" in reply["reason"]
        assert str(empty) not in str(reply)  # the folder is in the log, not in this public answer
        wait_until(lambda: str(empty) in (front_end.data_dir.parent / "sr-web.log").read_text(), timeout=10,
                   what="the log to name the node's folder")

        assert hand_run.join(head, CPU_IP, gpus=1, cpus=1, models_dir=node_models).returncode == 0, hand_run.log[-1]
        health = wait_until(lambda: (h := client.get("/healthz")).status == 200 and h.json(), timeout=60,
                            interval=1, what="/healthz once a node has the model")
        assert any("lack the model FSRCNN_x3.pb" in note for note in health["notes"]), health
    finally:
        front_end.stop()
