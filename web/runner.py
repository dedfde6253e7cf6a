"""The job queue and its supervisors: one worker per job through a backend, at most SR_CONCURRENCY at once."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from infer.contract import Done, Error, Event, Progress, Start, Unreadable, parse_event

from web.backends import Backend, BackendUnavailable, Execution, JobSpec
from web.cache import ResultCache
from web.config import Config
from web.jobs import QUEUED, RUNNING, DONE, Job, JobStore
from web.metrics import Metrics
from web.options import model_path_for
from web.outcomes import (  # noqa: F401  (RESTART_MESSAGE, STOP_MESSAGE: imported from here by callers)
    FALLBACK_MESSAGES,
    RESTART_MESSAGE,
    STOP_MESSAGE,
    UNAVAILABLE_MESSAGE,
    Ending,
    Verdict,
    WorkerReport,
    decide_outcome,
)

log = logging.getLogger(__name__)

_PROGRESS_WRITE_INTERVAL = 0.2


class QueueFull(Exception):
    """The queue holds SR_QUEUE_SIZE jobs already."""


@dataclass
class _Running:
    execution: Execution
    job: Job | None = None
    cancelled: bool = False
    stopping: bool = False
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)


class _EventRecorder:
    """Turns the worker's events into the job's report and row updates (progress at most every 0.2 s)."""

    def __init__(self, store: JobStore, job_id: str):
        self.store = store
        self.job_id = job_id
        self.report = WorkerReport()
        self._last_write = 0.0

    def __call__(self, raw: Event | Mapping[str, Any]) -> None:
        report = self.report
        event = parse_event(raw)
        if isinstance(event, Unreadable):
            report.bad_lines += 1
        elif isinstance(event, Start):
            report.start = dict(event.record)
            report.progress_total = event.tiles
            self.store.update(
                self.job_id,
                progress_total=report.progress_total,
                engine=event.engine,
                device=event.device,
            )
        elif isinstance(event, Progress):
            report.progress_done = event.done
            report.progress_total = event.total or report.progress_total
            now = time.monotonic()
            if now - self._last_write >= _PROGRESS_WRITE_INTERVAL or report.progress_done >= report.progress_total:
                self._last_write = now
                self.store.update(
                    self.job_id, progress_done=report.progress_done, progress_total=report.progress_total
                )
        elif isinstance(event, Done):
            report.done = dict(event.record)
        elif isinstance(event, Error):
            report.error = dict(event.record)


class Runner:
    """FIFO of job ids feeding `concurrency` supervisor threads, each running one job at a time on the backend."""

    def __init__(self, config: Config, store: JobStore, metrics: Metrics, backend: Backend,
                 cache: ResultCache | None = None):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.backend = backend
        self.cache = cache
        self._pending: deque[str] = deque()
        self._cv = threading.Condition()
        self._running: dict[str, _Running] = {}
        # job id -> jobs with the same cache key waiting for it, queued again when it ends
        self._followers: dict[str, list[str]] = {}
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
                running.execution.kill()
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _recover(self) -> None:
        """Jobs left `running` by a previous process fail (the backend ends their workers if still alive);
        `queued` jobs whose upload still exists are queued again in their original order."""
        interrupted = self.store.in_state(RUNNING)
        if interrupted:
            try:
                self.backend.recover(interrupted)
            except Exception:
                log.exception("could not end the workers of %d interrupted job(s)", len(interrupted))
        for job in interrupted:
            self._remove_partial_output(job)
            self.store.fail(job.id, "interrupted", RESTART_MESSAGE)
            self._discard_upload(job)
            log.warning("job %s was running when the service stopped; marked failed", job.id)
        for job in self.store.in_state(QUEUED):
            if (self.config.uploads_dir / job.input_file).is_file():
                self._pending.append(job.id)
            else:
                self.store.fail(job.id, "upload_missing", "the uploaded photo is gone; upload it again")

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
                running.execution.kill()

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
                self._remove_partial_output_by_id(job_id)
                self.store.fail(job_id, "internal_error", FALLBACK_MESSAGES["internal_error"])
                job = self.store.get(job_id)
                if job is not None:
                    self._discard_upload(job)

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != QUEUED:
            return
        if not (self.config.uploads_dir / job.input_file).is_file():
            self.store.fail(job.id, "upload_missing", "the uploaded photo is gone; upload it again")
            return
        self.config.results_dir.mkdir(parents=True, exist_ok=True)
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        spec = JobSpec(
            job_id=job.id,
            input_path=self.config.uploads_dir / job.input_file,
            output_path=self.config.results_dir / job.output_file,
            log_path=self.config.logs_dir / f"{job.id}.log",
            model_path=model_path_for(self.config, job.model),
            denoise=job.denoise or "off",
            is_default_model=model_path_for(self.config, job.model) == self.config.model_path,
        )
        recorder = _EventRecorder(self.store, job.id)
        with self._cv:
            if self._stopping:
                return
            # Under the lock that also ends running jobs: a job whose twin is running waits for it, one
            # whose twin has finished takes its result; neither starts a worker.
            if self.cache is not None and job.cache_key:
                leader = next((r.job for r in self._running.values() if r.job and self.cache.leads(job, r.job)), None)
                if leader is not None:
                    self._followers.setdefault(leader.id, []).append(job.id)
                    log.info("job %s waits for job %s, which makes the same result", job.id, leader.id)
                    return
                source = self.cache.find_done(job)
                if source is not None and self.cache.serve(job, source):
                    self._served_from_cache(job, source)
                    return
            try:
                running = _Running(self.backend.launch(spec, recorder))
            except BackendUnavailable as err:
                log.error("job %s could not be started: %s", job.id, err)
                self.store.fail(job.id, "unavailable", UNAVAILABLE_MESSAGE)
                self._discard_upload(job)
                self.metrics.job_finished("unavailable", 0.0)
                return
            running.job = job
            self._running[job.id] = running
        try:
            self._supervise_execution(job, running, recorder.report)
        finally:
            with self._cv:
                self._running.pop(job.id, None)
                # Its twins go first: each now finds the result (or, if this job failed, runs its own).
                for follower in reversed(self._followers.pop(job.id, [])):
                    self._pending.appendleft(follower)
                self._cv.notify_all()

    def _served_from_cache(self, job: Job, source: Job) -> None:
        served = self.store.get(job.id)
        self._discard_upload(job)
        if served is not None:
            self.metrics.cache_hit(served.cache_saved_s or 0.0)
            log.info("job %s served from the result of job %s", job.id, source.id)

    def _supervise_execution(self, job: Job, running: _Running, report: WorkerReport) -> None:
        execution = running.execution
        if not self.store.start(job.id, execution.local_pid):
            running.cancelled = True  # deleted between leaving the queue and starting
            execution.kill()
        else:
            self.metrics.job_started(time.time() - job.created_at)
        # The front end enforces SR_JOB_TIMEOUT_S whatever runs the job, and however long it waited there.
        if not execution.wait(self.config.job_timeout_s):
            running.timed_out = True
            execution.kill()
            execution.wait(None)
        seconds = time.monotonic() - running.started
        finish = execution.finish()
        ending = Ending(
            exit_code=finish.exit_code,
            signal=finish.signal,
            lost=finish.lost,
            timed_out=running.timed_out,
            cancelled=running.cancelled,
            stopping=running.stopping,
            result_present=(self.config.results_dir / job.output_file).is_file(),
        )
        self._finish(job, ending, report, seconds)

    def _finish(self, job: Job, ending: Ending, report: WorkerReport, seconds: float) -> None:
        outcome = decide_outcome(
            ending, report, self.config.job_timeout_s, lambda message: self._public_message(job, message)
        )
        if outcome.verdict is Verdict.DISCARDED:
            self._remove_partial_output(job, keep_result=False)
            (self.config.logs_dir / f"{job.id}.log").unlink(missing_ok=True)
            return
        if outcome.verdict is Verdict.DONE:
            done = report.done or {}
            output = self.config.results_dir / job.output_file
            width, height = done.get("width"), done.get("height")
            precision = done.get("precision")
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
                precision=str(precision) if precision else None,
                timings=done.get("seconds") or {},
                peak_rss_mb=done.get("peak_rss_mb"),
                exit_code=0,
                worker_pid=None,
            )
            # Deleted while the worker was finishing: the result has no job left to belong to.
            self._remove_partial_output(job, keep_result=recorded)
            self._discard_upload(job)
            self.metrics.job_finished("done", seconds, done)
            log.info("job %s done in %.2f s", job.id, seconds)
            return
        code = outcome.code or "internal_error"
        message = outcome.message or FALLBACK_MESSAGES["internal_error"]
        if code == "model_error":
            # The worker's message is an operator's remedy (commands, settings, paths): it goes to the
            # job's log and the service log; the person reads the plain fallback.
            full = str((report.error or {}).get("message") or message)
            self._note_in_job_log(job, full)
            log.error("job %s: the model could not be used: %s", job.id, full)
            message = FALLBACK_MESSAGES["model_error"]
        self._remove_partial_output(job, keep_result=False)
        self.store.fail(job.id, code, message, exit_code=ending.exit_code)
        self._discard_upload(job)
        if ending.stopping:
            return
        self.metrics.job_finished(code, seconds, report.done or report.start)
        log.warning("job %s failed (%s, exit %s): %s", job.id, code, ending.exit_code, message)

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

    def _note_in_job_log(self, job: Job, message: str) -> None:
        try:
            with open(self.config.logs_dir / f"{job.id}.log", "a", encoding="utf-8") as out:
                out.write(f"[service] {message}\n")
        except OSError:
            log.exception("job %s: could not write to its log", job.id)

    def _discard_upload(self, job: Job) -> None:
        """A finished job's upload has no further use (a failed one is uploaded again), unless SR_KEEP_UPLOADS."""
        if not job.keep_upload:
            (self.config.uploads_dir / job.input_file).unlink(missing_ok=True)

    def _remove_partial_output(self, job: Job, keep_result: bool = False) -> None:
        """Removes what a worker of this job may have left in results/ (temp files, or the result itself)."""
        self._remove_partial_output_by_id(job.id, job.output_file if keep_result else None)

    def _remove_partial_output_by_id(self, job_id: str, keep: str | None = None) -> None:
        results = self.config.results_dir
        if not results.is_dir():
            return
        for path in results.iterdir():
            if job_id in path.name and path.name != keep:
                path.unlink(missing_ok=True)
