"""The job queue and its supervisors: one worker process per job, at most SR_CONCURRENCY alive at once."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from infer import REPO_ROOT
from infer import errors as worker_errors
from web.config import Config
from web.jobs import QUEUED, RUNNING, DONE, Job, JobStore
from web.metrics import Metrics

log = logging.getLogger(__name__)

RESTART_MESSAGE = "the service restarted while this photo was being processed; upload it again"
STOP_MESSAGE = "the service stopped while this photo was being processed; upload it again"

# Worker exit code -> job error code, from the worker's own error classes.
EXIT_CODES: dict[int, str] = {
    cls.exit_code: cls.code
    for cls in (
        worker_errors.WorkerError,
        worker_errors.UsageError,
        worker_errors.InputError,
        worker_errors.TooLargeError,
        worker_errors.ModelError,
        worker_errors.OutOfMemoryError,
        worker_errors.OutputError,
    )
}

# What to tell the person when the worker exited without an `error` event of its own.
FALLBACK_MESSAGES = {
    "usage": "the service started the worker wrongly; please report this",
    "bad_input": "this file could not be read as a photo; try another file or save it again as PNG or JPEG",
    "too_many_pixels": "the photo has too many pixels; resize it first",
    "model_error": "the upscaling model could not be loaded; the administrator should check SR_MODEL_PATH",
    "out_of_memory": "there was not enough memory to upscale this photo; try a smaller one",
    "output_error": "the result could not be saved; the administrator should check the disk",
    "internal_error": "the upscaling failed unexpectedly; try again, and report it if it keeps happening",
}

STDERR_LOG_LIMIT = 256 * 1024
_PROGRESS_WRITE_INTERVAL = 0.2
# Environment variables the worker never needs.
_PRIVATE_ENV = ("SR_AUTH_TOKEN",)


class QueueFull(Exception):
    """The queue holds SR_QUEUE_SIZE jobs already."""


@dataclass
class WorkerReport:
    """What the worker said on stdout during one job."""

    start: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    progress_done: int = 0
    progress_total: int = 0
    bad_lines: int = 0


@dataclass
class _Running:
    proc: subprocess.Popen
    cancelled: bool = False
    stopping: bool = False
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)


class Runner:
    """FIFO of job ids feeding `concurrency` supervisor threads, each running one worker at a time."""

    def __init__(self, config: Config, store: JobStore, metrics: Metrics):
        self.config = config
        self.store = store
        self.metrics = metrics
        self._pending: deque[str] = deque()
        self._cv = threading.Condition()
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Settles what a previous run left behind, then starts the supervisors."""
        self._recover()
        for i in range(self.config.concurrency):
            thread = threading.Thread(target=self._supervise, name=f"sr-supervisor-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Kills running workers (their jobs fail with a clear message); queued jobs wait for the next start."""
        with self._cv:
            if self._stopping:
                return
            self._stopping = True
            for running in self._running.values():
                running.stopping = True
                _kill_group(running.proc)
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _recover(self) -> None:
        """Jobs left `running` by a previous process fail (their worker is killed if still alive);
        `queued` jobs whose upload still exists are queued again in their original order."""
        for job in self.store.in_state(RUNNING):
            self._kill_orphan(job)
            self._remove_partial_output(job)
            self.store.fail(job.id, "interrupted", RESTART_MESSAGE)
            self._discard_upload(job)
            log.warning("job %s was running when the service stopped; marked failed", job.id)
        for job in self.store.in_state(QUEUED):
            if (self.config.uploads_dir / job.input_file).is_file():
                self._pending.append(job.id)
            else:
                self.store.fail(job.id, "upload_missing", "the uploaded photo is gone; upload it again")

    def _kill_orphan(self, job: Job) -> None:
        if not job.worker_pid:
            return
        try:
            proc = psutil.Process(job.worker_pid)
            # Only a worker of this very job: the pid may have been reused since.
            if not any(job.output_file in arg for arg in proc.cmdline()):
                return
            os.killpg(job.worker_pid, signal.SIGKILL)
            proc.wait(5)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass

    # ---- queue -----------------------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        with self._cv:
            if len(self._pending) >= self.config.queue_size:
                raise QueueFull(job_id)
            self._pending.append(job_id)
            self._cv.notify()

    def cancel(self, job_id: str) -> None:
        """Takes a job out of the queue, or kills its worker if it is running (the job row is the caller's)."""
        with self._cv:
            try:
                self._pending.remove(job_id)
            except ValueError:
                pass
            running = self._running.get(job_id)
            if running is not None:
                running.cancelled = True
                _kill_group(running.proc)

    def queue_length(self) -> int:
        with self._cv:
            return len(self._pending)

    def workers_running(self) -> int:
        with self._cv:
            return len(self._running)

    def _next(self) -> str | None:
        with self._cv:
            while not self._pending and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return None
            return self._pending.popleft()

    # ---- one job ---------------------------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            job_id = self._next()
            if job_id is None:
                return
            try:
                self._run(job_id)
            except Exception:
                log.exception("job %s: supervisor failed", job_id)
                self.store.fail(job_id, "internal_error", FALLBACK_MESSAGES["internal_error"])

    def _command(self, job: Job) -> list[str]:
        return [
            sys.executable,
            str(self.config.worker_script),
            "--input",
            str(self.config.uploads_dir / job.input_file),
            "--output",
            str(self.config.results_dir / job.output_file),
            "--model",
            str(self.config.model_path),
            "--max-pixels",
            str(self.config.max_pixels),
        ]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        env["SR_MODEL_PATH"] = str(self.config.model_path)
        env["SR_MAX_PIXELS"] = str(self.config.max_pixels)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != QUEUED:
            return
        if not (self.config.uploads_dir / job.input_file).is_file():
            self.store.fail(job.id, "upload_missing", "the uploaded photo is gone; upload it again")
            return
        self.config.results_dir.mkdir(parents=True, exist_ok=True)
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        with self._cv:
            if self._stopping:
                return
            proc = subprocess.Popen(
                self._command(job),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._environment(),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
            running = _Running(proc)
            self._running[job.id] = running
        try:
            self._supervise_process(job, running)
        finally:
            with self._cv:
                self._running.pop(job.id, None)

    def _supervise_process(self, job: Job, running: _Running) -> None:
        proc = running.proc
        _lower_priority(proc.pid, self.config.worker_nice)
        if not self.store.start(job.id, proc.pid):
            running.cancelled = True  # deleted between leaving the queue and starting
            _kill_group(proc)
        report = WorkerReport()
        reader = threading.Thread(target=self._read_events, args=(job, proc.stdout, report), daemon=True)
        logger = threading.Thread(
            target=_copy_bounded, args=(proc.stderr, self.config.logs_dir / f"{job.id}.log"), daemon=True
        )
        reader.start()
        logger.start()
        try:
            proc.wait(timeout=self.config.job_timeout_s)
        except subprocess.TimeoutExpired:
            running.timed_out = True
            _kill_group(proc)
            proc.wait()
        # Anything the worker started in its group goes with it.
        _kill_group(proc)
        reader.join(5)
        logger.join(5)
        seconds = time.monotonic() - running.started
        self._finish(job, running, report, seconds)

    def _read_events(self, job: Job, stream: IO[bytes], report: WorkerReport) -> None:
        last_write = 0.0
        for raw in stream:
            try:
                event = json.loads(raw)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                report.bad_lines += 1
                continue
            if kind == "start":
                report.start = event
                report.progress_total = int(event.get("tiles") or 0)
                self.store.update(
                    job.id,
                    progress_total=report.progress_total,
                    engine=event.get("engine"),
                    device=event.get("device"),
                )
            elif kind == "progress":
                report.progress_done = int(event.get("done") or 0)
                report.progress_total = int(event.get("total") or report.progress_total)
                now = time.monotonic()
                if now - last_write >= _PROGRESS_WRITE_INTERVAL or report.progress_done >= report.progress_total:
                    last_write = now
                    self.store.update(
                        job.id, progress_done=report.progress_done, progress_total=report.progress_total
                    )
            elif kind == "done":
                report.done = event
            elif kind == "error":
                report.error = event
        stream.close()

    def _finish(self, job: Job, running: _Running, report: WorkerReport, seconds: float) -> None:
        rc = running.proc.returncode
        output = self.config.results_dir / job.output_file
        if running.cancelled:
            self._remove_partial_output(job, keep_result=False)
            (self.config.logs_dir / f"{job.id}.log").unlink(missing_ok=True)
            return
        if running.stopping:
            self._remove_partial_output(job)
            self.store.fail(job.id, "interrupted", STOP_MESSAGE)
            self._discard_upload(job)
            return
        if rc == 0 and report.done is not None and output.is_file():
            done = report.done
            width, height = done.get("width"), done.get("height")
            recorded = self.store.update(
                job.id,
                state=DONE,
                finished_at=time.time(),
                progress_done=max(report.progress_done, report.progress_total),
                output_width=int(width) if width else job.input_width * job.scale,
                output_height=int(height) if height else job.input_height * job.scale,
                output_bytes=output.stat().st_size,
                engine=done.get("engine") or job.engine,
                device=done.get("device") or job.device,
                timings=done.get("seconds") or {},
                peak_rss_mb=done.get("peak_rss_mb"),
                exit_code=0,
                worker_pid=None,
            )
            # Deleted while the worker was finishing: the result has no job left to belong to.
            self._remove_partial_output(job, keep_result=recorded)
            self._discard_upload(job)
            self.metrics.job_finished("done", seconds)
            log.info("job %s done in %.2f s", job.id, seconds)
            return
        code, message = self._failure(job, running, report, rc)
        self._remove_partial_output(job, keep_result=False)
        self.store.fail(job.id, code, message, exit_code=rc)
        self._discard_upload(job)
        self.metrics.job_finished(code, seconds)
        log.warning("job %s failed (%s, exit %s): %s", job.id, code, rc, message)

    def _public_message(self, job: Job, message: str) -> str:
        """The worker names files by their server paths; the person knows their photo by its own name."""
        replacements = {
            str(self.config.uploads_dir / job.input_file): repr(job.original_name),
            str(self.config.results_dir / job.output_file): "the result",
            str(self.config.model_path): self.config.model_path.name,
            str(self.config.data_dir): "the data folder",
        }
        for server_text, public_text in replacements.items():
            message = message.replace(server_text, public_text)
        return message

    def _failure(self, job: Job, running: _Running, report: WorkerReport, rc: int | None) -> tuple[str, str]:
        if running.timed_out:
            return "timeout", (
                f"took longer than {self.config.job_timeout_s:g} seconds (SR_JOB_TIMEOUT_S) and was stopped; "
                "try a smaller photo"
            )
        if report.error is not None:
            code = report.error.get("code")
            if not isinstance(code, str):
                code = EXIT_CODES.get(rc if rc is not None else 1, "internal_error")
            message = report.error.get("message") or FALLBACK_MESSAGES.get(code, FALLBACK_MESSAGES["internal_error"])
            return code, self._public_message(job, str(message))
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return "worker_killed", (
                f"the upscaling process was stopped unexpectedly ({name}); upload the photo again"
            )
        if rc == 0:
            return "internal_error", "the upscaling finished without writing a result; try again"
        code = EXIT_CODES.get(rc if rc is not None else 1, "internal_error")
        return code, FALLBACK_MESSAGES.get(code, FALLBACK_MESSAGES["internal_error"])

    def _discard_upload(self, job: Job) -> None:
        """A finished job's upload has no further use (a failed one is uploaded again), unless SR_KEEP_UPLOADS."""
        if not job.keep_upload:
            (self.config.uploads_dir / job.input_file).unlink(missing_ok=True)

    def _remove_partial_output(self, job: Job, keep_result: bool = False) -> None:
        """Removes what a worker of this job may have left in results/ (temp files, or the result itself)."""
        results = self.config.results_dir
        if not results.is_dir():
            return
        for path in results.iterdir():
            if job.id in path.name and not (keep_result and path.name == job.output_file):
                path.unlink(missing_ok=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the worker's whole process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _lower_priority(pid: int, nice: int) -> None:
    """Keeps the web threads responsive while a worker saturates the CPU. Done right after the start,
    before the worker spawns its compute threads, which inherit the value."""
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass


def _copy_bounded(stream: IO[bytes], path: Path, limit: int = STDERR_LOG_LIMIT) -> None:
    """Copies the worker's stderr to its log file, keeping the first `limit` bytes and draining the rest."""
    written = 0
    truncated = False
    with open(path, "wb") as out:
        for line in stream:
            if written + len(line) <= limit:
                out.write(line)
                out.flush()
                written += len(line)
            elif not truncated:
                out.write(b"[log truncated]\n")
                truncated = True
    stream.close()
