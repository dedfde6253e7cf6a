"""/metrics after a known sequence of jobs: outcomes, queue wait, worker and accelerator seconds, in Prometheus form."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.web.conftest import Photos, StartServer
from web.jobs.metrics import Metrics, Snapshot


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels); parsing fails on anything that is not valid exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_follow_a_known_sequence_of_jobs(start_server: StartServer, photos: Photos) -> None:
    server = start_server()
    client = server.client()
    done = [client.wait(client.upload(photos.small_png).json()["id"]) for _ in range(2)]
    truncated = photos.small_png[: len(photos.small_png) // 2]  # accepted (header intact), fails in the worker
    failed = client.wait(client.upload(truncated).json()["id"])
    assert [j["status"] for j in done] == ["done", "done"] and failed["status"] == "failed"
    assert client.upload(b"not an image", filename="x.png").status == 415

    got = samples(client.get("/metrics").body.decode())
    assert got[("sr_jobs_finished_total", (("outcome", "done"),))] == 2
    assert got[("sr_jobs_finished_total", (("outcome", failed["error"]["code"]),))] == 1
    assert got[("sr_uploads_rejected_total", (("status", "415"),))] == 1
    assert got[("sr_queue_wait_seconds_count", ())] == 3
    assert got[("sr_job_seconds_count", ())] == 3
    # The small network runs on OpenCV in fp32 on the CPU: worker seconds are the time of the jobs whose
    # worker said which engine ran (the truncated photo failed in decoding, before that): the done jobs'
    # running time (rounded to ms, from another clock), less than all three jobs' time.
    worker = got[("sr_worker_seconds_total", (("device", "cpu"), ("engine", "opencv"), ("precision", "fp32")))]
    assert sum(j["timings"]["running"] for j in done) - 0.01 <= worker < got[("sr_job_seconds_sum", ())]
    assert not any(name == "sr_gpu_seconds_total" for name, _ in got)  # no accelerator ran
    assert got[("sr_queue_length", ())] == 0 and got[("sr_workers_running", ())] == 0
    assert got[("sr_jobs", (("state", "done"),))] == 2 and got[("sr_jobs", (("state", "failed"),))] == 1


def test_gpu_seconds_are_counted_from_the_done_event() -> None:
    metrics = Metrics()
    metrics.read_gauges_from(lambda: Snapshot(queue_length=4, workers_running=1, jobs_by_state={"queued": 4}))
    metrics.job_finished("done", 3.0, {"engine": "torch", "device": "cuda", "precision": "bf16", "gpu_seconds": 1.25})
    metrics.job_finished("done", 2.0, {"engine": "torch", "device": "cuda", "precision": "bf16", "gpu_seconds": 0.75})
    got = samples(metrics.render().decode())
    assert got[("sr_gpu_seconds_total", (("device", "cuda"), ("engine", "torch")))] == 2.0
    assert got[("sr_worker_seconds_total", (("device", "cuda"), ("engine", "torch"), ("precision", "bf16")))] == 5.0
    assert got[("sr_queue_length", ())] == 4 and got[("sr_jobs", (("state", "queued"),))] == 4
    # a second app's metrics start from zero: no process-wide registry
    assert ("sr_gpu_seconds_total", (("device", "cuda"), ("engine", "torch"))) not in samples(Metrics().render().decode())
