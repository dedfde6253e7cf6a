"""The result cache: a photo already upscaled with the same settings is served again, without a worker."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from infer.digests import sha256_of
from web.config import Config
from web.jobs.files import JobFiles
from web.jobs.store import DONE, Job, JobStore

log = logging.getLogger(__name__)

# The worker runs with its own precision policy (`--precision auto`): on one deployment's machines that is
# one precision class; it is part of the key so that a future setting cannot mix fp32 and half results.
PRECISION_CLASS = "auto"


class ModelDigests:
    """SHA-256 of model files, read once per file version (path, size, modification time)."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            known = self._known.get(path)
            if known and known[:2] == (st.st_size, st.st_mtime_ns):
                return known[2]
        digest = sha256_of(path)
        with self._lock:
            self._known[path] = (st.st_size, st.st_mtime_ns, digest)
        return digest


def with_model(base: str, model: str) -> str:
    """The key: the base's parts with the model's token in its place, hashed."""
    parts = json.loads(base)
    parts[1] = model
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def keyed_by_node(base: str, sha256: str) -> str:
    """The key of a job whose model a worker node ran, by the SHA-256 it reported."""
    return with_model(base, sha256)


class ResultCache:
    """Keys jobs by what decides their output, finds a finished result for a key, and serves it."""

    def __init__(self, config: Config, store: JobStore, backend_name: str,
                 node_digest: Callable[[str], str | None] | None = None):
        self.config = config
        self.store = store
        self.backend_name = backend_name
        self.digests = ModelDigests()
        # Remote backends: model file name -> the SHA-256 the nodes last reported running under it.
        self.node_digest = node_digest

    @property
    def enabled(self) -> bool:
        return self.config.result_cache != "off"

    def key(self, photo_sha256: str, model_path: Path, model_id: str, scale: int, denoise: str, output_format: str,
            faces: tuple[str, float] | None = None, denoise_strength: float | None = None,
            repair_mask_sha256: str | None = None, repair: str = "off", colour: str = "off") -> str | None:
        """None when the cache is off, or when the model's content is not known yet. The model counts by its
        checksum: the file's here (local backend); with Ray, the one the worker nodes last reported running
        under that file name (none before a node has run it: such a job runs, and its node's report keys
        it, `keyed_by_node`). `faces` (mode and fidelity) counts only when faces are restored, so that keys made
        before the face stage still match; `scale` is the written one (a x4 model's output reduced to 3x is another
        result); `denoise_strength` counts when given. Fidelity and strength count as given: the intake quantises
        them once, and the job records and runs that value. The repair mask counts by its SHA-256, and automatic
        repair and colour restoration when asked: a job without them keeps the key it had before they existed."""
        base = self.base(photo_sha256, scale, denoise, output_format, faces, denoise_strength,
                         repair_mask_sha256, repair, colour)
        if base is None:
            return None
        if self.node_digest is not None:
            digest = self.node_digest(model_path.name)
            return keyed_by_node(base, digest) if digest else None
        return with_model(base, self.digests.of(model_path) or f"name:{model_id}")

    def base(self, photo_sha256: str, scale: int, denoise: str, output_format: str,
             faces: tuple[str, float] | None = None, denoise_strength: float | None = None,
             repair_mask_sha256: str | None = None, repair: str = "off", colour: str = "off") -> str | None:
        """The key's parts with the model's place left open (JSON), kept with the job; None when the cache is off."""
        if not self.enabled:
            return None
        parts: list = [photo_sha256, None, scale, denoise, output_format, PRECISION_CLASS, self.backend_name]
        if faces is not None and faces[0] != "off":
            parts.append(["faces", faces[0], float(faces[1])])
        if denoise_strength is not None:
            parts.append(["denoise_strength", float(denoise_strength)])
        if repair_mask_sha256 is not None:
            parts.append(["repair_mask", repair_mask_sha256])
        if repair != "off":
            parts.append(["repair", repair])
        if colour != "off":
            parts.append(["colour", colour])
        return json.dumps(parts)

    def _same_scope(self, job: Job, other: Job) -> bool:
        if other.id == job.id:
            return False
        if self.config.result_cache == "shared":
            return True
        # owner: one browser's own repeats only; uploads without an owner cookie never share
        return job.owner is not None and other.owner == job.owner

    def find_done(self, job: Job) -> Job | None:
        """The newest finished result for the job's key, still within its lifetime, its file there."""
        if not job.cache_key:
            return None
        cutoff = time.time() - self.config.result_ttl_h * 3600.0
        for other in reversed(self.store.with_cache_key(job.cache_key, (DONE,))):
            if (
                self._same_scope(job, other)
                and (other.finished_at or 0) > cutoff
                and JobFiles.of(self.config, other).result.is_file()
            ):
                return other
        return None

    def leads(self, job: Job, running: Job) -> bool:
        """Whether `running` makes the result `job` would make (so `job` should wait for it)."""
        return bool(job.cache_key) and running.cache_key == job.cache_key and self._same_scope(job, running)

    def serve(self, job: Job, source: Job) -> bool:
        """Makes `job` done with `source`'s result: a hard link (a copy where links cannot be made), so that
        deleting either job, or the sweep removing one, leaves the other's file alone."""
        files = JobFiles.of(self.config, job)
        src, dst, tmp = JobFiles.of(self.config, source).result, files.result, files.cache_temp
        try:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("job %s: cannot reuse the result of %s (%s); running it", job.id, source.id, err)
            return False
        now = time.time()
        ran = (source.finished_at or now) - (source.started_at or now)
        saved = source.cache_saved_s if source.cached and source.cache_saved_s is not None else max(0.0, ran)
        recorded = self.store.update(
            job.id, state=DONE, started_at=now, finished_at=now,
            progress_done=source.progress_total or 1, progress_total=source.progress_total or 1,
            output_width=source.output_width, output_height=source.output_height,
            output_bytes=dst.stat().st_size, engine=source.engine, device=source.device,
            precision=source.precision, timings={}, exit_code=0, worker_pid=None,
            cached_from=source.id, cache_saved_s=saved, faces_restored=source.faces_restored,
            ran=source.ran,
        )
        if not recorded:  # deleted meanwhile
            dst.unlink(missing_ok=True)
        return recorded


