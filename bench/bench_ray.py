"""The Ray backend against the local one on this machine: per-job overhead for the same small job (median of
interleaved runs) and jobs per minute with one GPU-declaring node against two, on a loopback cluster."""

from __future__ import annotations

import os

# Before Ray is imported: keep every node on 127.0.0.1 (see tests/ray/conftest.py).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from infer import REPO_ROOT  # noqa: E402

sys.path.insert(0, str(REPO_ROOT))  # the test helpers live in tests/, which is not installed
from tests.web.server import LiveServer, start_live_server  # noqa: E402

SHARED = REPO_ROOT.parent / "shared"
LOOPBACK = "127.0.0.1"


def _photo(size: tuple[int, int]) -> bytes:
    with Image.open(SHARED / "photos" / "chelsea.png") as image:
        buf = io.BytesIO()
        image.convert("RGB").crop((100, 60, 100 + size[0], 60 + size[1])).save(buf, format="PNG")
        return buf.getvalue()


def _job_seconds(server: LiveServer, photo: bytes) -> float:
    """From the upload's arrival to the job's end, as the service recorded them."""
    client = server.client()
    job = client.wait(client.upload(photo).json()["id"], timeout=300)
    if job["status"] != "done":
        raise SystemExit(f"a job failed: {job['error']}")
    return job["finished_at"] - job["created_at"]


def _jobs_per_minute(server: LiveServer, photo: bytes, jobs: int, clients: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: _job_seconds(server, photo), range(jobs)))
    return jobs / (time.monotonic() - started) * 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="interleaved local/ray pairs for the overhead")
    parser.add_argument("--jobs", type=int, default=12, help="jobs per throughput measurement")
    parser.add_argument("--size", default="64x48", help="the photo, a crop of chelsea (WxH)")
    parser.add_argument("--model", default=str(SHARED / "models" / "FSRCNN_x3.pb"))
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    photo = _photo((width, height))
    model = Path(args.model).resolve()

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    models_dir = work / "node-models"
    models_dir.mkdir()
    (models_dir / model.name).symlink_to(model)
    # The nodes' models folder, inherited by every node started from here (the services get --model).
    os.environ["SR_MODELS_DIR"] = str(models_dir)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                             "node_ip_address": LOOPBACK, "include_dashboard": False})
    servers: list[LiveServer] = []
    try:
        cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        local = start_live_server(work / "local", model_path=model, auth_token=None, concurrency=2)
        remote = start_live_server(work / "ray", model_path=model, auth_token=None, concurrency=2,
                                   backend="ray", ray_address=cluster.address)
        servers += [local, remote]
        deadline = time.monotonic() + 60
        while remote.client().get("/healthz").status != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the service did not connect to the cluster")
            time.sleep(0.1)

        _job_seconds(local, photo), _job_seconds(remote, photo)  # warm-up: imports, page cache
        local_s, ray_s = [], []
        for _ in range(args.runs):
            local_s.append(_job_seconds(local, photo))
            ray_s.append(_job_seconds(remote, photo))
        one_node = _jobs_per_minute(remote, photo, args.jobs, clients=4)

        cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        two_nodes = _jobs_per_minute(remote, photo, args.jobs, clients=4)
        local_rate = _jobs_per_minute(local, photo, args.jobs, clients=4)
    finally:
        for server in servers:
            server.stop()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "photo": f"chelsea crop {width}x{height}",
        "model": model.name,
        "runs": args.runs,
        "local_median_s": round(statistics.median(local_s), 3),
        "ray_median_s": round(statistics.median(ray_s), 3),
        "overhead_median_s": round(statistics.median(r - l for r, l in zip(ray_s, local_s)), 3),
        "local_s": [round(v, 3) for v in local_s],
        "ray_s": [round(v, 3) for v in ray_s],
        "jobs": args.jobs,
        "jobs_per_minute": {
            "ray_one_gpu_node": round(one_node, 1),
            "ray_two_gpu_nodes": round(two_nodes, 1),
            "local_concurrency_2": round(local_rate, 1),
        },
        "two_over_one": round(two_nodes / one_node, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
