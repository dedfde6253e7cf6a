"""Damaged, disguised and oversized files, straight to the worker CLI and through the HTTP API: each gets its
own exit code or status and a message saying what to do, nothing is left on disk, and the service keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import Observe, WorkerRun, assert_settled, run_cases
from tests.reliability.inputs import bad_files
from tests.reliability.outcomes import outcome
from tests.web.server import LiveServer

GROUP = "Bad files"
CASES = {case.name: case for case in bad_files()}
# What the service's own refusal must tell the person, by error code.
REFUSAL_HINTS = {
    "empty_file": "empty",
    "unsupported_type": "send a PNG, JPEG",
    "too_many_pixels": "resize it",
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory, fsrcnn_model: Path) -> dict[str, tuple[WorkerRun, Path]]:
    """Every bad file through the worker, two at a time (each run is its own process)."""
    return run_cases(CASES, tmp_path_factory, fsrcnn_model)


@pytest.mark.parametrize("name", CASES)
def test_worker_cli_refuses(cli_runs: dict[str, tuple[WorkerRun, Path]], name: str, observe: Observe) -> None:
    case = CASES[name]
    run, output = cli_runs[name]
    folder = output.parent
    assert run.exit_code == case.exit_code, run.stderr
    assert [e["event"] for e in run.events] == ["error"], "nothing may start for a file refused up front"
    error = run.last
    assert error["code"] == case.job_code and error["exit_code"] == case.exit_code
    assert case.message in error["message"] and case.filename in error["message"]
    assert run.seconds < 20
    assert sorted(p.name for p in folder.iterdir()) == [case.filename], "a failed job must leave no output"
    message = error["message"].replace(f"{folder}/", "")
    observe(GROUP, name, cli=outcome(f"exit {run.exit_code}", message), left="CLI: no output file")


@pytest.mark.parametrize("name", CASES)
def test_http_api_refuses(limited_server: LiveServer, name: str, observe: Observe) -> None:
    case = CASES[name]
    client = limited_server.client()
    store = limited_server.services.store
    jobs_before = sum(store.counts().values())

    reply = client.upload(case.data, filename=case.filename)
    if case.refused is not None:
        status, code = case.refused
        assert reply.status == status, reply.body
        error = reply.json()["error"]
        assert error["code"] == code
        assert REFUSAL_HINTS[code] in error["message"]
        if code == "too_many_pixels":
            assert case.message in error["message"], "the message should say how large the photo is"
        # Refused before any job exists, so no worker ever ran for it.
        assert sum(store.counts().values()) == jobs_before
        answer = outcome(f"HTTP {status} {code} (no job, no worker)", error["message"])
    else:
        # The header is a photo's, so only decoding can tell: the job is accepted and the worker fails it.
        assert reply.status == 202, reply.body
        job = client.wait(reply.json()["id"])
        assert job["status"] == "failed"
        assert job["error"]["code"] == case.job_code
        message = job["error"]["message"]
        assert case.message in message and repr(case.filename) in message
        assert str(limited_server.data_dir) not in message, "server paths are not the person's business"
        result = client.get(f"/api/jobs/{job['id']}/result")
        assert result.status == 409 and result.json()["error"]["code"] == "job_failed"
        exit_code = store.get(job["id"]).exit_code
        assert exit_code == case.exit_code
        answer = outcome(f"HTTP 202, then job failed {case.job_code} (worker exit {exit_code})", message)
    assert_settled(limited_server)
    observe(GROUP, name, http=answer, left="HTTP: nothing in uploads/ or results/", answering="yes (/healthz 200)")
