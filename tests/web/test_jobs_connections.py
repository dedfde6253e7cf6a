"""The job database's open files stay bounded under bursts, whatever the number of request threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from tests.web.conftest import Photos, StartServer


def _db_files(db: Path) -> int:
    return sum(1 for f in psutil.Process().open_files() if f.path.startswith(str(db)))


def test_request_threads_that_live_on_hold_no_connection(start_server: StartServer, photos: Photos) -> None:
    """32 long-lived threads (as gunicorn's pool) each make requests: the store never opens more than its
    pool of 4 connections (three files each: the database, its WAL and its shared memory), not three files
    per thread."""
    server = start_server()
    client = server.app.test_client()
    job_id = client.post("/api/jobs", data={"image": (__import__("io").BytesIO(photos.small_png), "a.png")}).get_json()["id"]
    db = server.services.config.db_path
    server.client().wait(job_id)
    before = _db_files(db)
    with ThreadPoolExecutor(max_workers=32) as pool:
        # the pool's threads stay alive until the `with` ends: count while they are all still there
        replies = list(pool.map(lambda _: client.get(f"/api/jobs/{job_id}").status_code, range(320)))
        assert set(replies) == {200}
        assert len(pool._threads) == 32
        during = _db_files(db)
    store = server.services.store
    assert store.open_connections() <= 4
    assert during <= before + 3 * 4, (before, during)


def test_the_pool_lends_one_connection_per_thread_and_nests(tmp_path: Path) -> None:
    import threading

    from web.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs.db", connections=2)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store._pool.connection():
            inside.set()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    assert inside.wait(10)
    waiter_done = threading.Event()
    waiter = threading.Thread(target=lambda: (store.counts(), waiter_done.set()))
    waiter.start()
    # both connections are lent: a third borrower waits rather than opening another
    assert not waiter_done.wait(0.5) and store.open_connections() == 2
    release.set()
    assert waiter_done.wait(10)
    for t in (*holders, waiter):
        t.join(10)
    # a transaction inside a borrowed connection reuses it instead of waiting for itself
    with store._pool.connection():
        assert store.counts()["queued"] == 0
        with store._tx() as db:
            db.execute("SELECT 1")
    assert store.open_connections() == 2
