"""The outcome rules on their own: plain values in, done or failed (with which code and message) out."""

from __future__ import annotations

import signal

import pytest

from web.jobs.outcomes import (
    CLUSTER_LOST_MESSAGE,
    FALLBACK_MESSAGES,
    NODE_LOST_MESSAGE,
    STOP_MESSAGE,
    Ending,
    Lost,
    Outcome,
    Verdict,
    WorkerReport,
    decide_outcome,
    ending_from_returncode,
)

DONE_EVENT = {"event": "done", "width": 30, "height": 30}


def _decide(ending: Ending, report: WorkerReport | None = None) -> Outcome:
    return decide_outcome(ending, report or WorkerReport(), 60.0, lambda m: m.replace("/srv/uploads/x.png", "'x.png'"))


def test_exit_zero_with_done_and_the_result_is_done() -> None:
    assert _decide(Ending(exit_code=0, result_present=True), WorkerReport(done=DONE_EVENT)) == Outcome(Verdict.DONE)


@pytest.mark.parametrize(
    "ending, report",
    [
        (Ending(exit_code=0, result_present=False), WorkerReport(done=DONE_EVENT)),
        (Ending(exit_code=0, result_present=True), WorkerReport()),
    ],
)
def test_exit_zero_without_result_or_done_event_is_an_internal_error(ending: Ending, report: WorkerReport) -> None:
    assert _decide(ending, report) == Outcome(
        Verdict.FAILED, "internal_error", "the upscaling finished without writing a result; try again"
    )


def test_cancelled_is_discarded_whatever_else_happened() -> None:
    ending = Ending(exit_code=0, result_present=True, cancelled=True, timed_out=True, lost=Lost.NODE)
    assert _decide(ending, WorkerReport(done=DONE_EVENT)).verdict is Verdict.DISCARDED


def test_stopping_service_fails_interrupted() -> None:
    assert _decide(Ending(signal=signal.SIGKILL, stopping=True)) == Outcome(Verdict.FAILED, "interrupted", STOP_MESSAGE)


def test_timeout_beats_the_kill_it_caused() -> None:
    outcome = _decide(Ending(signal=signal.SIGKILL, timed_out=True, lost=Lost.NODE))
    assert outcome == Outcome(
        Verdict.FAILED, "timeout", "took longer than 60 seconds (SR_JOB_TIMEOUT_S) and was stopped; try a smaller photo"
    )


def test_the_workers_error_event_wins_and_is_worded_for_the_uploader() -> None:
    report = WorkerReport(error={"event": "error", "code": "bad_input", "message": "cannot read /srv/uploads/x.png"})
    assert _decide(Ending(exit_code=3), report) == Outcome(Verdict.FAILED, "bad_input", "cannot read 'x.png'")


def test_an_error_event_without_a_code_takes_it_from_the_exit_code() -> None:
    report = WorkerReport(error={"event": "error", "message": "too big"})
    assert _decide(Ending(exit_code=4), report) == Outcome(Verdict.FAILED, "too_many_pixels", "too big")


def test_lost_node_and_lost_cluster_say_to_upload_again() -> None:
    assert _decide(Ending(lost=Lost.NODE)) == Outcome(Verdict.FAILED, "node_lost", NODE_LOST_MESSAGE)
    assert _decide(Ending(lost=Lost.CLUSTER)) == Outcome(Verdict.FAILED, "cluster_lost", CLUSTER_LOST_MESSAGE)
    assert "upload" in NODE_LOST_MESSAGE and "upload" in CLUSTER_LOST_MESSAGE


def test_killed_by_a_signal_names_it() -> None:
    outcome = _decide(ending_from_returncode(-signal.SIGKILL))
    assert outcome == Outcome(
        Verdict.FAILED, "worker_killed", "the upscaling process was stopped unexpectedly (SIGKILL); upload the photo again"
    )


@pytest.mark.parametrize(
    "rc, code", [(1, "internal_error"), (2, "usage"), (3, "bad_input"), (4, "too_many_pixels"), (5, "model_error"),
                 (6, "out_of_memory"), (7, "output_error"), (99, "internal_error")]
)
def test_exit_codes_without_an_error_event(rc: int, code: str) -> None:
    assert _decide(Ending(exit_code=rc)) == Outcome(Verdict.FAILED, code, FALLBACK_MESSAGES[code])
