"""Latency of GET /api/jobs/<id> while a job runs, under concurrent pollers, on a real server on loopback.

For each server set-up (gunicorn with deploy/gunicorn.conf.py, or `python -m web`) and each worker
niceness, the script starts the service on a fresh data folder, submits one long job, waits until the
worker has started on it, then runs N pollers for a fixed time and reports the latency percentiles.
Pollers are asyncio tasks in this process, each on its own keep-alive connection as a browser would be
(or a new connection per request with --no-keepalive), polling back to back (--interval 0, the
worst case) or with a pause between requests.

    .venv/bin/python bench/bench_polling.py                       # the figures in docs/benchmarks.md
    .venv/bin/python bench/bench_polling.py --servers gunicorn --nice 10 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
from PIL import Image  # noqa: E402

SHARED = REPO_ROOT.parent / "shared"


@dataclass
class Result:
    server: str
    job: str  # "running" while polling, or "idle" (polling a finished job, no worker alive)
    nice: int | None
    interval_s: float
    pollers: int
    requests: int
    errors: int
    running_share: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput_rps: float
    server_cpu_us_per_request: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(spec: str, data_dir: Path, model: Path, nice: int, log: Path) -> tuple[subprocess.Popen, int]:
    """spec: "gunicorn" or "werkzeug", optionally followed by ":NAME=VALUE" settings for the service."""
    kind, *settings = spec.split(":")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    env.update(
        SR_DATA_DIR=str(data_dir),
        SR_MODEL_PATH=str(model),
        SR_WORKER_NICE=str(nice),
        SR_BIND=f"127.0.0.1:{port}",
        SR_LOG_LEVEL="warning",
    )
    env.update(setting.split("=", 1) for setting in settings)
    if kind == "gunicorn":
        cmd = [str(Path(sys.executable).parent / "gunicorn"), "-c", "deploy/gunicorn.conf.py"]
    else:
        cmd = [sys.executable, "-m", "web", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if get(port, "/healthz")[0] in (200, 503):
                return proc, port
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{spec} did not start; see {log}")


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def submit(port: int, photo: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="bench.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/jobs", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 202:
        raise SystemExit(f"upload refused: {response.status} {data[:200]!r}")
    return json.loads(data)["id"]


def wait_for(port: int, job_id: str, predicate, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(get(port, f"/api/jobs/{job_id}")[1])
        if predicate(job):
            return job
        time.sleep(0.05)
    raise SystemExit(f"job {job_id} did not reach the expected state in {timeout} s")


class Poller:
    """One client: a keep-alive HTTP/1.1 connection (reopened when the server closes it), or a new
    connection per request."""

    def __init__(self, port: int, path: str, keepalive: bool):
        self.port = port
        self.keepalive = keepalive
        connection = "keep-alive" if keepalive else "close"
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def get(self) -> tuple[float, int, bool]:
        started = time.perf_counter()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        body = await self.reader.readexactly(int(match.group(1))) if match else await self.reader.read()
        elapsed = time.perf_counter() - started
        status = int(head[9:12])
        if not self.keepalive or not match or re.search(rb"(?i)\r\nconnection: *close", head) or head.startswith(b"HTTP/1.0"):
            await self.close()
        return elapsed, status, b'"status":"running"' in body


async def pollers(
    port: int, job_id: str, count: int, seconds: float, interval: float, keepalive: bool
) -> tuple[list[float], int, int]:
    path = f"/api/jobs/{job_id}"
    latencies: list[float] = []
    errors = 0
    running = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal errors, running
        poller = Poller(port, path, keepalive)
        if interval:
            # Independent clients are not in step: each starts at its own point of the interval.
            await asyncio.sleep(random.uniform(0, interval))
        while time.perf_counter() < deadline:
            try:
                elapsed, status, is_running = await poller.get()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                errors += 1
                await poller.close()
                continue
            if status != 200:
                errors += 1
                continue
            latencies.append(elapsed)
            running += is_running
            if interval:
                await asyncio.sleep(interval)
        await poller.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies, errors, running


def _cpu_seconds(service: psutil.Process) -> float:
    """CPU time of the service process and its gunicorn worker, not counting job workers."""
    total = 0.0
    for proc in [service, *service.children(recursive=True)]:
        try:
            if any("sr_infer" in arg for arg in proc.cmdline()):
                continue
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def run_case(
    kind: str, nice: int | None, args: argparse.Namespace, model: Path, photo: bytes, small: bytes, work: Path
) -> Result:
    data_dir = work / f"{kind}-nice{nice}-{uuid.uuid4().hex[:6]}"
    proc, port = start_server(kind, data_dir, model, 10 if nice is None else nice, work / "server.log")
    try:
        if nice is None:
            job_id = submit(port, small)
            wait_for(port, job_id, lambda j: j["status"] in ("done", "failed"))
        else:
            job_id = submit(port, photo)
            wait_for(port, job_id, lambda j: j["status"] == "running" and j["tiles"]["total"] > 0)
        service = psutil.Process(proc.pid)
        cpu_before = _cpu_seconds(service)
        latencies, errors, running = asyncio.run(
            pollers(port, job_id, args.pollers, args.seconds, args.interval, args.keepalive)
        )
        cpu_used = _cpu_seconds(service) - cpu_before
    finally:
        # Stopping the service also stops the job's worker.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not latencies:
        raise SystemExit(f"{kind}: no successful requests")
    ms = [x * 1000 for x in latencies]
    return Result(
        server=kind,
        job="idle" if nice is None else "running",
        nice=nice,
        interval_s=args.interval,
        pollers=args.pollers,
        requests=len(ms),
        errors=errors,
        running_share=round(running / len(ms), 3),
        p50_ms=round(statistics.median(ms), 2),
        p90_ms=round(percentile(ms, 0.90), 2),
        p99_ms=round(percentile(ms, 0.99), 2),
        max_ms=round(max(ms), 2),
        throughput_rps=round(len(ms) / args.seconds, 1),
        server_cpu_us_per_request=round(cpu_used / len(ms) * 1e6, 1),
    )


def make_photo(size: str) -> bytes:
    """coffee.png resized to WxH, as PNG."""
    width, height = (int(v) for v in size.lower().split("x"))
    with Image.open(SHARED / "photos" / "coffee.png") as coffee:
        image = coffee.convert("RGB").resize((width, height), Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers", default="gunicorn,werkzeug",
        help="comma list of gunicorn, werkzeug, each optionally with :NAME=VALUE settings (gunicorn:SR_WEB_THREADS=8)",
    )
    parser.add_argument(
        "--nice", default="idle,10,0,19",
        help="comma list of SR_WORKER_NICE values for the running job; 'idle' polls with no job running",
    )
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0, help="polling time per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="times each case runs, interleaved")
    parser.add_argument("--interval", type=float, default=0.0, help="pause between one poller's requests (s)")
    parser.add_argument(
        "--keepalive", action=argparse.BooleanOptionalAction, default=True,
        help="reuse each poller's connection, as browsers do (default); --no-keepalive opens one per request",
    )
    parser.add_argument("--size", default="2400x1600", help="input photo size (a resized coffee.png)")
    parser.add_argument("--model", type=Path, help="model file (default: a generated EDSR-layout x3 net, 8 blocks x 32 filters)")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench" / "out" / "polling.json")
    args = parser.parse_args()

    cases = [
        (kind.strip(), None if n.strip() == "idle" else int(n))
        for kind in args.servers.split(",")
        for n in args.nice.split(",")
    ]
    results: list[Result] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from tests.fixtures.edsr_graph import write_edsr_graph

            # Heavier than the test fixture, so that one job outlasts every polling window.
            model = write_edsr_graph(work / "EDSR_x3.pb", blocks=8, filters=32)
        photo = make_photo(args.size)
        small = make_photo("60x40")
        # Rounds interleave the cases, so that load from elsewhere on the machine falls on all of them.
        for round_no in range(args.rounds):
            for kind, nice in cases:
                result = run_case(kind, nice, args, model, photo, small, work)
                results.append(result)
                print(f"round {round_no + 1}: {json.dumps(asdict(result))}", file=sys.stderr, flush=True)

    print(f"\n{args.pollers} pollers, {'keep-alive' if args.keepalive else 'a connection per request'}, "
          f"pause {args.interval:g} s between one poller's requests, {args.seconds:g} s per case, "
          f"{args.rounds} rounds; job: {args.size} photo, "
          f"model {args.model.name if args.model else 'EDSR-layout x3, 8 blocks x 32 filters'}. Medians over the rounds. "
          f"Machine load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs).\n")
    print("| server | job | worker nice | requests | errors | answers 'running' | p50 ms | p99 ms | worst round p99 ms "
          "| req/s | service CPU µs/req |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, nice in cases:
        rs = [r for r in results if r.server == kind and r.nice == nice and (r.job == "idle") == (nice is None)]
        med = lambda field: statistics.median(getattr(r, field) for r in rs)  # noqa: E731
        print(
            f"| {kind} | {'idle' if nice is None else 'running'} | {'-' if nice is None else nice} "
            f"| {sum(r.requests for r in rs)} | {sum(r.errors for r in rs)} "
            f"| {sum(r.running_share * r.requests for r in rs) / sum(r.requests for r in rs):.0%} "
            f"| {med('p50_ms'):.1f} | {med('p99_ms'):.1f} | {max(r.p99_ms for r in rs):.1f} "
            f"| {med('throughput_rps'):.0f} | {med('server_cpu_us_per_request'):.0f} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
