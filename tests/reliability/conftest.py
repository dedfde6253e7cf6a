"""Reliability fixtures: the real worker CLI, real servers on loopback, and the checks every case ends with."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from tests.helpers import WORKER, WorkerRun, run_worker  # noqa: F401  (the reliability tests import them from here)
from tests.reliability.inputs import MAX_PIXELS
from tests.reliability.outcomes import Case, render
from tests.web.conftest import start_server  # noqa: F401  (a fixture: per-test servers, stopped and checked after)
from tests.web.server import LiveServer, start_live_server, worker_processes
from web.jobs.store import DONE, QUEUED, RUNNING, STATES, JobStore

# Set to a file path to have the observed outcomes written there as a Markdown table (docs/reliability.md).
TABLE_ENV = "SR_RELIABILITY_TABLE"
_CASES = pytest.StashKey[dict]()

Observe = Callable[..., None]


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Observe:
    """observe(group, case, cli=..., http=..., left=..., answering=...): notes what a passing test saw."""
    cases = request.config.stash.setdefault(_CASES, {})

    def note(group: str, name: str, *, cli: str = "", http: str = "", left: str = "", answering: str = "") -> None:
        case = cases.setdefault((group, name), Case(group, name))
        case.cli = cli or case.cli
        case.http = http or case.http
        if left:
            case.left.append(left)
        case.answering = answering or case.answering

    return note


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(TABLE_ENV)
    cases = session.config.stash.get(_CASES, {})
    if target and cases:
        Path(target).write_text(render(list(cases.values())))


def run_cases(cases: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
              model: Path) -> dict[str, tuple[WorkerRun, Path]]:
    """Each case's file (its `filename` and `data`) through the worker, two at a time (each run is its own
    process), into `result.png` in a folder of its own: the run and that output path, by case name."""
    def one(case: Any) -> tuple[WorkerRun, Path]:
        folder = tmp_path_factory.mktemp("cli")
        source = folder / case.filename
        source.write_bytes(case.data)
        output = folder / "result.png"
        return run_worker("--input", source, "--output", output, "--model", model, "--max-pixels", MAX_PIXELS), output

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(cases, pool.map(one, cases.values())))


def wait_idle(server: LiveServer, timeout: float = 30.0) -> None:
    """Until the runner has no queued job and no worker: every job has been settled on disk too."""
    runner = server.services.runner
    deadline = time.monotonic() + timeout
    while runner.queue_length() or runner.workers_running():
        if time.monotonic() > deadline:
            raise AssertionError(f"the runner is still busy after {timeout} s")
        time.sleep(0.02)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def leftovers(data_dir: Path) -> list[str]:
    """Files in uploads/ and results/ that no job accounts for: an upload of a finished job (unless kept),
    a partial or temporary file, or anything in results/ other than the output of a done job."""
    store = JobStore(data_dir / "state" / "jobs.db")
    try:
        jobs = {job.id: job for state in STATES for job in store.in_state(state)}
    finally:
        store.close()
    found = []
    for path in _files(data_dir / "uploads"):
        job = jobs.get(path.name.split(".")[0])
        if path.name == ".gitkeep":
            continue
        if job is None or job.input_file != path.name or not (job.state in (QUEUED, RUNNING) or job.keep_upload):
            found.append(f"uploads/{path.name}")
    for path in _files(data_dir / "results"):
        job = jobs.get(path.name.split(".")[0])
        if path.name == ".gitkeep":
            continue
        if job is None or job.state != DONE or job.output_file != path.name:
            found.append(f"results/{path.name}")
    return found


def assert_settled(server: LiveServer) -> None:
    """The end of every case: nothing left behind, no worker alive, and the service still answering."""
    wait_idle(server)
    assert leftovers(server.data_dir) == []
    assert worker_processes(server.data_dir) == []
    health = server.client().get("/healthz")
    assert health.status == 200, health.body


def session_members(sid: int, zombies: bool = True) -> list[psutil.Process]:
    """Processes in the session a worker leads: the worker and anything it started. A zombie has exited
    but not been reaped; `zombies=False` leaves those out (after its service died, reaping is init's job)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and (zombies or proc.status() != psutil.STATUS_ZOMBIE):
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


@pytest.fixture(scope="session")
def slow_photo(shared_photos: Path) -> bytes:
    """600x400 coffee as PNG: seconds of work with `edsr_model_slow`, 6 tiles."""
    return (shared_photos / "coffee.png").read_bytes()


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, fsrcnn_model: Path) -> Iterator[LiveServer]:
    """One server per module with the tests' pixel limit and two workers at a time."""
    server = start_live_server(
        tmp_path_factory.mktemp("reliability-data"), model_path=fsrcnn_model, max_pixels=MAX_PIXELS, concurrency=2
    )
    yield server
    server.stop()
    assert worker_processes(server.data_dir) == []
