"""The Ray backend against the local one on this machine: per-job overhead for the same small job (median of
interleaved runs) and jobs per minute with one GPU-declaring node against two, on a loopback cluster.
With --driver-baseline REV instead: the cost per job of the Ray driver's own process, the same small job
through two `sr-web` processes, this tree's (the driver a child process) and REV's (the service the driver).
With --starts instead: Ray jobs whose processes are forked from the preloaded launcher against plain starts."""

from __future__ import annotations

import os

# Before Ray is imported: keep every node on 127.0.0.1 (see tests/ray/conftest.py).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from infer import REPO_ROOT  # noqa: E402

sys.path.insert(0, str(REPO_ROOT))  # the test helpers live in tests/, which is not installed
from tests.web.client import HttpClient  # noqa: E402
from tests.web.server import LiveServer, ServiceProcess, start_live_server, start_service_process  # noqa: E402

SHARED = REPO_ROOT.parent / "shared"
LOOPBACK = "127.0.0.1"


def _photo(size: tuple[int, int]) -> bytes:
    with Image.open(SHARED / "photos" / "chelsea.png") as image:
        buf = io.BytesIO()
        image.convert("RGB").crop((100, 60, 100 + size[0], 60 + size[1])).save(buf, format="PNG")
        return buf.getvalue()


def _job_seconds(server: LiveServer | HttpClient, photo: bytes) -> float:
    """From the upload's arrival to the job's end, as the service recorded them."""
    client = server if isinstance(server, HttpClient) else server.client()
    job = client.wait(client.upload(photo).json()["id"], timeout=300)
    if job["status"] != "done":
        raise SystemExit(f"a job failed: {job['error']}")
    return job["finished_at"] - job["created_at"]


def _jobs_per_minute(server: LiveServer, photo: bytes, jobs: int, clients: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: _job_seconds(server, photo), range(jobs)))
    return jobs / (time.monotonic() - started) * 60.0


def _cluster_with_one_gpu_node() -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                             "node_ip_address": LOOPBACK, "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK)
    cluster.wait_for_nodes()
    return cluster


def _export(rev: str, into: Path) -> Path:
    """The `web/` and `infer/` of commit `rev`, to run the baseline service from."""
    archive = subprocess.run(["git", "archive", rev, "web", "infer"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _service(tree: Path, data: Path, model: Path, address: str, log: Path) -> ServiceProcess:
    """`python -m web` run in `tree` (its own web/ and infer/ first on the path), connected to the cluster."""
    env = {"SR_DATA_DIR": str(data), "SR_MODEL_PATH": str(model), "SR_BACKEND": "ray", "SR_RAY_ADDRESS": address,
           "SR_RESULT_CACHE": "off"}
    service = start_service_process(log, env, timeout=120, cwd=tree)
    deadline = time.monotonic() + 120
    while service.client().get("/healthz").status != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"the service from {tree} did not connect to the cluster")
        time.sleep(0.2)
    return service


def _driver_overhead(baseline: str, runs: int, photo: bytes, model: Path, work: Path) -> dict:
    """Interleaved jobs through this tree's service and the baseline's, on one cluster with one GPU node
    (the nodes run this tree's task code either way: only the front end differs)."""
    tree = _export(baseline, work / "baseline")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    cluster = _cluster_with_one_gpu_node()
    services: list[ServiceProcess] = []
    try:
        services.append(_service(REPO_ROOT, work / "child", model, cluster.address, work / "child.log"))
        services.append(_service(tree, work / "in-process", model, cluster.address, work / "in-process.log"))
        clients = {"child": services[0].client(), "in_process": services[1].client()}
        for client in clients.values():
            _job_seconds(client, photo)  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(runs):
            # Alternating which goes first, so that neither always follows the other's Ray worker start.
            for name in list(clients) if i % 2 == 0 else list(reversed(clients)):
                seconds[name].append(_job_seconds(clients[name], photo))
    finally:
        for service in services:
            service.terminate()
        cluster.shutdown()
    return {
        "baseline": baseline,
        "runs": runs,
        "in_process_driver_median_s": round(statistics.median(seconds["in_process"]), 3),
        "child_driver_median_s": round(statistics.median(seconds["child"]), 3),
        "extra_median_s": round(statistics.median(c - p for c, p in zip(seconds["child"], seconds["in_process"])), 3),
        "in_process_s": [round(v, 3) for v in seconds["in_process"]],
        "child_s": [round(v, 3) for v in seconds["child"]],
    }


def _ray_starts(runs: int, photo: bytes, model: Path, work: Path) -> dict:
    """Two Ray services on one cluster, one per SR_WORKER_START, each running its jobs in a block after the
    preloaded one's Ray worker process has its launcher ready (its jobs' timings have `fork`). Not alternated:
    on a node with one CPU, Ray ends an idle worker process beyond one when another function's task needs a
    process, and the preloaded one's launcher would go with it each time."""
    cluster = _cluster_with_one_gpu_node()
    servers: dict[str, LiveServer] = {}
    try:
        for kind in ("preloaded", "plain"):
            servers[kind] = start_live_server(work / kind, model_path=model, auth_token=None, backend="ray",
                                              ray_address=cluster.address, worker_start=kind, result_cache="off")
        deadline = time.monotonic() + 60
        while any(server.client().get("/healthz").status != 200 for server in servers.values()):
            if time.monotonic() > deadline:
                raise SystemExit("the services did not connect to the cluster")
            time.sleep(0.1)
        client = servers["preloaded"].client()
        deadline = time.monotonic() + 300
        while "fork" not in client.wait(client.upload(photo).json()["id"], timeout=300)["timings"]:
            if time.monotonic() > deadline:
                raise SystemExit("no preloaded job was forked in 300 s")
            time.sleep(1.0)
        seconds: dict[str, list[float]] = {"preloaded": [], "plain": []}
        forked = 0
        for _ in range(runs):
            job = client.wait(client.upload(photo).json()["id"], timeout=300)
            seconds["preloaded"].append(job["finished_at"] - job["created_at"])
            forked += "fork" in job["timings"]
        _job_seconds(servers["plain"], photo)  # warm-up
        for _ in range(runs):
            seconds["plain"].append(_job_seconds(servers["plain"], photo))
    finally:
        for server in servers.values():
            server.stop()
        cluster.shutdown()
    pre, plain = statistics.median(seconds["preloaded"]), statistics.median(seconds["plain"])
    return {"runs": runs, "preloaded_jobs_forked": forked, "preloaded_median_s": round(pre, 3), "plain_median_s": round(plain, 3),
            "preloaded_over_plain": round(pre / plain, 2),
            **{f"{kind}_s": [round(v, 3) for v in values] for kind, values in seconds.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="interleaved local/ray pairs for the overhead")
    parser.add_argument("--jobs", type=int, default=12, help="jobs per throughput measurement")
    parser.add_argument("--size", default="64x48", help="the photo, a crop of chelsea (WxH)")
    parser.add_argument("--model", default=str(SHARED / "models" / "FSRCNN_x3.pb"))
    parser.add_argument("--driver-baseline", metavar="REV",
                        help="measure the driver process's cost against commit REV (its service the driver)")
    parser.add_argument("--starts", action="store_true",
                        help="Ray jobs with SR_WORKER_START=preloaded against plain, on one GPU-declaring node")
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
    if args.driver_baseline:
        try:
            report = _driver_overhead(args.driver_baseline, args.runs, photo, model, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"photo": f"chelsea crop {width}x{height}", "model": model.name, **report,
                          "cpus": os.cpu_count()}, indent=2))
        return 0
    if args.starts:
        try:
            report = _ray_starts(args.runs, photo, model, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"photo": f"chelsea crop {width}x{height}", "model": model.name, **report,
                          "cpus": os.cpu_count()}, indent=2))
        return 0
    cluster = _cluster_with_one_gpu_node()
    servers: list[LiveServer] = []
    try:
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
