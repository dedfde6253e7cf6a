"""A Ray job with a PyTorch checkpoint: the node finds the converted realesr-animevideov3 in its own models folder,
the front end offers it from its scan record, and the result equals a local run of the same worker."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infer import scans
from tests.helpers import run_worker
from tests.ray.conftest import RayCluster, placement, requires_ray
from tests.web.conftest import Photos

pytestmark = [pytest.mark.slow, requires_ray]

JOB_TIMEOUT = 180.0  # a Ray worker process, the worker's torch and spandrel imports, on a loaded 2-core machine


def test_a_checkpoint_on_the_node_runs_and_equals_a_local_run(
    ray_server, ray_cluster: RayCluster, photos: Photos, realesrgan: dict[str, Path], tmp_path: Path
) -> None:
    node_copy = ray_cluster.models_dir / "anime-x4.pth"
    shutil.copy(realesrgan["compact"], node_copy)
    scans.scan_file(node_copy)
    front_models = tmp_path / "front-models"
    front_models.mkdir()
    shutil.copy2(node_copy, front_models / node_copy.name)
    shutil.copy2(scans.record_path(node_copy), scans.record_path(front_models / node_copy.name))

    server = ray_server(models_dir=front_models, model_path=front_models / node_copy.name)
    client = server.client()
    offered = {m["id"]: m for m in client.get("/api/options").json()["models"]}
    assert offered["anime-x4"]["scale"] == 4 and offered["anime-x4"]["kind"] == "restore", offered
    job_id = client.upload(photos.small_png, filename="cat.png", fields={"model": "anime-x4", "format": "png"}).json()["id"]
    job = client.wait(job_id, timeout=JOB_TIMEOUT)
    assert job["status"] == "done", job
    where = placement(server, job_id)
    assert where is not None and where.node_id in ray_cluster.gpu_node_ids()
    remote = np.asarray(Image.open(io.BytesIO(client.get(f"/api/jobs/{job_id}/result").body)).convert("RGB"))

    source = tmp_path / "cat.png"
    source.write_bytes(photos.small_png)
    out = tmp_path / "local.png"
    local_run = run_worker("--input", source, "--output", out, "--model", node_copy, timeout=300)
    assert local_run.exit_code == 0, local_run.stderr
    local = np.asarray(Image.open(out).convert("RGB"))
    h, w = np.asarray(Image.open(source)).shape[:2]
    assert remote.shape == local.shape == (4 * h, 4 * w, 3)
    assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1
