"""The repair mask on the Ray backend, on the loopback cluster: it travels to the node as an object of its own beside
the photo, the node's worker repairs with it, and the result is the local backend's, byte for byte."""

from __future__ import annotations

from pathlib import Path

from tests.ray.conftest import RayCluster, placement
from tests.web.client import multipart
from tests.web.conftest import Photos
from tests.web.server import start_live_server
from tests.web.test_repair_mask import _send, _stroke_mask

JOB_TIMEOUT = 120.0


def test_a_masked_job_on_a_node_writes_what_the_local_backend_writes(
    ray_server, ray_cluster: RayCluster, photos: Photos, shared_models: Path, tmp_path: Path
) -> None:
    server = ray_server(result_cache="off")
    client = server.client()
    fields = {"repair": "auto", "colour": "restore"}
    created = _send(client, photos.small_png, _stroke_mask(), fields)
    assert created.status == 202, created.body
    job = client.wait(created.json()["id"], timeout=JOB_TIMEOUT)
    assert job["status"] == "done", job
    assert job["repair"] == {"mode": "auto", "mask": True} and job["colour"] == "restore"
    assert job["timings"]["repair"] > 0
    where = placement(server, job["id"])
    assert where is not None and where.node_id in ray_cluster.gpu_node_ids()
    remote = client.get(job["links"]["result"]).body
    unmasked = client.wait(client.upload(photos.small_png).json()["id"], timeout=JOB_TIMEOUT)
    assert unmasked["status"] == "done" and "repair" not in unmasked["timings"]
    assert client.get(unmasked["links"]["result"]).body != remote

    local = start_live_server(tmp_path / "local", model_path=shared_models / "FSRCNN_x3.pb", auth_token=None)
    try:
        local_client = local.client()
        local_job = local_client.wait(_send(local_client, photos.small_png, _stroke_mask(), fields).json()["id"])
        assert local_job["status"] == "done", local_job
        expected = local_client.get(local_job["links"]["result"]).body
    finally:
        local.stop()
    assert remote == expected


def test_finding_damage_runs_on_a_node_and_answers_what_the_local_backend_does(
    ray_server, ray_cluster: RayCluster, shared_photos: Path, shared_models: Path, tmp_path: Path
) -> None:
    import cv2

    from bench.damage import damage

    ok, encoded = cv2.imencode(".png", damage(cv2.imread(str(shared_photos / "chelsea.png"))[:120, :160], seed=5,
                                              torn=False).bgr)
    assert ok
    photo = encoded.tobytes()

    def find(server) -> bytes:
        body, content_type = multipart({}, {"image": ("old.png", photo)})
        reply = server.client().request("POST", "/api/damage", body=body, headers={"Content-Type": content_type})
        assert reply.status == 200, reply.body
        return reply.body

    server = ray_server(result_cache="off")
    remote = find(server)
    local = start_live_server(tmp_path / "local", model_path=shared_models / "FSRCNN_x3.pb", auth_token=None)
    try:
        expected = find(local)
    finally:
        local.stop()
    assert remote == expected and remote[:8] == b"\x89PNG\r\n\x1a\n"
