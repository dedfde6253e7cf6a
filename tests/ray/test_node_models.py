"""The front end offers what the live nodes report: a checkpoint only one node has is offered, accepted and run
there, the job's log naming that node's file; a default no live node has makes /healthz say so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from infer import scans
from tests.ray.conftest import RayCluster, placement, requires_ray
from tests.web.conftest import Photos, wait_until

pytestmark = [pytest.mark.slow, requires_ray]

JOB_TIMEOUT = 180.0  # a Ray worker process, the worker's torch and spandrel imports, on a loaded 2-core machine
CHECKPOINT = "anime-x4"


@pytest.fixture(scope="module")
def third_node(ray_cluster: RayCluster, realesrgan: dict[str, Path],
               tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A third GPU node whose own models folder alone holds a scanned checkpoint: (its node id, that folder)."""
    folder = tmp_path_factory.mktemp("third-node-models")
    for name in ("FSRCNN_x3.pb", "EDSR_x3.pb"):
        shutil.copy(ray_cluster.models_dir / name, folder / name)  # a link out of the folder is not offered
    shutil.copy(realesrgan["compact"], folder / f"{CHECKPOINT}.pth")
    scans.scan_file(folder / f"{CHECKPOINT}.pth")
    saved = os.environ.get("SR_MODELS_DIR")
    os.environ["SR_MODELS_DIR"] = str(folder)  # inherited by the node's raylet and its workers
    try:
        node = ray_cluster.cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
        ray_cluster.cluster.wait_for_nodes()
    finally:
        if saved is None:
            os.environ.pop("SR_MODELS_DIR", None)
        else:
            os.environ["SR_MODELS_DIR"] = saved
    return node.node_id, folder


@pytest.fixture
def bare_front(tmp_path: Path) -> Path:
    """The front end's models folder, empty: it has no model file at all."""
    folder = tmp_path / "front-models"
    folder.mkdir()
    return folder


def test_a_checkpoint_only_one_node_has_is_offered_and_runs_there(
    ray_server, ray_cluster: RayCluster, third_node: tuple[str, Path], bare_front: Path, photos: Photos
) -> None:
    node_id, node_folder = third_node
    server = ray_server(models_dir=bare_front, model_path=bare_front / "FSRCNN_x3.pb")
    client = server.client()

    def offered() -> dict | None:
        models = {m["id"]: m for m in client.get("/api/options").json()["models"]}
        return models if CHECKPOINT in models else None

    models = wait_until(offered, timeout=60, interval=0.5, what="the node's checkpoint to be offered")
    assert models[CHECKPOINT]["scale"] == 4 and models[CHECKPOINT]["kind"] == "restore", models
    assert "FSRCNN_x3" in models and "EDSR_x3" in models  # the nodes' .pb files, none here

    job_id = client.upload(photos.small_png, filename="cat.png",
                           fields={"model": CHECKPOINT, "format": "png"}).json()["id"]
    job = client.wait(job_id, timeout=JOB_TIMEOUT)
    assert job["status"] == "done", job
    # Sent to the one node that has it (the other two would not find the file).
    where = placement(server, job_id)
    assert where is not None and where.node_id == node_id
    log = (server.data_dir / "state" / "logs" / f"{job_id}.log").read_text()
    assert f"model {node_folder / f'{CHECKPOINT}.pth'}" in log and str(bare_front) not in log, log

    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["backend"]["worker_nodes_alive"] == 3, health
    assert health["backend"]["autoscaler"] == "absent", health  # a cluster started without one


def test_healthz_says_when_no_live_node_has_the_default(
    ray_server, ray_cluster: RayCluster, bare_front: Path
) -> None:
    # LapSRN_x4.pb is on no node: it is not offered, another model stands in, and /healthz says what to do.
    server = ray_server(models_dir=bare_front, model_path=bare_front / "LapSRN_x4.pb", wait=False)
    client = server.client()

    def unhealthy() -> dict | None:
        reply = client.get("/healthz")
        return reply.json() if reply.status == 503 and "LapSRN_x4.pb" in (reply.json()["reason"] or "") else None

    health = wait_until(unhealthy, timeout=60, interval=0.5, what="/healthz to see that no node has the default")
    assert "no live Ray worker node has the model LapSRN_x4.pb" in health["reason"]
    assert "sr-models fetch" in health["reason"]
    options = client.get("/api/options").json()
    assert "LapSRN_x4" not in {m["id"] for m in options["models"]}
    assert options["default"]["model"] in {m["id"] for m in options["models"]}, options  # a stand-in
