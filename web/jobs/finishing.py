"""Finishing a job: the worker's events recorded as they come, its outcome applied (row, files, metrics, logs),
and the person's message."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any, Mapping

from infer.contract import Done, Error, Event, Progress, Start, parse_event
from web.backends import ON_NODE_EVENT, WAITING_FOR_NODE_EVENT
from web.config import Config
from web.jobs.cache import keyed_by_node
from web.jobs.files import JobFiles
from web.jobs.store import DONE, Job, JobStore
from web.jobs.metrics import Metrics
from web.jobs.outcomes import FALLBACK_MESSAGES, Ending, Verdict, WorkerReport, decide_outcome

log = logging.getLogger(__name__)

_PROGRESS_WRITE_INTERVAL = 0.2


class EventRecorder:
    """Turns the worker's events into the job's report and row updates (progress at most every 0.2 s)."""

    def __init__(self, store: JobStore, job_id: str):
        self.store = store
        self.job_id = job_id
        self.report = WorkerReport()
        self._last_write = 0.0
        self._write_failed = False

    def __call__(self, raw: Event | Mapping[str, Any]) -> None:
        if isinstance(raw, Mapping) and raw.get("event") in (WAITING_FOR_NODE_EVENT, ON_NODE_EVENT):
            self._write(waiting_since=time.time() if raw["event"] == WAITING_FOR_NODE_EVENT else None)
            if isinstance(raw.get("model_sha256"), str):
                self._key_by_node_model(raw["model_sha256"])
            return
        report = self.report
        event = parse_event(raw)
        if isinstance(event, Start):
            report.start = dict(event.record)
            report.progress_total = event.tiles
            ran = event.record.get("ran")
            self._write(progress_total=report.progress_total, engine=event.engine, device=event.device,
                        **({"ran": ran} if isinstance(ran, str) else {}))
        elif isinstance(event, Progress):
            report.progress_done = event.done
            report.progress_total = event.total or report.progress_total
            now = time.monotonic()
            if now - self._last_write >= _PROGRESS_WRITE_INTERVAL or report.progress_done >= report.progress_total:
                self._last_write = now
                self._write(progress_done=report.progress_done, progress_total=report.progress_total,
                            progress_fraction=event.fraction)
        elif isinstance(event, Done):
            report.done = dict(event.record)
        elif isinstance(event, Error):
            report.error = dict(event.record)

    def _key_by_node_model(self, sha256: str) -> None:
        """The node ran the model with this SHA-256: the job's result is cached under it (web/jobs/cache.py)."""
        job = self.store.get(self.job_id)
        if job is not None and job.cache_base:
            self._write(cache_key=keyed_by_node(job.cache_base, sha256))

    def _write(self, **fields: Any) -> None:
        """Progress is shown, not needed: a row that cannot be written (a full disk) must not stop the
        worker's events, which decide the outcome."""
        try:
            self.store.update(self.job_id, **fields)
        except sqlite3.Error as err:
            if not self._write_failed:
                self._write_failed = True
                log.warning("job %s: its progress cannot be recorded: %s", self.job_id, err)


class Finisher:
    """Applies how a job ended: the done or failed row, its files, the metrics and the logs."""

    def __init__(self, config: Config, store: JobStore, metrics: Metrics):
        self.config = config
        self.store = store
        self.metrics = metrics

    def files(self, job: Job) -> JobFiles:
        return JobFiles.of(self.config, job)

    def finish(self, job: Job, ending: Ending, report: WorkerReport, seconds: float) -> None:
        """The outcome rules' verdict on an execution, applied."""
        outcome = decide_outcome(
            ending, report, self.config.job_timeout_s, lambda message: self.public_message(job, message)
        )
        files = self.files(job)
        if outcome.verdict is Verdict.DISCARDED:
            files.remove_leftovers()
            files.remove_log()
            return
        if outcome.verdict is Verdict.DONE:
            self._done(job, files, report, seconds)
            return
        code = outcome.code or "internal_error"
        message = outcome.message or FALLBACK_MESSAGES["internal_error"]
        if outcome.operator_note:
            # The worker's message is an operator's remedy (commands, settings, paths): it goes to the
            # job's log and the service log; the person reads the plain message.
            self._note_in_job_log(files, outcome.operator_note)
            log.error("job %s failed (%s): %s", job.id, code, outcome.operator_note)
        self.fail(job, code, message, exit_code=ending.exit_code)
        if ending.stopping:
            return
        self.metrics.job_finished(code, seconds, report.done or report.start)
        log.warning("job %s failed (%s, exit %s): %s", job.id, code, ending.exit_code, message)

    def _done(self, job: Job, files: JobFiles, report: WorkerReport, seconds: float) -> None:
        done = report.done or {}
        width, height = done.get("width"), done.get("height")
        precision = done.get("precision")
        recorded = self.store.update(
            job.id,
            state=DONE,
            finished_at=time.time(),
            progress_done=max(report.progress_done, report.progress_total),
            output_width=int(width) if width else job.input_width * job.scale,
            output_height=int(height) if height else job.input_height * job.scale,
            output_bytes=files.result.stat().st_size,
            engine=done.get("engine") or job.engine,
            device=done.get("device") or job.device,
            precision=str(precision) if precision else None,
            timings=done.get("seconds") or {},
            peak_rss_mb=done.get("peak_rss_mb"),
            faces_restored=_faces_restored(done),
            exit_code=0,
            worker_pid=None,
        )
        # Deleted while the worker was finishing: the result has no job left to belong to.
        files.remove_leftovers(keep_result=recorded)
        self.discard_upload(job)
        self.metrics.job_finished("done", seconds, done)
        log.info("job %s done in %.2f s", job.id, seconds)

    def fail(self, job: Job, code: str, message: str, exit_code: int | None = None) -> None:
        """A failed row; whatever its worker left in results/ and its upload go (the person uploads again)."""
        self.files(job).remove_leftovers()
        self.store.fail(job.id, code, message, exit_code=exit_code)
        self.discard_upload(job)

    def served_from_cache(self, job: Job, source: Job) -> Job | None:
        """After the cache made `job` done with `source`'s result: its row as now stored (None if deleted)."""
        served = self.store.get(job.id)
        self.discard_upload(job)
        if served is not None:
            self.metrics.cache_hit(served.cache_saved_s or 0.0)
            log.info("job %s served from the result of job %s", job.id, source.id)
        return served

    def discard_upload(self, job: Job) -> None:
        """A finished job's upload has no further use (a failed one is uploaded again), unless SR_KEEP_UPLOADS."""
        if not job.keep_upload:
            self.files(job).remove_upload()

    def public_message(self, job: Job, message: str) -> str:
        """The worker names files by their server paths; the person knows their photo by its own name."""
        files = self.files(job)
        replacements = {
            str(files.upload): repr(job.original_name),
            str(files.mask): "the repair mask",
            str(files.result): "the result",
            str(self.config.model_path): self.config.model_path.name,
            str(self.config.data_dir): "the data folder",
        }
        for server_text, public_text in replacements.items():
            message = message.replace(server_text, public_text)
        return message

    def _note_in_job_log(self, files: JobFiles, message: str) -> None:
        try:
            with open(files.log, "a", encoding="utf-8") as out:
                out.write(f"[service] {message}\n")
        except OSError:
            log.exception("job %s: could not write to its log", files.job_id)


def _faces_restored(done: dict) -> int | None:
    """How many faces the worker restored, from its done event; None when it ran without the face stage."""
    faces = done.get("faces")
    return int(faces.get("restored") or 0) if isinstance(faces, dict) else None
