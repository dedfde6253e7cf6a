"""A worker node killed mid-job, on a cluster of this module's own: removing a node changes the cluster for
every test after it, so no other test shares this one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ray.conftest import RayCluster, gone, placement, requires_ray
from tests.ray.test_ray_backend import JOB_TIMEOUT, _placement
from tests.web.conftest import Photos, wait_until
from web.backends.ray.task import work_root
from web.jobs.outcomes import NODE_LOST_MESSAGE

pytestmark = [pytest.mark.slow, requires_ray]


def test_worker_node_killed_mid_job_fails_with_upload_again_and_the_next_runs_on_the_other(
    ray_server, ray_cluster: RayCluster, photos: Photos, edsr_model_slow: Path
) -> None:
    server = ray_server(model_path=edsr_model_slow)
    client = server.client()
    job_id = client.upload(photos.slow_png, filename="slow.png").json()["id"]
    where = _placement(server, job_id)
    wait_until(lambda: client.job(job_id)["tiles"]["total"] > 0, timeout=JOB_TIMEOUT, what="the start event")
    (node,) = [n for n in ray_cluster.gpu_nodes if n.node_id == where.node_id]
    ray_cluster.cluster.remove_node(node, allow_graceful=False)
    ray_cluster.gpu_nodes.remove(node)

    failed = client.wait(job_id, timeout=JOB_TIMEOUT)
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "node_lost", "message": NODE_LOST_MESSAGE}
    assert not [p for p in (server.data_dir / "results").iterdir() if job_id in p.name]
    wait_until(lambda: gone(where.worker_pid) and gone(where.task_pid), timeout=30,
               what="the killed node's task and worker to end")

    after = client.upload(photos.small_png, filename="after.png").json()["id"]
    assert client.wait(after, timeout=JOB_TIMEOUT)["status"] == "done"
    assert placement(server, after).node_id == ray_cluster.gpu_nodes[0].node_id
    # The killed task could not remove its folder; the next task on this machine did.
    assert not list(work_root().glob(f"{job_id}-*"))
