"""The JSON API: create, follow, download and delete jobs, plus the synchronous `POST /upload`."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any, Callable, Iterator

from flask import Blueprint, Response, g, request, send_file
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from infer import contract
from web.http import owners
from web.http.archive import stream_zip, unique_names
from web.http.clients import client_address
from web.guards.space import REMEDY, is_out_of_space, out_of_space
from web.http.errors import Refusal, error_response
from web.http.hangup import close_unread
from web.jobs.intake import Upload
from web.jobs.files import JobFiles
from web.jobs.store import DONE, FAILED, QUEUED, RUNNING, Job
from web.guards.health import availability
from web.http.form import options_json, parse_choice
from web.jobs.choice import catalog_for
from web.services import Services, services
from web.guards.shares import StreamLimit
from web.jobs.uploads import download_stem, unknown_format_message
from web.jobs.waits import WaitEnd, client_gone, wait_for_job

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)

SSE_POLL_S = 0.5
# Short enough that a stream whose client went away is noticed (and its slot freed) soon.
SSE_KEEPALIVE_S = 5.0
# How a failed job answers `POST /upload`: a known condition is never a 500. The worker's failures answer
# as the contract's table says; of the front end's own codes only a timeout has its own status.
_SYNC_TIMEOUT_STATUS = 504
_SYNC_DEFAULT_STATUS = 503


def sync_status(error_code: str | None) -> int:
    """The HTTP status of `POST /upload` for a job that failed with this code."""
    if error_code == "timeout":
        return _SYNC_TIMEOUT_STATUS
    failure = contract.Failure.from_code(error_code or "internal_error")
    return failure.http_status if failure is not None else _SYNC_DEFAULT_STATUS


class JobIdConverter(BaseConverter):
    """Only canonical lower-case UUID4 strings match, so a malformed id is a 404 before any view runs."""

    regex = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def job_links(job_id: str) -> dict[str, str]:
    base = f"{request.script_root}/api/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "result": f"{base}/result"}


def job_json(job: Job, position: int | None, links: dict[str, str]) -> dict[str, Any]:
    """A job as the API shows it; contains nothing that changes unless the job does."""
    timings: dict[str, float] = {}
    if job.started_at is not None:
        timings["queued"] = round(job.started_at - job.created_at, 3)
    if job.finished_at is not None and job.started_at is not None:
        timings["running"] = round(job.finished_at - job.started_at, 3)
    timings.update(job.timings)
    return {
        "id": job.id,
        "status": job.status,
        "queue_position": position,
        "progress": round(job.progress, 4),
        "tiles": {"done": job.progress_done, "total": job.progress_total},
        "error": {"code": job.error_code, "message": job.error_message} if job.state == FAILED else None,
        "input": {
            "name": job.original_name,
            "format": job.input_format,
            "width": job.input_width,
            "height": job.input_height,
            "bytes": job.input_bytes,
        },
        "output": {
            "format": job.output_format,
            "width": job.output_width or job.input_width * job.scale,
            "height": job.output_height or job.input_height * job.scale,
            "bytes": job.output_bytes,
            "download_name": download_name(job),
        },
        "scale": job.scale,
        "model": job.model_id,
        "denoise": job.denoise or "off",
        "denoise_strength": job.denoise_strength,
        "ran": job.ran,
        "faces": {"mode": job.faces or "off", "fidelity": job.face_fidelity, "restored": job.faces_restored},
        "repair": {"mode": job.repair or "off", "mask": job.repair_mask_sha256 is not None},
        "colour": job.colour or "off",
        "cached": job.cached,
        "estimate_seconds": round(job.estimate_s, 1) if job.estimate_s is not None and job.status in (QUEUED, RUNNING) else None,
        "engine": job.engine,
        "device": job.device,
        "precision": job.precision,
        "peak_rss_mb": job.peak_rss_mb,
        "timings": timings,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "links": links,
    }


def download_name(job: Job) -> str:
    """`coffee_x4_RealESRGAN_x4plus.png`: the photo, the scale and the model, then the settings that change the
    pixels (`_repaired`, `_colour`, `_denoise-light`, `_strength-0.3`, `_faces-0.7`), so that two results of one
    photo differ by name."""
    parts = [download_stem(job.original_name), f"x{job.scale}"]
    if job.model_id:
        parts.append(download_stem(job.model_id)[:40])
    if job.repair_mask_sha256 is not None or job.repair == "auto":
        parts.append("repaired")
    if job.colour == "restore":
        parts.append("colour")
    if job.denoise_strength is not None:
        parts.append(f"strength-{job.denoise_strength:g}")
    elif job.denoise and job.denoise != "off":
        parts.append(f"denoise-{job.denoise}")
    if job.faces == "on":
        parts.append("faces" if job.face_fidelity is None else f"faces-{job.face_fidelity:g}")
    return f"{'_'.join(parts)}.{job.output_format}"


NOT_FOUND = "no such job; it may have been deleted or expired"


def _get_job(s: Services, job_id: str) -> Job:
    """The job, or 404 alike for an unknown id and another owner's job (existence is not told)."""
    job = s.store.get(job_id)
    if job is None or not owners.may_see(job.owner):
        raise Refusal(404, "not_found", NOT_FOUND)
    return job


def _accept_upload(s: Services) -> Job:
    """Reads the request into an Upload for the intake (a Refusal for what it will not take)."""
    catalog = catalog_for(s.config, s.runner.backend)
    s.intake.check_open(owners.current_owner(), client_address(), catalog)
    if request.mimetype == "multipart/form-data" and not request.mimetype_params.get("boundary"):
        raise Refusal(
            400, "bad_form", "the multipart form has no boundary in its Content-Type, so it cannot be read; "
            "let the HTTP client build the form (for example curl -F image=@photo.jpg)"
        )
    requested = request.form.get("format") or None
    if requested is not None and contract.format_named(requested) is None:
        raise Refusal(400, "bad_format", unknown_format_message(requested))
    choice = parse_choice(request.form, catalog)
    uploads = request.files.getlist("image")
    if request.mimetype == "multipart/form-data" and not request.files and not request.form and request.content_length:
        # werkzeug drops a form it cannot parse (a part header that is not UTF-8, say) without a word.
        raise Refusal(
            400, "bad_form", "the multipart form could not be read: a file or field name that is not UTF-8 "
            "text, or a damaged form; rename the file with plain characters, or let the HTTP client build the "
            "form (for example curl -F image=@photo.jpg)"
        )
    if not uploads:
        raise Refusal(400, "no_file", "no photo was sent; send it in the multipart form field 'image'")
    if len(uploads) > 1:
        raise Refusal(
            400, "too_many_files", f"the field 'image' holds {len(uploads)} files; send one photo per request"
        )
    upload = uploads[0]
    masks = [m for m in request.files.getlist("repair_mask") if m.filename or m.content_length]
    if len(masks) > 1:
        raise Refusal(400, "too_many_files", f"the field 'repair_mask' holds {len(masks)} files; send one mask")
    return s.intake.accept(
        Upload(upload.stream, upload.filename, choice, requested, owner=owners.current_owner(),
               address=client_address(),
               offered_scales=frozenset(n for m in catalog.models for n in catalog.served_scales(m)),
               mask=masks[0].stream if masks else None)
    )


def _accept_or_reject(s: Services) -> Job:
    """The upload as a job; any Refusal on the way is counted as a rejected upload by its handler."""
    g.upload_attempt = True
    try:
        return _accept_upload(s)
    except RequestEntityTooLarge:
        raise _too_large(s) from None
    except (OSError, sqlite3.Error) as err:
        if not is_out_of_space(err):
            raise
        # What was written of it is gone already (save_upload and the job row's rollback).
        log.error("an upload was refused, the filesystem filled up while it was saved (%s); %s", err, REMEDY)
        raise out_of_space() from None


def _too_large(s: Services) -> Refusal:
    """Whether the photo or one of the small fields beside it was too large: werkzeug says neither."""
    length = request.content_length
    if length is not None and length <= (request.max_content_length or length):
        return Refusal(
            413,
            "form_too_large",
            f"a form field other than the photo is over {(request.max_form_memory_size or 0) / 1000:g} kB, or "
            f"the form has over {request.max_form_parts} parts; send the photo in the field 'image' and only "
            "short values (format, model, scale, quality, denoise) in the others",
        )
    return Refusal(
        413, "too_large", f"the upload is larger than the {s.config.max_upload_mb:g} MB limit; send a smaller photo"
    )


@bp.post("/api/jobs")
def create_job() -> tuple[Response, int, dict[str, str]] | Any:
    s = services()
    job = _accept_or_reject(s)
    links = job_links(job.id)
    body = job_json(job, s.store.queue_position(job), links)
    return body, 202, {"Location": links["self"]}


@bp.get("/api/jobs")
def list_jobs() -> Any:
    """The caller's jobs, oldest first; none without an owner cookie."""
    s = services()
    owner = owners.current_owner()
    jobs = s.store.owned_by(owner) if owner else []
    return {"jobs": [job_json(job, s.store.queue_position(job), job_links(job.id)) for job in jobs]}


@bp.get("/api/jobs.zip")
def jobs_zip() -> Response:
    """The caller's finished results as one zip, streamed while it is written."""
    s = services()
    owner = owners.current_owner()
    done = [job for job in (s.store.owned_by(owner) if owner else []) if job.state == DONE]
    results = [(job, JobFiles.of(s.config, job).result) for job in done]
    results = [(job, path) for job, path in results if path.is_file()]
    if not results:
        raise Refusal(404, "no_results", "there are no finished photos to download yet")
    names = unique_names(download_name(job) for job, _ in results)
    entries = [(name, path, job.finished_at or job.created_at) for name, (job, path) in zip(names, results)]
    return Response(
        stream_zip(entries),
        mimetype="application/zip",
        headers={
            "Content-Disposition": 'attachment; filename="upscaled-photos.zip"',
            "X-Accel-Buffering": "no",
        },
    )


@bp.get("/api/options")
def options() -> Any:
    """What may be chosen for an upload, and whether uploads can run at all."""
    s = services()
    catalog = catalog_for(s.config, s.runner.backend)
    state = availability(s.config, s.runner.backend, catalog)
    s.health_log.note(state)
    return options_json(s.store, catalog, state, s.config)


@bp.get("/api/jobs/<job_id:job_id>")
def get_job(job_id: str) -> Any:
    s = services()
    job = _get_job(s, job_id)
    return job_json(job, s.store.queue_position(job), job_links(job_id))


@bp.get("/api/jobs/<job_id:job_id>/events")
def job_events(job_id: str) -> Response:
    s = services()
    _get_job(s, job_id)
    owner, address = owners.current_owner(), client_address()
    refused = s.event_streams.take(owner, address)
    if refused:
        held = {
            StreamLimit.ALL: f"{s.event_streams.total} progress streams are open already",
            StreamLimit.SHARE: f"you have {s.event_streams.per_owner} progress streams open already",
            StreamLimit.ADDRESS: f"{s.event_streams.per_owner} progress streams are open from your network already",
        }[refused]
        raise Refusal(503, "too_many_streams", f"{held}; poll GET /api/jobs/{job_id} instead", retry_after=5)
    links = job_links(job_id)
    store = s.store

    def stream() -> Iterator[str]:
        yield "retry: 2000\n\n"
        last_payload = None
        last_sent = time.monotonic()
        while True:
            job = store.get(job_id)
            if job is None:
                gone = {"error": {"code": "not_found", "message": "the job was deleted"}}
                yield f"event: gone\ndata: {json.dumps(gone)}\n\n"
                return
            payload = json.dumps(job_json(job, store.queue_position(job), links), separators=(",", ":"))
            now = time.monotonic()
            if payload != last_payload:
                yield f"event: status\ndata: {payload}\n\n"
                last_payload, last_sent = payload, now
            elif now - last_sent >= SSE_KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = now
            if job.finished:
                return
            time.sleep(SSE_POLL_S)

    return Response(
        _EventStream(stream(), lambda: s.event_streams.give_back(owner, address)),
        mimetype="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


class _EventStream:
    """An SSE body that gives its slot back when the server closes it: the job finished, the client
    went away, or the response was never sent at all."""

    def __init__(self, chunks: Iterator[str], give_back: Callable[[], None]):
        self._chunks = chunks
        self._give_back = give_back
        self._open = True

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def close(self) -> None:
        if self._open:
            self._open = False
            self._chunks.close()  # type: ignore[attr-defined]
            self._give_back()


def _mimetype(extension: str) -> str:
    fmt = contract.format_by_name(extension)
    return fmt.mime if fmt is not None else "application/octet-stream"


def _result_response(s: Services, job: Job) -> Response:
    if job.state == FAILED:
        raise Refusal(409, "job_failed", f"this photo could not be upscaled: {job.error_message}")
    if job.state != DONE:
        raise Refusal(409, "not_ready", f"the photo is still {job.state}; wait until its status is done")
    path = JobFiles.of(s.config, job).result
    if not path.is_file():
        raise Refusal(404, "result_gone", "the result file is no longer there; upload the photo again")
    response = send_file(
        path,
        mimetype=_mimetype(job.output_format),
        as_attachment=True,
        download_name=download_name(job),
        conditional=True,
        # The job's own validators: a cached result is a hard link to another job's file, whose
        # modification time would tell when someone else uploaded the same photo.
        etag=f"{job.id}-{path.stat().st_size}",
        last_modified=job.finished_at,
        max_age=0,
    )
    response.headers["X-Job-Id"] = job.id
    return response


@bp.get("/api/jobs/<job_id:job_id>/result")
def job_result(job_id: str) -> Response:
    s = services()
    return _result_response(s, _get_job(s, job_id))


@bp.delete("/api/jobs/<job_id:job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    s = services()
    _get_job(s, job_id)
    job = s.store.delete(job_id)
    if job is None:
        raise Refusal(404, "not_found", NOT_FOUND)
    s.runner.cancel(job_id)
    JobFiles.of(s.config, job).remove_all()
    return "", 204


@bp.post("/upload")
def upload_sync() -> Response | tuple[dict[str, Any], int, dict[str, str]]:
    """Waits for the job and answers with the image itself, or the job's JSON error; past SR_SYNC_WAIT_S
    with 202 and the job's location, as POST /api/jobs would. A client that leaves stops the wait, not the job."""
    s = services()
    if not s.sync_waits.acquire(blocking=False):
        s.metrics.upload_rejected(503)
        return close_unread(error_response(
            503, "too_many_waits",
            f"{s.config.sync_wait_limit} uploads are waiting for their results already; try again in a minute, "
            "or send the photo to POST /api/jobs and follow the job",
            {"Retry-After": "30"},
        ))
    try:
        job = _accept_or_reject(s)
        waited = wait_for_job(s.store, job, s.config.sync_wait_s, lambda: client_gone(request.environ))
    finally:
        s.sync_waits.release()
    if waited.end is WaitEnd.DELETED or waited.job is None:
        raise Refusal(404, "not_found", "the job was deleted before it finished")
    job = waited.job
    if waited.end is WaitEnd.CLIENT_GONE:
        log.info("job %s: its POST /upload client went away; the job goes on", job.id)
    if waited.end is not WaitEnd.FINISHED:
        links = job_links(job.id)
        return job_json(job, s.store.queue_position(job), links), 202, {"Location": links["self"]}
    if job.state == FAILED:
        status = sync_status(job.error_code)
        raise Refusal(status, job.error_code or "internal_error", job.error_message or "the job failed",
                       {"X-Job-Id": job.id})
    return _result_response(s, job)
