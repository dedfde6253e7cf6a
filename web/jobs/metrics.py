"""The service's Prometheus metrics: jobs, uploads, queue wait, worker and accelerator seconds, per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Upper bounds (seconds) of the job duration histogram: small photos take seconds, big EDSR jobs minutes.
JOB_SECONDS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Queue wait: nothing at all when idle, up to many minutes behind a batch of EDSR jobs.
QUEUE_SECONDS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Snapshot:
    """What is read at scrape time rather than counted: queue length, workers, jobs by state."""

    queue_length: int
    workers_running: int
    jobs_by_state: dict[str, int]
    waiting_for_node: int = 0
    # A cluster's worker nodes (Ray backend): seconds alive since the start, and alive now, by kind.
    node_seconds: dict[str, float] = field(default_factory=dict)
    nodes_alive: dict[str, int] = field(default_factory=dict)


class _Gauges(Collector):
    def __init__(self, read: Callable[[], Snapshot]):
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._read()
        yield GaugeMetricFamily("sr_queue_length", "Jobs waiting for a worker.", value=snap.queue_length)
        yield GaugeMetricFamily("sr_workers_running", "Worker processes (or remote tasks) alive now.",
                                value=snap.workers_running)
        yield GaugeMetricFamily("sr_jobs_waiting_for_node", "Running jobs whose task waits for a node to run on "
                                "(Ray: until the autoscaler has started one or a node has room).",
                                value=snap.waiting_for_node)
        seconds = CounterMetricFamily("sr_node_seconds", "Seconds the cluster's worker nodes were alive (Ray "
                                      "backend, counted every 10 s) by kind (gpu, cpu), idle time included: what "
                                      "the cloud bills, less each node's boot.", labels=["kind"])
        for kind, value in sorted(snap.node_seconds.items()):
            seconds.add_metric([kind], value)
        yield seconds
        alive = GaugeMetricFamily("sr_nodes", "The cluster's worker nodes alive now (Ray backend), by kind.",
                                  labels=["kind"])
        for kind, count in sorted(snap.nodes_alive.items()):
            alive.add_metric([kind], count)
        yield alive
        jobs = GaugeMetricFamily("sr_jobs", "Jobs in the store by state.", labels=["state"])
        for state, count in sorted(snap.jobs_by_state.items()):
            jobs.add_metric([state], count)
        yield jobs


class Metrics:
    """Counters and histograms in a registry of this app's own (two apps in one process never mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_finished = Counter("sr_jobs_finished", "Jobs finished since the service started, by outcome "
                                     "(done or the error code).", ["outcome"], registry=r)
        self.uploads_rejected = Counter("sr_uploads_rejected", "Uploads refused before queueing, by HTTP status.",
                                        ["status"], registry=r)
        self.job_seconds = Histogram("sr_job_seconds", "Wall time of finished jobs, from worker start to exit.",
                                     buckets=JOB_SECONDS_BUCKETS, registry=r)
        self.queue_wait = Histogram("sr_queue_wait_seconds", "Time from upload to the start of the job's worker.",
                                    buckets=QUEUE_SECONDS_BUCKETS, registry=r)
        self.worker_seconds = Counter("sr_worker_seconds", "Wall seconds of finished workers, by engine, device and "
                                      "precision.", ["engine", "device", "precision"], registry=r)
        self.gpu_seconds = Counter("sr_gpu_seconds", "Accelerator seconds of done jobs (the worker's gpu_seconds: "
                                   "from creating the CUDA context to releasing its memory).", ["device", "engine"],
                                   registry=r)
        self.cache_hits = Counter("sr_cache_hits", "Jobs served from an earlier result of the same photo and "
                                  "settings, without a worker.", registry=r)
        self.cache_saved_seconds = Counter("sr_cache_saved_seconds", "Worker seconds those cache hits saved (the "
                                           "original job's running time).", registry=r)
        self._gauges: _Gauges | None = None

    def read_gauges_from(self, read: Callable[[], Snapshot]) -> None:
        """Registers the scrape-time gauges (queue, workers, jobs by state), once."""
        if self._gauges is None:
            self._gauges = _Gauges(read)
            self.registry.register(self._gauges)

    def job_started(self, queued_seconds: float) -> None:
        self.queue_wait.observe(max(0.0, queued_seconds))

    def job_finished(self, outcome: str, seconds: float | None, done: dict[str, Any] | None = None) -> None:
        """outcome is "done" or the failure's error code; `done` is the worker's done event, if any."""
        self.jobs_finished.labels(outcome).inc()
        if seconds is None:
            return
        self.job_seconds.observe(seconds)
        if done is None:
            return
        engine, device = str(done.get("engine") or "unknown"), str(done.get("device") or "unknown")
        self.worker_seconds.labels(engine, device, str(done.get("precision") or "unknown")).inc(seconds)
        gpu = done.get("gpu_seconds")
        if isinstance(gpu, (int, float)) and gpu > 0:
            self.gpu_seconds.labels(device, engine).inc(float(gpu))

    def cache_hit(self, saved_seconds: float) -> None:
        self.cache_hits.inc()
        self.cache_saved_seconds.inc(max(0.0, saved_seconds))

    def upload_rejected(self, status: int) -> None:
        self.uploads_rejected.labels(str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
