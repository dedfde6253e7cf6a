"""Finding scratches and dust for the page: one photo through the worker's `--find-damage` on the configured
backend, a few at once, bounded in time; nothing of it is kept."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from infer.contract import Done, Error, Failure, parse_event
from web.backends import Backend, BackendUnavailable, JobSpec
from web.config import Config
from web.http.errors import Refusal
from web.jobs.outcomes import UNAVAILABLE_MESSAGE, Verdict, WorkerReport, decide_outcome
from web.jobs.uploads import save_upload

log = logging.getLogger(__name__)

# A search is one pass of morphology over the photo (a few seconds for a large one); past this it is stopped.
MAX_SECONDS = 120.0
BUSY_MESSAGE = "scratches and dust are being looked for in other photos already; try again in a minute"
YOURS_BUSY_MESSAGE = "scratches and dust are still being looked for in your other photo; wait for it to finish"


@dataclass
class _Report:
    """The worker's events of one search, as the outcome rules read them."""

    report: WorkerReport = field(default_factory=WorkerReport)

    def __call__(self, raw: Any) -> None:
        event = parse_event(raw)
        if isinstance(event, Done):
            self.report.done = dict(event.record)
        elif isinstance(event, Error):
            self.report.error = dict(event.record)


@dataclass
class DamageFinder:
    """Runs `--find-damage` searches: at most `SR_CONCURRENCY` at once on the service, one at a time a sender."""

    config: Config
    backend: Backend
    _slots: threading.BoundedSemaphore = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _senders: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.config.concurrency)

    def find(self, photo: BinaryIO, sender: str) -> bytes:
        """The mask PNG of the damage found in the photo (white: found), at its size as shown; a Refusal for a
        photo the service would not take, a busy service, or a search that failed."""
        with self._lock:
            if sender in self._senders:
                raise Refusal(429, "find_damage_busy", YOURS_BUSY_MESSAGE, retry_after=5)
            if not self._slots.acquire(blocking=False):
                raise Refusal(503, "find_damage_busy", BUSY_MESSAGE, retry_after=30)
            self._senders.add(sender)
        try:
            return self._find(photo)
        finally:
            with self._lock:
                self._senders.discard(sender)
            self._slots.release()

    def _find(self, photo: BinaryIO) -> bytes:
        config = self.config
        saved = save_upload(photo, config.uploads_dir, config.max_upload_bytes, config.max_pixels)
        search = f"{saved.job_id}.damage-{uuid.uuid4().hex[:8]}"
        spec = JobSpec(job_id=saved.job_id, input_path=saved.path, output_path=config.uploads_dir / f"{search}.png",
                       log_path=config.logs_dir / f"{search}.log", model_path=config.model_path, find_damage=True)
        report = _Report()
        try:
            try:
                execution = self.backend.launch(spec, report)
            except BackendUnavailable as err:
                log.error("finding damage could not start: %s", err)
                raise Refusal(503, "unavailable", UNAVAILABLE_MESSAGE, retry_after=60) from None
            limit = min(MAX_SECONDS, config.job_timeout_s)
            if not execution.wait(limit):
                execution.kill()
                execution.wait(None)
                raise Refusal(504, "timeout", f"looking for scratches and dust took longer than {limit:g} seconds "
                              "and was stopped; mark the damage by hand instead")
            ending = dataclasses.replace(execution.finish(), result_present=spec.output_path.is_file())
            outcome = decide_outcome(ending, report.report, limit,
                                     lambda message: message.replace(str(saved.path), "the photo"))
            if outcome.verdict is Verdict.DONE:
                return spec.output_path.read_bytes()
            if outcome.operator_note:
                log.error("finding damage failed: %s", outcome.operator_note)
            failure = Failure.from_code(outcome.code)
            raise Refusal(failure.http_status if failure is not None else 503, outcome.code or "internal_error",
                          f"scratches and dust could not be looked for: {outcome.message}")
        finally:
            # The worker's and the Ray backend's temporaries beside the mask, where a killed search left them.
            leftovers = [*config.uploads_dir.glob(f".{spec.output_path.name}.*.part"),
                         *config.uploads_dir.glob(f".{saved.job_id}.*.part")]
            for path in (saved.path, spec.output_path, spec.log_path, *leftovers):
                path.unlink(missing_ok=True)
