"""Intake: a checked upload becomes a job row, served from the result cache or queued; nothing is kept if a step fails."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import BinaryIO

from infer.catalog import Catalog
from web.jobs.cache import ResultCache
from web.config import Config
from web.guards.space import data_space, out_of_space
from web.http.errors import Refusal
from web.jobs.finishing import Finisher
from web.jobs.files import result_name
from web.jobs.store import QUEUED, Job, JobStore
from web.guards.limits import check_output_pixels
from web.guards.health import UNAVAILABLE_TEXT, HealthLog, availability
from web.jobs.choice import Choice, estimate_seconds
from web.jobs.runner import Runner, queue_full
from web.guards.shares import queue_share_refusal
from web.jobs.uploads import SavedMask, clean_name, output_format_for, save_mask, save_upload


@dataclass(frozen=True)
class Upload:
    """What a request asks for: the photo's bytes and name as sent, the settings, the output format, and
    who sends it (the owner cookie's digest, None without one; the client's address)."""

    stream: BinaryIO
    filename: str | None
    choice: Choice
    requested_format: str | None = None
    owner: str | None = None
    address: str | None = None
    offered_scales: frozenset[int] = frozenset()  # for the output-pixel refusal's advice
    mask: BinaryIO | None = None  # the optional repair mask's bytes as sent


@dataclass
class Intake:
    """Takes uploads in for the views: whether jobs can be taken, then the job's row, cache lookup and queue."""

    config: Config
    store: JobStore
    runner: Runner
    cache: ResultCache
    finisher: Finisher
    health_log: HealthLog

    def check_open(self, owner: str | None, address: str, catalog: Catalog) -> None:
        """A Refusal (out of space, unavailable, the queue or the sender's share of it full) before anything of a
        request is read."""
        space = data_space(self.config)
        if not space.ok:
            self.health_log.note(space)
            raise out_of_space()
        state = availability(self.config, self.runner.backend, catalog, notes=False)
        if not state.ok:
            # Why is for the operator (logs, /healthz); the person only needs to know it is not their photo.
            self.health_log.note(state)
            raise Refusal(503, "unavailable", UNAVAILABLE_TEXT, retry_after=60)
        if self.runner.queue_length() >= self.config.queue_size:
            raise queue_full()
        over_share = queue_share_refusal(self.store, owner, address, self.config.queue_size,
                                         self.config.owner_share)
        if over_share:
            raise Refusal(429, "queue_share_full", over_share, retry_after=60)

    def accept(self, upload: Upload) -> Job:
        """Saves and checks the photo, records the job, and serves it from the cache or queues it (a Refusal
        where it will not); on any failure neither the row nor the file is kept."""
        config, choice = self.config, upload.choice
        saved = save_upload(upload.stream, config.uploads_dir, config.max_upload_bytes, config.max_pixels)
        mask: SavedMask | None = None
        try:
            check_output_pixels(saved.width, saved.height, choice.scale, config.max_output_pixels,
                                upload.offered_scales or {choice.scale})
            if upload.mask is not None:
                mask = save_mask(upload.mask, config.uploads_dir, saved.job_id, config.max_mask_bytes,
                                 saved.width, saved.height)
        except BaseException:
            saved.path.unlink(missing_ok=True)
            raise
        out_format = output_format_for(upload.requested_format, saved.format)
        job = Job(
            id=saved.job_id,
            state=QUEUED,
            original_name=clean_name(upload.filename),
            input_file=saved.path.name,
            input_format=saved.format,
            input_width=saved.width,
            input_height=saved.height,
            input_bytes=saved.size_bytes,
            output_file=result_name(saved.job_id, out_format),
            output_format=out_format,
            scale=choice.scale,
            outscale=choice.outscale,
            denoise_strength=choice.denoise_strength,
            keep_upload=config.keep_uploads,
            created_at=time.time(),
            owner=upload.owner,
            client_address=upload.address,
            model=choice.model.path.name,
            denoise=choice.denoise,
            faces=choice.faces,
            face_fidelity=choice.face_fidelity,
            repair_mask_sha256=mask.sha256 if mask is not None else None,
            repair=choice.repair,
            colour=choice.colour,
            estimate_s=estimate_seconds(self.store, config, choice.model, saved.width * saved.height / 1e6),
            cache_key=self.cache.key(saved.sha256, choice.model.path, choice.model.id, choice.scale,
                                     choice.denoise, out_format, (choice.faces, choice.face_fidelity),
                                     choice.denoise_strength, mask.sha256 if mask is not None else None,
                                     choice.repair, choice.colour),
            cache_base=self.cache.base(saved.sha256, choice.scale, choice.denoise, out_format,
                                       (choice.faces, choice.face_fidelity), choice.denoise_strength,
                                       mask.sha256 if mask is not None else None, choice.repair, choice.colour),
        )
        source = self.cache.find_done(job)
        try:
            self.store.add(job)
            if source is not None and self.cache.serve(job, source):
                # The same photo and settings were done before: no worker, no accelerator.
                return self.finisher.served_from_cache(job, source) or job
            self.runner.submit(job.id)
        except BaseException:
            self.store.delete(job.id)
            saved.path.unlink(missing_ok=True)
            if mask is not None:
                mask.path.unlink(missing_ok=True)
            raise
        return job

