"""Durable job records in SQLite (WAL mode, a small pool of connections shared by all threads), with the service's key and its signed-out sessions."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from infer.contract import MODEL_STAGES, work_seconds
from web.jobs.dbpool import ConnectionPool

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
# A running job's status while its task waits for a machine to run on (Ray: no node has room yet, or one is
# being started); its row stays running, so that timeouts, restarts and counts treat it as one.
WAITING_FOR_NODE = "waiting_for_node"
FINISHED = (DONE, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    original_name TEXT NOT NULL,
    input_file TEXT NOT NULL,
    input_format TEXT NOT NULL,
    input_width INTEGER NOT NULL,
    input_height INTEGER NOT NULL,
    input_bytes INTEGER NOT NULL,
    output_file TEXT NOT NULL,
    output_format TEXT NOT NULL,
    scale INTEGER NOT NULL,
    keep_upload INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    output_width INTEGER,
    output_height INTEGER,
    output_bytes INTEGER,
    engine TEXT,
    device TEXT,
    precision TEXT,
    timings TEXT,
    peak_rss_mb REAL,
    worker_pid INTEGER,
    exit_code INTEGER,
    error_code TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at);
CREATE TABLE IF NOT EXISTS service_keys (name TEXT PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed_out (session_id TEXT PRIMARY KEY, until REAL NOT NULL);
"""

# Columns added after the first release: (name, SQL type). Databases made before get them on open.
_ADDED_COLUMNS = (
    ("precision", "TEXT"),
    ("owner", "TEXT"),
    ("model", "TEXT"),
    ("denoise", "TEXT"),
    ("estimate_s", "REAL"),
    ("cache_key", "TEXT"),
    ("cached_from", "TEXT"),
    ("cache_saved_s", "REAL"),
    ("faces", "TEXT"),
    ("face_fidelity", "REAL"),
    ("faces_restored", "INTEGER"),
    ("outscale", "INTEGER"),
    ("denoise_strength", "REAL"),
    ("ran", "TEXT"),
    ("client_address", "TEXT"),
    ("waiting_since", "REAL"),
    ("cache_base", "TEXT"),
    ("repair_mask_sha256", "TEXT"),
    ("repair", "TEXT"),
    ("colour", "TEXT"),
    ("progress_fraction", "REAL"),
)
# PRAGMA user_version: 1 once `model` holds the model's file name (`EDSR_x3.pb`) instead of its id (`EDSR_x3`).
_MODEL_FILE_VERSION = 1


@dataclass
class Job:
    """One upload and what became of it."""

    id: str
    state: str
    original_name: str
    input_file: str
    input_format: str
    input_width: int
    input_height: int
    input_bytes: int
    output_file: str
    output_format: str
    scale: int
    created_at: float
    keep_upload: bool = False
    seq: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    progress_done: int = 0
    progress_total: int = 0
    output_width: int | None = None
    output_height: int | None = None
    output_bytes: int | None = None
    engine: str | None = None
    device: str | None = None
    precision: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    worker_pid: int | None = None
    exit_code: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    # SHA-256 of the browser's owner cookie; None for jobs sent without one (listed to nobody).
    owner: str | None = None
    # The chosen model's file name with its format (`EDSR_x3.pb`); None for jobs made before models could be chosen.
    model: str | None = None
    denoise: str | None = None
    estimate_s: float | None = None  # expected running seconds, fixed when the job is queued
    # The photo's and settings' digest (web/jobs/cache.py); None when the cache is off.
    cache_key: str | None = None
    cached_from: str | None = None  # the job whose result this one reuses; None when a worker made it
    cache_saved_s: float | None = None  # worker seconds the reuse saved
    faces: str | None = None  # "on" or "off" (None: made before faces could be restored)
    face_fidelity: float | None = None
    faces_restored: int | None = None  # from the worker's done event; None until done, or when faces are off
    # The written scale where it is below the model's (a x4 model's output reduced to 3x); None otherwise.
    outscale: int | None = None
    denoise_strength: float | None = None  # a blend with the model's denoise twin (0..1); None: not asked
    ran: str | None = None  # what ran, from the worker's start event: "RealESRGAN Compact x4, reduced to 3x"
    client_address: str | None = None  # the sender's address, for its share of the queue
    waiting_since: float | None = None  # when its task began to wait for a node; None once on one (or local)
    # The cache key's parts with the model left open (web/jobs/cache.py): a Ray job is keyed again by the
    # model its node ran.
    cache_base: str | None = None
    repair_mask_sha256: str | None = None  # the repair mask's digest where one was sent (JobFiles.mask holds it)
    repair: str | None = None  # "auto": the worker finds scratches and dust; "off" or None: it does not
    colour: str | None = None  # "restore" or "off" (None: made before colour could be restored)
    # The share of the network's work done, the running tile's part included (None: whole tiles only).
    progress_fraction: float | None = None

    @property
    def model_id(self) -> str | None:
        """The model as people choose it: its file name without the format (`EDSR_x3`)."""
        return Path(self.model).stem if self.model else None

    @property
    def status(self) -> str:
        """The state as the API and the page show it: a running job may be waiting for a node."""
        if self.state == RUNNING and self.waiting_since is not None:
            return WAITING_FOR_NODE
        return self.state

    @property
    def cached(self) -> bool:
        return self.cached_from is not None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def progress(self) -> float:
        if self.state == DONE:
            return 1.0
        if self.progress_fraction is not None:
            return min(1.0, max(0.0, self.progress_fraction))
        if self.progress_total <= 0:
            return 0.0
        return min(1.0, self.progress_done / self.progress_total)


_COLUMNS = [f.name for f in fields(Job)]
_MUTABLE = set(_COLUMNS) - {"id", "seq", "created_at"}


def _row_to_job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["timings"] = json.loads(values["timings"]) if values["timings"] else {}
    values["keep_upload"] = bool(values["keep_upload"])
    return Job(**values)


class JobStore:
    """Job rows in one SQLite file; safe to use from any thread (connections come from a small pool)."""

    def __init__(self, path: Path, connections: int = 4):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ConnectionPool(self._connect, connections)
        with self._pool.connection() as db:
            db.executescript(_SCHEMA)
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a finished job must survive a power cut, not only a crash of this process.
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _migrate(self) -> None:
        """Adds the columns a database made by an older version lacks; names the models of its jobs by file."""
        with self._tx() as db:
            present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, sql_type in _ADDED_COLUMNS:
                if name not in present:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sql_type}")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_cache_key ON jobs (cache_key)")
            ((version,),) = db.execute("PRAGMA user_version").fetchall()
            if version < _MODEL_FILE_VERSION:
                # Only TensorFlow graphs could be chosen before: an id stood for `<id>.pb`.
                db.execute("UPDATE jobs SET model = model || '.pb' WHERE model IS NOT NULL")
                db.execute(f"PRAGMA user_version = {_MODEL_FILE_VERSION}")

    def _rows(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._pool.connection() as db:
            return db.execute(sql, params).fetchall()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._pool.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def open_connections(self) -> int:
        return self._pool.open_connections()

    def close(self) -> None:
        """Closes the store's connections (at shutdown)."""
        self._pool.close()

    def add(self, job: Job) -> Job:
        values = {name: getattr(job, name) for name in _COLUMNS if name != "seq"}
        values["timings"] = json.dumps(job.timings)
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._tx() as db:
            cur = db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", list(values.values()))
            job.seq = int(cur.lastrowid)
        return job

    def get(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    def update(self, job_id: str, **values: Any) -> bool:
        """Sets some columns; returns False when the job is gone (deleted meanwhile)."""
        bad = set(values) - _MUTABLE
        if bad:
            raise ValueError(f"not updatable: {', '.join(sorted(bad))}")
        if "timings" in values:
            values["timings"] = json.dumps(values["timings"] or {})
        if "keep_upload" in values:
            values["keep_upload"] = int(bool(values["keep_upload"]))
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values.values(), job_id])
        return cur.rowcount > 0

    def start(self, job_id: str, pid: int) -> bool:
        """queued -> running, only if still queued (a job deleted meanwhile stays deleted)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, worker_pid = ? WHERE id = ? AND state = ?",
                (RUNNING, time.time(), pid, job_id, QUEUED),
            )
        return cur.rowcount > 0

    def fail(self, job_id: str, code: str, message: str, exit_code: int | None = None) -> bool:
        return self.update(
            job_id,
            state=FAILED,
            finished_at=time.time(),
            error_code=code,
            error_message=message,
            exit_code=exit_code,
            worker_pid=None,
        )

    def delete(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(row)

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to start; None once the job has left the queue."""
        if job.state != QUEUED:
            return None
        ((ahead,),) = self._rows("SELECT COUNT(*) FROM jobs WHERE state = ? AND seq < ?", (QUEUED, job.seq))
        return int(ahead) + 1

    def owned_by(self, owner: str) -> list[Job]:
        """The owner's jobs in upload order."""
        return [_row_to_job(r) for r in self._rows("SELECT * FROM jobs WHERE owner = ? ORDER BY seq", (owner,))]

    def recent_work(self, model: str, limit: int = 20) -> list[tuple[float, float]]:
        """(work seconds, input megapixels) of the latest done jobs a worker ran with this model file
        (`EDSR_x3.pb`): the stages every job does in their done events (contract.MODEL_STAGES)."""
        rows = self._rows(
            "SELECT timings, input_width * input_height FROM jobs WHERE state = ? AND model = ? "
            "AND cached_from IS NULL AND timings IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            (DONE, model, limit),
        )
        out = []
        for timings, pixels in rows:
            work = work_seconds(json.loads(timings), MODEL_STAGES) if timings else None
            if work is not None and pixels:
                out.append((work, pixels / 1e6))
        return out

    def recent_overheads(self, limit: int = 20) -> list[float]:
        """Seconds each of the latest done jobs a worker ran spent outside its work stages, from the service's
        start of its worker to its end: the fixed cost of a job on this service, whatever its model."""
        rows = self._rows(
            "SELECT finished_at - started_at, timings FROM jobs WHERE state = ? AND cached_from IS NULL "
            "AND started_at IS NOT NULL AND finished_at IS NOT NULL AND timings IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT ?",
            (DONE, limit),
        )
        out = []
        for wall, timings in rows:
            work = work_seconds(json.loads(timings)) if timings else None
            if work is not None and wall is not None:
                out.append(max(0.0, wall - work))
        return out

    def with_cache_key(self, key: str, states: tuple[str, ...]) -> list[Job]:
        """Jobs with this cache key in these states, oldest first."""
        marks = ", ".join("?" for _ in states)
        rows = self._rows(f"SELECT * FROM jobs WHERE cache_key = ? AND state IN ({marks}) ORDER BY seq", (key, *states))
        return [_row_to_job(r) for r in rows]

    def in_state(self, state: str) -> list[Job]:
        return [_row_to_job(r) for r in self._rows("SELECT * FROM jobs WHERE state = ? ORDER BY seq", (state,))]

    def finished_before(self, cutoff: float) -> list[Job]:
        rows = self._rows(
            "SELECT * FROM jobs WHERE state IN (?, ?) AND finished_at < ? ORDER BY seq", (DONE, FAILED, cutoff)
        )
        return [_row_to_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        counts = {state: 0 for state in STATES}
        for state, n in self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = int(n)
        return counts

    def waiting_for_node(self) -> int:
        """Running jobs whose task waits for a node."""
        ((n,),) = self._rows("SELECT COUNT(*) FROM jobs WHERE state = ? AND waiting_since IS NOT NULL", (RUNNING,))
        return int(n)

    def file_names(self) -> Iterator[tuple[str, str, str]]:
        """(id, input_file, output_file) of every job, for telling stray files from live ones."""
        for row in self._rows("SELECT id, input_file, output_file FROM jobs"):
            yield row[0], row[1], row[2]

    def service_key(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The key stored under `name`; the first caller stores `make()`'s, so that it outlives restarts."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO service_keys (name, key) VALUES (?, ?)", (name, make()))
            ((key,),) = db.execute("SELECT key FROM service_keys WHERE name = ?", (name,)).fetchall()
        return bytes(key)

    def sign_out(self, session_id: str, until: float) -> None:
        """Records a session as signed out until `until` (its expiry), dropping those already expired."""
        with self._tx() as db:
            db.execute("DELETE FROM signed_out WHERE until <= ?", (time.time(),))
            db.execute("INSERT OR REPLACE INTO signed_out (session_id, until) VALUES (?, ?)", (session_id, until))

    def signed_out(self, session_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM signed_out WHERE session_id = ? AND until > ?",
                               (session_id, time.time())))

