"""Load/soak run on loopback: many concurrent uploads to a real `python -m web`, every result checked against
its own photo, live workers counted, and the service's memory, threads and open files compared before/after."""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from infer import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # the test helpers live in tests/, which is not installed
from tests.reliability.inputs import pattern  # noqa: E402
from tests.web.client import HttpClient  # noqa: E402
from tests.web.server import ServiceProcess, start_service_process  # noqa: E402

DEFAULT_MODEL = REPO_ROOT.parent / "shared" / "models" / "FSRCNN_x3.pb"
SCALE = 3
# Mean absolute difference (0-255) between a result shrunk back by SCALE and its own photo.
MATCH_TOLERANCE = 8.0


@dataclass
class JobOutcome:
    index: int
    job_id: str | None = None
    status: str = "not sent"
    error: str | None = None
    seconds: float = 0.0  # upload to result downloaded and checked


@dataclass
class SoakReport:
    jobs: int
    clients: int
    concurrency: int
    model: str
    done: int = 0
    errors: int = 0
    seconds: float = 0.0
    jobs_per_minute: float = 0.0
    job_seconds_median: float = 0.0
    job_seconds_max: float = 0.0
    peak_workers: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    rss_margin_mb: float = 0.0
    threads_before: int = 0
    threads_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    fds_margin: int = 10  # SQLite keeps a few files of closed connections open for reuse
    workers_left: int = 0
    timed_out: bool = False
    failures: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0 and self.done == self.jobs and not self.timed_out and self.workers_left == 0
            and self.peak_workers <= self.concurrency
            and self.rss_after_mb - self.rss_before_mb <= self.rss_margin_mb
            and self.fds_after - self.fds_before <= self.fds_margin
        )


def photo_for(index: int) -> tuple[bytes, np.ndarray]:
    """A PNG whose size is unique to its index (24+i wide), so that a swapped result cannot pass."""
    pixels = pattern(24 + index, 16 + index % 7, seed=1000 + index)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def check_result(body: bytes, own: np.ndarray) -> str | None:
    """None when the result is its own photo upscaled; else what is wrong."""
    with Image.open(io.BytesIO(body)) as result:
        result = result.convert("RGB")
    height, width = own.shape[:2]
    if result.size != (width * SCALE, height * SCALE):
        return f"result is {result.size[0]}x{result.size[1]}, expected {width * SCALE}x{height * SCALE}"
    shrunk = np.asarray(result.resize((width, height), Image.Resampling.BOX), dtype=np.float64)
    difference = float(np.abs(shrunk - own).mean())
    if difference > MATCH_TOLERANCE:
        return f"result differs from its photo by {difference:.1f} on average"
    return None


class WorkerSampler:
    """Counts the service's live worker processes every few milliseconds and keeps the peak."""

    def __init__(self, service_pid: int, interval: float = 0.005):
        self.service = psutil.Process(service_pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def count(self) -> int:
        alive = 0
        try:
            children = self.service.children(recursive=True)
        except psutil.Error:
            return 0
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE and any(a.endswith("sr_infer.py") for a in child.cmdline()):
                    alive += 1
            except psutil.Error:
                continue
        return alive

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.count())
            time.sleep(self.interval)

    def __enter__(self) -> "WorkerSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_job(client: HttpClient, index: int, deadline: float) -> JobOutcome:
    outcome = JobOutcome(index)
    started = time.monotonic()
    data, pixels = photo_for(index)
    try:
        reply = client.upload(data, filename=f"soak-{index}.png", timeout=30)
        if reply.status != 202:
            outcome.status, outcome.error = "refused", f"HTTP {reply.status}: {reply.body[:200]!r}"
            return outcome
        outcome.job_id = reply.json()["id"]
        while True:
            job = client.job(outcome.job_id)
            if job["status"] in ("done", "failed"):
                break
            if time.monotonic() > deadline:
                outcome.status, outcome.error = job["status"], "still not finished at the deadline"
                return outcome
            time.sleep(0.05)
        outcome.status = job["status"]
        if job["status"] != "done":
            outcome.error = f"{job['error']['code']}: {job['error']['message']}"
            return outcome
        result = client.get(job["links"]["result"], timeout=30)
        if result.status != 200 or result.header("X-Job-Id") != outcome.job_id:
            outcome.error = f"result download: HTTP {result.status}, X-Job-Id {result.header('X-Job-Id')}"
        else:
            outcome.error = check_result(result.body, pixels)
    except Exception as exc:  # a broken connection or a bad answer is an error of the run, not a crash of it
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def _settle(client: HttpClient, timeout: float = 30.0) -> None:
    """Until the service reports no queued job and no worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = client.get("/healthz").json()
        if health["queue_length"] == 0 and health["workers_running"] == 0:
            return
        time.sleep(0.1)


def _usage(service: ServiceProcess) -> tuple[float, int, int]:
    proc = psutil.Process(service.proc.pid)
    return proc.memory_info().rss / 2**20, proc.num_threads(), proc.num_fds()


def soak(jobs: int, clients: int, concurrency: int, model: Path, max_seconds: float, rss_margin_mb: float,
         data_dir: Path) -> SoakReport:
    report = SoakReport(jobs=jobs, clients=clients, concurrency=concurrency, model=model.name,
                        rss_margin_mb=rss_margin_mb)
    env = {
        "SR_DATA_DIR": str(data_dir / "data"),
        "SR_MODEL_PATH": str(model),
        "SR_CONCURRENCY": str(concurrency),
        "SR_QUEUE_SIZE": str(max(100, jobs)),
    }
    service = start_service_process(data_dir / "service.log", env)
    try:
        client = service.client()
        # Warm-up: the first job and a burst of requests bring in what the service keeps for its lifetime.
        warm = [run_job(client, -1 - i, time.monotonic() + 60) for i in range(2)]
        if any(o.error for o in warm):
            raise RuntimeError(f"the warm-up job failed: {[o.error for o in warm]}")
        _settle(client)
        report.rss_before_mb, report.threads_before, report.fds_before = _usage(service)

        started = time.monotonic()
        deadline = started + max_seconds
        with WorkerSampler(service.proc.pid) as sampler, ThreadPoolExecutor(clients) as pool:
            outcomes = list(pool.map(lambda i: run_job(service.client(), i, deadline), range(jobs)))
        report.seconds = round(time.monotonic() - started, 2)
        report.peak_workers = sampler.peak
        report.timed_out = time.monotonic() > deadline

        _settle(client)
        time.sleep(0.5)
        report.rss_after_mb, report.threads_after, report.fds_after = _usage(service)
    finally:
        service.terminate()
    report.workers_left = sum(
        1 for p in psutil.process_iter(["cmdline"])
        if any(str(data_dir) in a for a in (p.info["cmdline"] or [])) and p.pid != service.proc.pid
    )

    report.done = sum(1 for o in outcomes if o.status == "done" and o.error is None)
    report.failures = [asdict(o) for o in outcomes if o.error is not None]
    report.errors = len(report.failures)
    report.jobs_per_minute = round(jobs / report.seconds * 60, 1) if report.seconds else 0.0
    times = [o.seconds for o in outcomes]
    report.job_seconds_median = round(statistics.median(times), 2)
    report.job_seconds_max = round(max(times), 2)
    report.rss_before_mb = round(report.rss_before_mb, 1)
    report.rss_after_mb = round(report.rss_after_mb, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50, help="uploads to send (default 50)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--concurrency", type=int, default=2, help="SR_CONCURRENCY of the service (default 2)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model file (default: shared FSRCNN_x3)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="the run stops by itself after this long")
    parser.add_argument("--rss-margin-mb", type=float, default=25.0,
                        help="allowed growth of the service's memory from before to after (default 25 MB)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.clients < 1 or args.concurrency < 1:
        parser.error("--jobs, --clients and --concurrency must be at least 1")
    if not args.model.is_file():
        parser.error(f"model {args.model} not found")

    with tempfile.TemporaryDirectory(prefix="sr-soak-") as tmp:
        report = soak(args.jobs, args.clients, args.concurrency, args.model.resolve(), args.max_seconds,
                      args.rss_margin_mb, Path(tmp))
    text = json.dumps({**asdict(report), "ok": report.ok}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print(
        f"soak: {report.done}/{report.jobs} done, {report.errors} errors, {report.seconds} s, "
        f"peak {report.peak_workers} workers (limit {report.concurrency}), service RSS "
        f"{report.rss_before_mb} -> {report.rss_after_mb} MB (margin {report.rss_margin_mb:g}), open files "
        f"{report.fds_before} -> {report.fds_after} (margin {report.fds_margin}): "
        f"{'OK' if report.ok else 'FAILED'}",
        file=sys.stderr,
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
