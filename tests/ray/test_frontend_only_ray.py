"""A front end installed with `pip install '.[ray]'` alone (no OpenCV, no PyTorch) runs jobs on the loopback
cluster, whose nodes have the worker."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import install_fresh
from tests.ray.conftest import RayCluster, requires_ray
from tests.web.conftest import Photos, wait_until

pytestmark = [requires_ray, pytest.mark.slow]


def test_a_front_end_with_only_the_ray_extra_runs_jobs_on_the_cluster(
    tmp_path: Path, ray_cluster: RayCluster, photos: Photos
) -> None:
    installed = install_fresh(tmp_path, extras="ray")
    assert installed.installed(("cv2", "torch", "spandrel")) == []

    # The nodes find FSRCNN_x3.pb in their own models folder; the front end only names it.
    settings = {"SR_BACKEND": "ray", "SR_RAY_ADDRESS": ray_cluster.address, "SR_DATA_DIR": str(tmp_path / "data"),
                "SR_MODEL_PATH": str(tmp_path / "FSRCNN_x3.pb")}
    with installed.serve(tmp_path / "sr-web.log", **settings) as client:
        # Connecting to the cluster takes a moment after the port opens.
        wait_until(lambda: client.get("/healthz").status == 200, timeout=60, what="a connection to the cluster")
        reply = client.upload(photos.small_png, path="/upload", timeout=120)
        assert reply.status == 200, reply.body
        assert reply.header("content-type") == "image/png"
        with Image.open(io.BytesIO(reply.body)) as result:
            assert result.size == (64 * 3, 48 * 3)
