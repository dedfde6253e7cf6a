"""The job database: a database made before the `precision` column gets it on open, and the API shows it; a
job's progress from the worker's events."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.helpers import run_worker
from tests.web.conftest import Photos, StartServer
from web.jobs.finishing import EventRecorder
from web.jobs.store import QUEUED, RUNNING, Job, JobStore

_OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    original_name TEXT NOT NULL, input_file TEXT NOT NULL, input_format TEXT NOT NULL,
    input_width INTEGER NOT NULL, input_height INTEGER NOT NULL, input_bytes INTEGER NOT NULL,
    output_file TEXT NOT NULL, output_format TEXT NOT NULL, scale INTEGER NOT NULL,
    keep_upload INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER NOT NULL DEFAULT 0,
    output_width INTEGER, output_height INTEGER, output_bytes INTEGER, engine TEXT, device TEXT,
    timings TEXT, peak_rss_mb REAL, worker_pid INTEGER, exit_code INTEGER, error_code TEXT, error_message TEXT
);
"""
JOB_ID = "0d1c6f1e-3c41-4c43-9a8e-6a4f2f0f6f7b"


def test_an_older_database_gains_the_precision_column_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as db:
        db.executescript(_OLD_SCHEMA)
        db.execute(
            "INSERT INTO jobs (id, state, original_name, input_file, input_format, input_width, input_height,"
            " input_bytes, output_file, output_format, scale, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (JOB_ID, QUEUED, "old.png", f"{JOB_ID}.png", "png", 4, 3, 10, f"{JOB_ID}.png", "png", 3, time.time()),
        )
    db.close()
    store = JobStore(path)
    old = store.get(JOB_ID)
    assert old is not None and old.original_name == "old.png" and old.precision is None
    assert (old.ran, old.outscale, old.denoise_strength) == (None, None, None)
    assert store.update(JOB_ID, precision="bf16", ran="RealESRGAN Compact x4, reduced to 3x", outscale=3)
    assert store.get(JOB_ID).precision == "bf16"
    assert (store.get(JOB_ID).ran, store.get(JOB_ID).outscale) == ("RealESRGAN Compact x4, reduced to 3x", 3)
    store.close()
    # Opening it again finds the column there and changes nothing.
    again = JobStore(path)
    assert again.get(JOB_ID).precision == "bf16"
    again.close()


def test_a_new_database_stores_precision(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job = Job(id=JOB_ID, state=QUEUED, original_name="a.png", input_file="a.png", input_format="png", input_width=2,
              input_height=2, input_bytes=5, output_file="b.png", output_format="png", scale=3, created_at=1.0,
              precision="fp32")
    store.add(job)
    assert store.get(JOB_ID).precision == "fp32"
    store.close()


def test_the_job_shows_the_precision_the_worker_reported(
    start_server: StartServer, photos: Photos, fsrcnn_model: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(photos.small_png)
    run = run_worker("--input", source, "--output", tmp_path / "out.png", "--model", fsrcnn_model)
    assert run.exit_code == 0, run.stderr
    reported = run.last
    assert reported["event"] == "done"

    client = start_server().client()
    job = client.wait(client.upload(photos.small_png).json()["id"])
    assert job["status"] == "done"
    assert "precision" in job
    assert job["precision"] == reported.get("precision")


def test_progress_within_a_tile_reaches_the_job_and_an_older_workers_whole_tiles_still_do(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    for job_id in (JOB_ID, JOB_ID[:-1] + "0"):
        store.add(Job(id=job_id, state=RUNNING, original_name="a.png", input_file="a.png", input_format="png",
                      input_width=2, input_height=2, input_bytes=5, output_file="b.png", output_format="png", scale=3,
                      created_at=1.0))
    recorder = EventRecorder(store, JOB_ID)
    recorder({"event": "start", "tiles": 2, "engine": "torch", "device": "cpu"})
    assert store.get(JOB_ID).progress == 0
    recorder({"event": "progress", "done": 0, "total": 2, "fraction": 0.3})
    job = store.get(JOB_ID)
    assert (job.progress, job.progress_done, job.progress_total) == (0.3, 0, 2)
    older = EventRecorder(store, JOB_ID[:-1] + "0")
    older({"event": "start", "tiles": 4})
    older({"event": "progress", "done": 1, "total": 4})
    assert store.get(JOB_ID[:-1] + "0").progress == 0.25
    store.close()
