"""The result cache with the real service and worker: one run per photo and settings, scopes, deletes, restarts."""

from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from email.utils import formatdate
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.web.client import HttpClient
from tests.web.conftest import Photos, StartServer
from tests.web.server import LiveServer


def _browser(server: LiveServer) -> HttpClient:
    client = server.client()
    match = re.match(r"sr_owner=([^;]+)", client.get("/api/jobs").header("Set-Cookie") or "")
    assert match
    client.cookies["sr_owner"] = match.group(1)
    return client


def _logs(server: LiveServer) -> int:
    """Worker runs: each one leaves its job's log in state/logs."""
    return len(list(server.services.config.logs_dir.glob("*.log")))


def _metric(server: LiveServer, name: str) -> float:
    text = server.client().get("/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


def test_the_same_photo_three_times_runs_one_worker(start_server: StartServer, photos: Photos) -> None:
    server = start_server()
    client = _browser(server)
    jobs = [client.wait(client.upload(photos.small_png, filename=f"p{i}.png").json()["id"]) for i in range(3)]
    assert [j["status"] for j in jobs] == ["done"] * 3
    assert [j["cached"] for j in jobs] == [False, True, True]
    assert _logs(server) == 1
    results = [client.get(j["links"]["result"]).body for j in jobs]
    assert results[0] == results[1] == results[2] and results[0][:8] == b"\x89PNG\r\n\x1a\n"
    # served at once: the repeat's 202 already says done
    again = client.upload(photos.small_png, filename="p3.png").json()
    assert again["status"] == "done" and again["cached"] is True
    assert _metric(server, "sr_cache_hits_total") == 3
    assert _metric(server, "sr_cache_saved_seconds_total") > 0
    # another format, or another model, is another result
    other_format = client.wait(client.upload(photos.small_png, fields={"format": "jpg"}).json()["id"])
    assert other_format["cached"] is False and other_format["output"]["format"] == "jpg"
    assert _logs(server) == 2


def test_another_model_is_another_run(start_server: StartServer, photos: Photos, shared_models: Path,
                                      tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("FSRCNN_x3", "ESPCN_x3"):
        (models / f"{name}.pb").write_bytes((shared_models / f"{name}.pb").read_bytes())
    server = start_server(model_path=models / "FSRCNN_x3.pb", models_dir=models)
    client = _browser(server)
    a = client.wait(client.upload(photos.small_png, fields={"model": "FSRCNN_x3"}).json()["id"])
    b = client.wait(client.upload(photos.small_png, fields={"model": "ESPCN_x3"}).json()["id"])
    assert a["cached"] is False and b["cached"] is False and _logs(server) == 2


def test_two_uploads_at_once_share_one_run(start_server: StartServer, photos: Photos, edsr_model_slow: Path) -> None:
    """With two workers free, the second of two simultaneous uploads waits for the first instead of
    starting its own worker (the slow model keeps the first running for seconds)."""
    server = start_server(model_path=edsr_model_slow, concurrency=2)
    client = _browser(server)
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(client.upload(photos.slow_png).json()["id"]))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    jobs = [client.wait(i, timeout=300) for i in ids]
    assert sorted(j["cached"] for j in jobs) == [False, True] and all(j["status"] == "done" for j in jobs)
    assert _logs(server) == 1


def test_deleting_one_of_two_keeps_the_other_and_the_sweep_waits_for_both(start_server: StartServer,
                                                                          photos: Photos) -> None:
    server = start_server()
    client = _browser(server)
    first = client.wait(client.upload(photos.small_png).json()["id"])
    second = client.wait(client.upload(photos.small_png).json()["id"])
    assert second["cached"] is True
    body = client.get(first["links"]["result"]).body
    assert client.delete(f"/api/jobs/{first['id']}").status == 204
    assert client.get(second["links"]["result"]).body == body
    third = client.wait(client.upload(photos.small_png).json()["id"])  # served from the second's result
    assert third["cached"] is True and client.get(third["links"]["result"]).body == body

    # The sweep at a time when only the second has expired removes it alone; the third's file stays.
    store, cleaner = server.services.store, server.services.cleaner
    s, t = store.get(second["id"]), store.get(third["id"])
    assert cleaner.sweep(now=(s.finished_at + t.finished_at) / 2 + cleaner.ttl_s) == 1
    assert client.get(second["links"]["result"]).status == 404
    assert client.get(third["links"]["result"]).body == body
    assert cleaner.sweep(now=t.finished_at + cleaner.ttl_s + 1) == 1
    results = server.services.config.results_dir
    assert not [p for p in results.iterdir() if not p.name.startswith(".")]


def test_a_failed_job_is_never_reused(start_server: StartServer, photos: Photos) -> None:
    server = start_server()
    client = _browser(server)
    truncated = photos.small_png[: len(photos.small_png) // 2]
    jobs = [client.wait(client.upload(truncated).json()["id"]) for _ in range(2)]
    assert [j["status"] for j in jobs] == ["failed", "failed"] and not any(j["cached"] for j in jobs)
    assert _logs(server) == 2


def test_an_expired_result_is_not_reused_before_the_sweep_removes_it(start_server: StartServer,
                                                                    photos: Photos) -> None:
    """The sweep runs every few minutes; between two sweeps a result past its lifetime is no hit."""
    server = start_server(result_ttl_h=1)  # the sweep: at start, then every 5 minutes
    client = _browser(server)
    first = client.wait(client.upload(photos.small_png).json()["id"])
    repeat = client.wait(client.upload(photos.small_png).json()["id"])
    assert repeat["cached"] is True and _logs(server) == 1
    store = server.services.store
    for job in (first, repeat):  # both finished 61 minutes ago: past the hour, not yet swept
        assert store.update(job["id"], finished_at=time.time() - 61 * 60)
    late = client.wait(client.upload(photos.small_png).json()["id"])
    assert late["status"] == "done" and late["cached"] is False and _logs(server) == 2
    assert client.get(first["links"]["result"]).status == 200, "the sweep has not run: the expired result is there"


def test_cache_entries_survive_a_restart(start_server: StartServer, photos: Photos, tmp_path: Path) -> None:
    data = tmp_path / "kept"
    server = start_server(data_dir=data)
    client = _browser(server)
    first = client.wait(client.upload(photos.small_png).json()["id"])
    server.stop()
    again = start_server(data_dir=data)
    client2 = again.client()
    client2.cookies.update(client.cookies)
    reply = client2.upload(photos.small_png).json()
    assert reply["status"] == "done" and reply["cached"] is True
    assert client2.get(reply["links"]["result"]).body == client2.get(first["links"]["result"]).body


def test_scopes_owner_shared_off(start_server: StartServer, photos: Photos) -> None:
    owner = start_server(result_cache="owner")
    alice, bob = _browser(owner), _browser(owner)
    alice.wait(alice.upload(photos.small_png).json()["id"])
    assert bob.wait(bob.upload(photos.small_png).json()["id"])["cached"] is False  # runs its own worker
    assert _logs(owner) == 2

    shared = start_server(result_cache="shared")
    alice, bob = _browser(shared), _browser(shared)
    alice.wait(alice.upload(photos.small_png).json()["id"])
    job = bob.wait(bob.upload(photos.small_png).json()["id"])
    assert job["cached"] is True and _logs(shared) == 1
    # nothing else of alice's job is visible to bob
    assert [j["id"] for j in bob.get("/api/jobs").json()["jobs"]] == [job["id"]]

    off = start_server(result_cache="off")
    alice = _browser(off)
    jobs = [alice.wait(alice.upload(photos.small_png).json()["id"]) for _ in range(2)]
    assert not any(j["cached"] for j in jobs) and _logs(off) == 2


def test_a_shared_hit_tells_only_its_own_finish_time(start_server: StartServer, photos: Photos) -> None:
    """With SR_RESULT_CACHE=shared a hit's file is a hard link to the first uploader's; its Last-Modified,
    ETag and zip date must be its own job's, not that uploader's."""
    server = start_server(result_cache="shared")
    first, second = _browser(server), _browser(server)
    early = first.wait(first.upload(photos.small_png).json()["id"])
    time.sleep(3)  # more than the zip format's two-second resolution
    late = second.upload(photos.small_png).json()
    assert late["cached"] is True and late["finished_at"] - early["finished_at"] >= 3
    early_result, late_result = first.get(early["links"]["result"]), second.get(late["links"]["result"])
    assert early_result.body == late_result.body
    assert late_result.header("Last-Modified") == formatdate(int(late["finished_at"]), usegmt=True)
    assert late_result.header("Last-Modified") != early_result.header("Last-Modified")
    assert late_result.header("ETag") != early_result.header("ETag")
    assert str(int(early["finished_at"])) not in late_result.header("ETag")
    # The validators still validate.
    again = second.get(late["links"]["result"], headers={"If-None-Match": late_result.header("ETag")})
    assert again.status == 304
    with zipfile.ZipFile(io.BytesIO(second.get("/api/jobs.zip").body)) as archive:
        (entry,) = archive.infolist()
    finished = time.localtime(late["finished_at"])
    assert entry.date_time == (*finished[:5], finished.tm_sec // 2 * 2)
