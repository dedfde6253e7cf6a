"""The job queue and its supervisors: one worker per job through a backend, at most SR_CONCURRENCY at once;
a job whose twin (same cache key) is running waits for it."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from infer.catalog import model_file_path
from infer.faces.options import GFPGAN_FILE
from web.backends import Backend, BackendUnavailable, Execution, JobSpec
from web.jobs.cache import ResultCache
from web.config import Config
from web.guards.space import OUT_OF_SPACE_MESSAGE, is_out_of_space
from web.http.errors import Refusal
from web.jobs.finishing import EventRecorder, Finisher
from web.jobs.store import QUEUED, RUNNING, Job, JobStore
from web.jobs.metrics import Metrics
from web.jobs.outcomes import FALLBACK_MESSAGES, RESTART_MESSAGE, UNAVAILABLE_MESSAGE, WorkerReport

log = logging.getLogger(__name__)

UPLOAD_MISSING_MESSAGE = "the uploaded photo is gone; upload it again"
# How often a job's failure is tried again while the disk is too full to record it.
_RECORD_RETRY_S = 2.0


def queue_full() -> Refusal:
    """The refusal of an upload while the queue holds SR_QUEUE_SIZE jobs already."""
    return Refusal(503, "queue_full", "the queue is full; try again in a few minutes", retry_after=60)


@dataclass
class _Running:
    execution: Execution
    job: Job | None = None
    cancelled: bool = False
    stopping: bool = False
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)


class Runner:
    """FIFO of job ids feeding `concurrency` supervisor threads, each running one job at a time on the backend."""

    def __init__(self, config: Config, store: JobStore, metrics: Metrics, backend: Backend,
                 finisher: Finisher, cache: ResultCache | None = None):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.backend = backend
        self.finisher = finisher
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
            self.finisher.fail(job, "interrupted", RESTART_MESSAGE)
            log.warning("job %s was running when the service stopped; marked failed", job.id)
        for job in self.store.in_state(QUEUED):
            if self.finisher.files(job).upload.is_file():
                self._pending.append(job.id)
            else:
                self.store.fail(job.id, "upload_missing", UPLOAD_MISSING_MESSAGE)

    # ---- queue -----------------------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        with self._cv:
            if len(self._pending) >= self.config.queue_size:
                raise queue_full()
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
            except Exception as err:
                log.exception("job %s: supervisor failed", job_id)
                self._fail_after_error(job_id, err)

    def _fail_after_error(self, job_id: str, err: Exception) -> None:
        """Records the job as failed. While the disk is too full for its row to be written, tries again
        every few seconds: the job must not stay `running`, and this supervisor must not end."""
        if is_out_of_space(err):
            code, message = "output_error", OUT_OF_SPACE_MESSAGE
        else:
            code, message = "internal_error", FALLBACK_MESSAGES["internal_error"]
        while True:
            try:
                job = self.store.get(job_id)
                if job is not None:
                    self.finisher.fail(job, code, message)
                return
            except Exception as again:
                if not is_out_of_space(again) or self._stopping:
                    log.exception("job %s: its failure cannot be recorded", job_id)
                    return
                log.error("job %s: its failure cannot be recorded, the disk is full; trying again in %g s",
                          job_id, _RECORD_RETRY_S)
            time.sleep(_RECORD_RETRY_S)

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != QUEUED:
            return
        files = self.finisher.files(job)
        if not files.upload.is_file() or (job.repair_mask_sha256 and not files.mask.is_file()):
            self.store.fail(job.id, "upload_missing", UPLOAD_MISSING_MESSAGE)
            return
        files.prepare()
        spec = JobSpec(
            job_id=job.id,
            input_path=files.upload,
            output_path=files.result,
            log_path=files.log,
            model_path=model_file_path(job.model or self.config.model_path.name, self.config.models_dir,
                                       self.config.model_path),
            denoise=job.denoise or "off",
            faces=job.faces or "off",
            face_fidelity=job.face_fidelity,
            outscale=job.outscale,
            denoise_strength=job.denoise_strength,
            face_model=self.config.models_dir / GFPGAN_FILE if job.faces == "on" else None,
            repair_mask=files.mask if job.repair_mask_sha256 else None,
            repair=job.repair or "off",
            colour=job.colour or "off",
        )
        recorder = EventRecorder(self.store, job.id)
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
                    self.finisher.served_from_cache(job, source)
                    return
            try:
                running = _Running(self.backend.launch(spec, recorder))
            except BackendUnavailable as err:
                log.error("job %s could not be started: %s", job.id, err)
                self.finisher.fail(job, "unavailable", UNAVAILABLE_MESSAGE)
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
        ending = dataclasses.replace(
            execution.finish(),
            timed_out=running.timed_out,
            cancelled=running.cancelled,
            stopping=running.stopping,
            result_present=self.finisher.files(job).result.is_file(),
        )
        self.finisher.finish(job, ending, report, seconds)
