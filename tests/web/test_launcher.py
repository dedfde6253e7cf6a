"""The preloaded launcher: forked jobs write what plain ones write, account for their whole time, and keep every
guarantee of a job's process (its session, timeout, cancel, the memory limit, no orphans), through a launcher
that dies and comes back; and estimates that a tiny job does not throw off."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from infer.contract import WORK_STAGES, WORKER_SCRIPT
from infer.launcher import ForkedProcess, Launcher, StartKind
from infer.worker_process import start as plain_start
from infer.worker_process import worker_environment
from tests.reliability.conftest import session_members
from tests.web.conftest import StartServer, wait_until
from tests.web.server import start_service_process, worker_processes


def _png(path: Path, width: int, height: int, seed: int = 5) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((width, height)).save(path)
    return path


def _png_bytes(tmp_path: Path, width: int, height: int, seed: int = 5) -> bytes:
    return _png(tmp_path / f"p{width}x{height}_{seed}.png", width, height, seed).read_bytes()


@pytest.fixture(scope="module")
def launcher() -> Launcher:
    started = Launcher(StartKind.PRELOADED, worker_environment(), WORKER_SCRIPT.parent.parent)
    started.start()
    assert started.wait_ready(240), started.state()
    yield started
    started.close()


def _run(proc, timeout: float = 120) -> tuple[int, list[dict], str]:
    out, err = proc.stdout.read(), proc.stderr.read()
    code = proc.wait(timeout)
    proc.stdout.close()
    proc.stderr.close()
    return code, [json.loads(line) for line in out.splitlines()], err.decode(errors="replace")


def _stages_sum_to_total(done: dict) -> None:
    seconds = dict(done["seconds"])
    total = seconds.pop("total")
    assert abs(sum(seconds.values()) - total) <= 0.05 * total, done["seconds"]


@pytest.mark.parametrize("model", ["compact", "fsrcnn"])
def test_forked_job_writes_the_same_bytes_as_a_plain_one_and_accounts_for_its_time(
    launcher: Launcher, model: str, realesrgan: dict[str, Path], fsrcnn_model: Path, tmp_path: Path
) -> None:
    model_path = realesrgan["compact"] if model == "compact" else fsrcnn_model
    photo = _png(tmp_path / "small.png", 160, 120)
    outputs = {}
    for kind in ("preloaded", "plain"):
        # A relative output: the job's own working folder must be the one it runs in.
        argv = [sys.executable, str(WORKER_SCRIPT), "--input", str(photo), "--output", f"{kind}.png",
                "--model", str(model_path)]
        env = worker_environment({"OMP_NUM_THREADS": "1"})
        if kind == "preloaded":
            proc = launcher.popen(argv, cwd=tmp_path, env=env, nice=3)
            assert isinstance(proc, ForkedProcess)
            shown = psutil.Process(proc.pid)
            # Its own session, its niceness, its command line for `ps` and the service's orphan check.
            assert os.getsid(proc.pid) == proc.pid and shown.nice() == 3
            assert shown.cmdline()[1:3] == [str(WORKER_SCRIPT), "--input"]
        else:
            proc = plain_start(argv, cwd=tmp_path, env=env, nice=3)
        code, events, err = _run(proc)
        assert code == 0, err
        (done,) = [e for e in events if e["event"] == "done"]
        _stages_sum_to_total(done)
        assert ("fork" in done["seconds"]) == (kind == "preloaded") and ("startup" in done["seconds"]) == (kind == "plain")
        outputs[kind] = hashlib.sha256((tmp_path / f"{kind}.png").read_bytes()).hexdigest()
    assert outputs["preloaded"] == outputs["plain"]


def test_forked_job_keeps_to_the_memory_limit_in_its_own_environment(
    launcher: Launcher, realesrgan: dict[str, Path], tmp_path: Path
) -> None:
    photo = _png(tmp_path / "big.png", 900, 700)
    argv = [sys.executable, str(WORKER_SCRIPT), "--input", str(photo), "--output", str(tmp_path / "out.png"),
            "--model", str(realesrgan["compact"]), "--tile", "0"]
    # 20 MB more than its libraries: far below a 900x700 photo's activations at 4x.
    env = worker_environment({"SR_WORKER_MEMORY_MB": "20", "OMP_NUM_THREADS": "1"})
    proc = launcher.popen(argv, cwd=tmp_path, env=env, nice=0)
    assert isinstance(proc, ForkedProcess)
    code, events, _ = _run(proc)
    assert code == 6 and events[-1]["event"] == "error" and events[-1]["code"] == "out_of_memory", events[-1:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]
    assert session_members(proc.pid) == []


def _launcher_state(client) -> dict:
    return client.get("/healthz").json()["backend"]["launcher"]


def test_forked_jobs_are_killed_at_the_timeout_and_on_cancel_with_no_orphans(
    start_server: StartServer, edsr_model_slow: Path, shared_photos: Path, tmp_path: Path
) -> None:
    timeout = 15.0
    server = start_server(model_path=edsr_model_slow, worker_start="preloaded", job_timeout_s=timeout)
    client = server.client()
    wait_until(lambda: _launcher_state(client)["ready"], timeout=240, what="the launcher")
    slow = (shared_photos / "coffee.png").read_bytes()

    stuck = client.upload(slow, filename="stuck.png").json()
    (worker,) = wait_until(lambda: worker_processes(stuck["id"]), timeout=30, what="the forked worker")
    assert worker.parent().pid != os.getpid()  # forked by the launcher, not started by the service
    worker.send_signal(signal.SIGSTOP)
    failed = client.wait(stuck["id"], timeout=timeout + 30)
    assert failed["error"]["code"] == "timeout", failed
    wait_until(lambda: session_members(worker.pid) == [], what="the timed-out job's session to be gone")

    cancelled = client.upload(slow, filename="cancel.png").json()
    wait_until(lambda: client.job(cancelled["id"])["tiles"]["total"] > 0, timeout=30, what="the job to run")
    (worker,) = worker_processes(cancelled["id"])
    assert client.delete(f"/api/jobs/{cancelled['id']}").status == 204
    wait_until(lambda: session_members(worker.pid) == [], what="the cancelled job's session to be gone")
    assert _launcher_state(client)["deaths"] == 0


def test_a_launcher_killed_mid_job_fails_that_job_clearly_and_comes_back(
    start_server: StartServer, edsr_model_slow: Path, shared_photos: Path, tmp_path: Path
) -> None:
    server = start_server(model_path=edsr_model_slow, worker_start="preloaded")
    client = server.client()
    wait_until(lambda: _launcher_state(client)["ready"], timeout=240, what="the launcher")
    running = client.upload((shared_photos / "coffee.png").read_bytes(), filename="running.png").json()
    wait_until(lambda: client.job(running["id"])["tiles"]["total"] > 0, timeout=30, what="the job to run")
    (worker,) = worker_processes(running["id"])
    zygote = worker.parent()
    zygote.kill()

    failed = client.wait(running["id"], timeout=30)
    assert failed["status"] == "failed" and "upload the photo again" in failed["error"]["message"], failed
    assert session_members(worker.pid, zombies=False) == []
    # New jobs run meanwhile (the plain way while the launcher restarts), and it comes back.
    after = client.upload(_png_bytes(tmp_path, 40, 30), filename="after.png").json()
    assert client.wait(after["id"], timeout=60)["status"] == "done"
    state = wait_until(lambda: (s := _launcher_state(client))["ready"] and s, timeout=240, what="the launcher back")
    assert state["starts"] == 2 and state["deaths"] == 1
    again = client.upload(_png_bytes(tmp_path, 40, 30, seed=6), filename="again.png").json()
    done = client.wait(again["id"], timeout=60)
    assert done["status"] == "done" and "fork" in done["timings"], done


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_service_leaves_no_launcher_and_no_job(stop: signal.Signals, edsr_model_slow: Path,
                                                        shared_photos: Path, tmp_path: Path) -> None:
    service = start_service_process(tmp_path / "service.log", {
        "SR_DATA_DIR": str(tmp_path / "data"), "SR_MODEL_PATH": str(edsr_model_slow),
    })
    try:
        client = service.client()
        state = wait_until(lambda: (s := _launcher_state(client))["ready"] and s, timeout=240, what="the launcher")
        assert state["kind"] == "preloaded"
        job = client.upload((shared_photos / "coffee.png").read_bytes(), filename="slow.png").json()
        wait_until(lambda: client.job(job["id"])["tiles"]["total"] > 0, timeout=60, what="the job to run")
        family = psutil.Process(service.proc.pid).children(recursive=True)
        assert any("infer.zygote" in " ".join(p.cmdline()) for p in family)
        assert any(str(WORKER_SCRIPT) in p.cmdline() for p in family)
        service.proc.send_signal(stop)
        service.proc.wait(30)
    finally:
        service.terminate()
    # Ended, or a zombie that init has still to reap (a SIGKILLed service reaps nothing).
    wait_until(lambda: not [p for p in family if _running(p)], timeout=10, what="the launcher and the job to end")


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_plain_start_still_runs_jobs(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(worker_start="plain")
    client = server.client()
    assert _launcher_state(client) == {"kind": "plain", "ready": False, "starts": 0, "deaths": 0,
                                       "imports_s": None, "rss_mb": None, "note": None}
    job = client.upload(_png_bytes(tmp_path, 48, 32), filename="plain.png").json()
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "done" and "startup" in done["timings"] and "fork" not in done["timings"]


def test_a_tiny_job_hardly_moves_the_estimate(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    client = server.client()

    def speed() -> tuple[float, float]:
        options = client.get("/api/options").json()
        (fsrcnn,) = [m for m in options["models"] if m["id"] == "FSRCNN_x3"]
        return options["start_seconds"], fsrcnn["seconds_per_megapixel"]

    start0, speed0 = speed()
    assert start0 > 0 and speed0 > 0
    photo = _png_bytes(tmp_path, 400, 300)
    job = client.upload(photo, filename="ordinary.png").json()
    assert job["estimate_seconds"] == pytest.approx(start0 + 0.12 * speed0, abs=0.2)
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "done"
    start1, speed1 = speed()
    # The fixed cost is measured now: what the job took outside its work stages.
    work = sum(done["timings"].get(s, 0) for s in WORK_STAGES)
    assert start1 == pytest.approx(done["timings"]["running"] - work, abs=0.05)
    for seed in (1, 2, 3):
        tiny = client.upload(_png_bytes(tmp_path, 12, 10, seed=seed), filename="tiny.png").json()
        assert client.wait(tiny["id"], timeout=60)["status"] == "done"
    _, speed2 = speed()
    assert abs(speed2 / speed1 - 1) <= 0.2, (speed1, speed2)
