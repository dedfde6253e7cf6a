"""The outcome rules: how a job's ending (exit code, signal, timeout, cancel, the worker's events) becomes done or failed."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from infer.contract import Failure
from web.guards.space import OUT_OF_SPACE_MESSAGE, says_out_of_space

RESTART_MESSAGE = "the service restarted while this photo was being processed; upload it again"
STOP_MESSAGE = "the service stopped while this photo was being processed; upload it again"
NODE_LOST_MESSAGE = "the machine processing this photo stopped while working on it; upload the photo again"
CLUSTER_LOST_MESSAGE = (
    "the service lost contact with the machines that process photos while working on this one; "
    "upload the photo again in a few minutes"
)

UNAVAILABLE_MESSAGE = "photos cannot be upscaled at the moment; upload the photo again in a few minutes"

# What to tell the person when the worker exited without an `error` event of its own, by error code (the
# first row of the contract's table with the code).
FALLBACK_MESSAGES: dict[str, str] = {
    code: Failure.from_code(code).fallback_message  # type: ignore[union-attr]
    for code in dict.fromkeys(f.code for f in Failure)
}


class Lost(Enum):
    """Why a remote execution ended without an exit code of the worker."""

    NODE = "node_lost"  # the machine (or the process) running the job died
    CLUSTER = "cluster_lost"  # the front end lost its connection to the cluster


class Verdict(Enum):
    DONE = "done"
    FAILED = "failed"
    DISCARDED = "discarded"  # cancelled: the job row is gone, nothing to record


@dataclass
class WorkerReport:
    """What the worker said on stdout during one job (the events' JSON objects)."""

    start: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    progress_done: int = 0
    progress_total: int = 0


@dataclass(frozen=True)
class Ending:
    """How one execution ended, in plain values whatever ran it."""

    exit_code: int | None = None  # the worker's exit status; None when it was killed by a signal or lost
    signal: int | None = None  # the signal that ended the worker
    timed_out: bool = False
    cancelled: bool = False
    stopping: bool = False  # the service was shutting down
    result_present: bool = False  # the result file is in results/
    lost: Lost | None = None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    code: str | None = None
    message: str | None = None  # for the person
    # The worker's own message when it is an operator's remedy (commands, settings, paths): it goes to the
    # job's log and the service log instead, and the person reads `message`.
    operator_note: str | None = None


def _identity(text: str) -> str:
    return text


def decide_outcome(
    ending: Ending,
    report: WorkerReport,
    job_timeout_s: float,
    public_message: Callable[[str], str] = _identity,
) -> Outcome:
    """The job's outcome. `public_message` rewrites a worker message for the uploader (server paths out)."""
    if ending.cancelled:
        return Outcome(Verdict.DISCARDED)
    if ending.stopping:
        return Outcome(Verdict.FAILED, "interrupted", STOP_MESSAGE)
    rc = ending.exit_code
    if rc == 0 and report.done is not None and ending.result_present:
        return Outcome(Verdict.DONE)
    if ending.timed_out:
        return Outcome(
            Verdict.FAILED,
            "timeout",
            f"took longer than {job_timeout_s:g} seconds (SR_JOB_TIMEOUT_S) and was stopped; try a smaller photo",
        )
    if report.error is not None:
        code = report.error.get("code")
        if not isinstance(code, str):
            code = Failure.from_exit_code(rc if rc is not None else 1).code
        message = str(report.error.get("message") or FALLBACK_MESSAGES.get(code, FALLBACK_MESSAGES["internal_error"]))
        if code == "model_error":
            return Outcome(Verdict.FAILED, code, FALLBACK_MESSAGES[code], operator_note=message)
        if code == "output_error" and says_out_of_space(message):
            return Outcome(Verdict.FAILED, code, OUT_OF_SPACE_MESSAGE, operator_note=message)
        return Outcome(Verdict.FAILED, code, public_message(message))
    if ending.lost is Lost.NODE:
        return Outcome(Verdict.FAILED, Lost.NODE.value, NODE_LOST_MESSAGE)
    if ending.lost is Lost.CLUSTER:
        return Outcome(Verdict.FAILED, Lost.CLUSTER.value, CLUSTER_LOST_MESSAGE)
    if ending.signal is not None:
        try:
            name = signal.Signals(ending.signal).name
        except ValueError:
            name = f"signal {ending.signal}"
        return Outcome(
            Verdict.FAILED, "worker_killed", f"the upscaling process was stopped unexpectedly ({name}); upload the photo again"
        )
    if rc == 0:
        return Outcome(Verdict.FAILED, "internal_error", "the upscaling finished without writing a result; try again")
    code = Failure.from_exit_code(rc if rc is not None else 1).code
    return Outcome(Verdict.FAILED, code, FALLBACK_MESSAGES.get(code, FALLBACK_MESSAGES["internal_error"]))


def ending_from_returncode(returncode: int | None, **flags: Any) -> Ending:
    """An Ending from a Popen-style return code (negative: killed by that signal)."""
    if returncode is not None and returncode < 0:
        return Ending(exit_code=None, signal=-returncode, **flags)
    return Ending(exit_code=returncode, **flags)
