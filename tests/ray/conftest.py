"""Ray fixtures: a real multi-node cluster on loopback (a head without GPUs, two nodes with one logical GPU each)
and services started with SR_BACKEND=ray against it."""

from __future__ import annotations

import os

# Read by Ray when it is first imported: with it, Ray keeps the head and every node on 127.0.0.1 (this
# machine may send traffic to loopback only), instead of binding the machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import re  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import psutil  # noqa: E402
import pytest  # noqa: E402

try:
    import ray
except ImportError:
    # CI (SR_TEST_STRICT=1) installs the `ray` extra: there a missing Ray is an error; elsewhere the
    # modules that need it skip (`requires_ray`).
    if os.environ.get("SR_TEST_STRICT") == "1":
        raise
    ray = None

requires_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed: pip install -e '.[ray]'")

from tests.web.conftest import photos  # noqa: E402,F401  (a fixture: small test photos)
from tests.web.server import LiveServer, start_live_server  # noqa: E402

LOOPBACK = "127.0.0.1"
# Node-side settings, inherited by every node's raylet and so by its worker processes.
_NODE_ENV = ("SR_MODELS_DIR",)


@dataclass
class RayCluster:
    """A started cluster: its address, the head and the two GPU-declaring nodes."""

    cluster: Any  # ray.cluster_utils.Cluster
    models_dir: Path
    gpu_nodes: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def head_node_id(self) -> str:
        return self.cluster.head_node.node_id

    def gpu_node_ids(self) -> set[str]:
        return {node.node_id for node in self.gpu_nodes}


@pytest.fixture(scope="module")
def ray_models(tmp_path_factory: pytest.TempPathFactory, shared_models: Path, edsr_model_slow: Path) -> Path:
    """The worker nodes' own models folder (SR_MODELS_DIR there): the front end names a model, a node finds it."""
    folder = tmp_path_factory.mktemp("node-models")
    (folder / "FSRCNN_x3.pb").symlink_to(shared_models / "FSRCNN_x3.pb")
    (folder / "EDSR_x3.pb").symlink_to(edsr_model_slow)
    return folder


def start_cluster(models_dir: Path, gpu_nodes: int = 2, port: int | None = None) -> RayCluster:
    """A head without GPUs (its GCS on `port`, else Ray's choice) and `gpu_nodes` nodes with one logical GPU
    each, all on loopback; the nodes find their models in `models_dir`."""
    from ray.cluster_utils import Cluster

    head_args: dict[str, Any] = {"num_cpus": 1, "num_gpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False}
    if port is not None:
        head_args["gcs_server_port"] = port
    saved = {name: os.environ.get(name) for name in _NODE_ENV}
    os.environ["SR_MODELS_DIR"] = str(models_dir)
    try:
        cluster = Cluster(initialize_head=True, head_node_args=head_args)
        started = RayCluster(cluster, models_dir)
        for _ in range(gpu_nodes):
            started.gpu_nodes.append(cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK))
        cluster.wait_for_nodes()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return started


@pytest.fixture(scope="module")
def ray_cluster(ray_models: Path) -> Iterator[RayCluster]:
    started = start_cluster(ray_models)
    try:
        yield started
    finally:
        if ray.is_initialized():
            ray.shutdown()
        started.cluster.shutdown()


@pytest.fixture
def ray_server(tmp_path: Path, ray_cluster: RayCluster, shared_models: Path) -> Iterator[Any]:
    """start(**settings) -> a live service with SR_BACKEND=ray on the test cluster, connected (`wait=False`: not
    waited for); stopped after."""
    started: list[LiveServer] = []

    def start(wait: bool = True, **settings: Any) -> LiveServer:
        settings.setdefault("model_path", shared_models / "FSRCNN_x3.pb")
        settings.setdefault("backend", "ray")
        settings.setdefault("ray_address", ray_cluster.address)
        server = start_live_server(tmp_path / f"data{len(started)}", **settings)
        started.append(server)
        if wait:
            wait_healthy(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_healthy(server: LiveServer, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        health = server.client().get("/healthz")
        if health.status == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the service did not connect to Ray within {timeout} s: {health.body!r}")
        time.sleep(0.1)


_PLACEMENT = re.compile(r"sr-web: on Ray node (\w+) \(([\d.]+)\), task pid (\d+), worker pid (\d+)")


@dataclass(frozen=True)
class Placement:
    """Where a job ran, from the first line the service writes to the job's log."""

    node_id: str
    node_ip: str
    task_pid: int
    worker_pid: int


def placement(server: LiveServer | Path, job_id: str) -> Placement | None:
    """From a live server, or from a data folder."""
    data_dir = server if isinstance(server, Path) else server.data_dir
    path = data_dir / "state" / "logs" / f"{job_id}.log"
    try:
        found = _PLACEMENT.search(path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    if found is None:
        return None
    return Placement(found[1], found[2], int(found[3]), int(found[4]))


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting to be reaped counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def driver_processes(service_pid: int) -> list[psutil.Process]:
    """The live Ray driver processes that the service process `service_pid` runs."""
    try:
        children = psutil.Process(service_pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "web.backends.ray.driver" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            continue
    return found
