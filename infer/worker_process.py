"""The worker as a child process: its environment, its start in a session of its own (niced), its stderr kept
within bounds, and the kill of its whole group. Standard library only: the front end and Ray nodes share it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from infer import huge_pages

# Never passed to a worker: the access token; and the pixel limit, which travels in its command line only.
PRIVATE_ENV = ("SR_AUTH_TOKEN", "SR_MAX_PIXELS")
STDERR_LIMIT = 256 * 1024
TRUNCATED = b"[log truncated]\n"
_PR_SET_PDEATHSIG = 1


def worker_environment(extra: Mapping[str, str] | None = None, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """This process's environment less PRIVATE_ENV, with unbuffered output and `extra` on top, and huge pages
    asked for where neither says otherwise nor caps the worker's memory (infer/huge_pages.py)."""
    out = {k: v for k, v in env.items() if k not in PRIVATE_ENV}
    out["PYTHONUNBUFFERED"] = "1"
    out.update(extra or {})
    huge_pages.ask(out)
    return out


def dies_with_parent(parent: int, nice: int = 0) -> Callable[[], None]:
    """A preexec_fn: the child is SIGKILLed when the thread of `parent` that started it ends, and niced."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        # Dies with the starting process, even when that one is SIGKILLed (a force-cancelled Ray task).
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        if nice > 0:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError:
                pass

    return setup


def start(argv: list[str], *, cwd: Path, env: Mapping[str, str], nice: int, die_with_parent: bool = False) -> subprocess.Popen:
    """The worker, never through a shell, leading a new session (so its group can be killed whole), with stdout
    and stderr piped. Niced right after the start, before it spawns its compute threads, which inherit the
    value; `die_with_parent` does both in the child instead (for a Ray task, which may be SIGKILLed)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env), cwd=cwd,
        start_new_session=True, preexec_fn=dies_with_parent(os.getpid(), nice) if die_with_parent else None,
    )
    if not die_with_parent:
        lower_priority(proc.pid, nice)
    return proc


def lower_priority(pid: int, nice: int) -> None:
    """Keeps the web threads responsive while a worker saturates the CPU."""
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass


def is_running(pid: int) -> bool:
    """The process exists and has not ended (a zombie, which waits for a parent to reap it, has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def kill_group(pid: int) -> None:
    """SIGKILL to a worker's whole process group (it leads its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def keep_bounded(stream: IO[bytes], keep: Callable[[bytes], Any], limit: int = STDERR_LIMIT) -> None:
    """Passes the stream's first `limit` bytes of lines to `keep`, then TRUNCATED once, and drains the rest,
    so that the worker never blocks on a full pipe. When `keep` raises OSError (a full disk), the rest is
    drained and the error raised after."""
    kept, truncated, failed = 0, False, None
    for line in stream:
        if failed is not None:
            continue
        try:
            if kept + len(line) <= limit:
                keep(line)
                kept += len(line)
            elif not truncated:
                keep(TRUNCATED)
                truncated = True
        except OSError as err:
            failed = err
    stream.close()
    if failed is not None:
        raise failed
