"""Synchronous `POST /upload` waits: how many may wait at once, for how long, and noticing a client that left."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping

from web.jobs.store import Job, JobStore

POLL_S = 0.2


class WaitEnd(Enum):
    FINISHED = "finished"
    DELETED = "deleted"
    TIMED_OUT = "timed_out"
    CLIENT_GONE = "client_gone"


@dataclass(frozen=True)
class Waited:
    end: WaitEnd
    job: Job | None  # the job as last seen (None once deleted)


def client_gone(environ: Mapping[str, Any]) -> bool:
    """Whether the client closed its connection: it is readable and has nothing more to say. Only
    gunicorn's and werkzeug's plain sockets can be asked; any other server never counts as gone."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket) or sock.fileno() < 0:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # ValueError: a TLS socket cannot peek
        return False


def wait_for_job(store: JobStore, job: Job, limit_s: float, gone: Callable[[], bool]) -> Waited:
    """Follows `job` until it finishes or is deleted, but no longer than `limit_s` seconds and no longer
    than its client stays connected."""
    deadline = time.monotonic() + limit_s
    while not job.finished:
        if gone():
            return Waited(WaitEnd.CLIENT_GONE, job)
        if time.monotonic() >= deadline:
            return Waited(WaitEnd.TIMED_OUT, job)
        time.sleep(POLL_S)
        current = store.get(job.id)
        if current is None:
            return Waited(WaitEnd.DELETED, None)
        job = current
    return Waited(WaitEnd.FINISHED, job)
