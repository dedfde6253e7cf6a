"""Time-to-live clean-up: finished jobs, their files and stray files older than SR_RESULT_TTL_H go away."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from web.config import Config
from web.jobs.files import INCOMING_PREFIX, JobFiles
from web.jobs.store import JobStore

log = logging.getLogger(__name__)

# An upload still being received never takes this long; older partial files are leftovers of a crash.
_INCOMING_GRACE_S = 3600.0
_KEEP = {".gitkeep"}


class Cleaner:
    """Sweeps at startup and then every few minutes (more often for short TTLs) in a daemon thread."""

    def __init__(self, config: Config, store: JobStore):
        self.config = config
        self.store = store
        self.ttl_s = config.result_ttl_h * 3600.0
        self.interval_s = min(300.0, max(0.5, self.ttl_s / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sr-cleanup", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:
                log.exception("clean-up sweep failed")
            self._stop.wait(self.interval_s)

    def sweep(self, now: float | None = None) -> int:
        """Removes expired jobs and stray files; returns how many jobs went."""
        now = time.time() if now is None else now
        cutoff = now - self.ttl_s
        expired = self.store.finished_before(cutoff)
        for job in expired:
            # Files first, then the row: once the job answers 404 nothing of it is left on disk.
            JobFiles.of(self.config, job).remove_all()
            if self.store.delete(job.id) is not None:
                log.info("job %s expired and was removed", job.id)
        live: set[str] = set()
        for job_id, input_file, output_file in self.store.file_names():
            live.update(JobFiles.named(self.config, job_id, input_file, output_file).kept_names())
        for folder in (self.config.uploads_dir, self.config.results_dir, self.config.logs_dir):
            self._remove_stray(folder, live, cutoff, now)
        return len(expired)

    def _remove_stray(self, folder: Path, live: set[str], cutoff: float, now: float) -> None:
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.name in _KEEP or not path.is_file():
                continue
            if path.name in live:
                continue
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            too_old = mtime < cutoff
            if path.name.startswith(INCOMING_PREFIX):
                too_old = too_old or mtime < now - _INCOMING_GRACE_S
            if too_old:
                path.unlink(missing_ok=True)
