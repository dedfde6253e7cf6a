"""Job processes started fast: forked from the preloaded launcher (infer/zygote.py) while it runs, plain meanwhile.

Standard library only: the front end and Ray nodes share it. The launcher has imported the worker's libraries
once (3.5-8 s of `import torch, spandrel` a job no longer pays); each job is still a process of its own, in a
session of its own, with the job's environment, working folder and niceness, its stdout and stderr piped to
the caller, ended and accounted like a plain one. The caller gets a `subprocess.Popen`-like object either way.

The wire: the service holds one end of a SOCK_SEQPACKET socket pair; the launcher the other. A job is one
message (`Request`, JSON) carrying three descriptors: the job's own socket and the write ends of its stdout and
stderr pipes. On the job's socket the launcher answers `{"pid": N}` at the fork and `{"status": S}` (a wait
status) when the job has ended. A job socket that closes without a status means the launcher died; its jobs
die with it (they have PR_SET_PDEATHSIG), so nothing outlives the service.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Mapping

from infer.worker_process import dies_with_parent, is_running, kill_group, start

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20
# How long the launcher may take to import the worker's libraries (measured: 8 s on a loaded 2-core machine).
READY_TIMEOUT_S = 180.0
# How long a fork may take to be answered before the job starts the plain way instead.
FORK_TIMEOUT_S = 10.0
BACKOFF_S = (1.0, 2.0, 5.0, 15.0, 60.0)
# A launcher that ran this long without dying starts the backoff over.
STEADY_S = 120.0


class StartKind(str, Enum):
    """How a job's process is started (SR_WORKER_START)."""

    PRELOADED = "preloaded"  # forked from the launcher that has imported the libraries
    PLAIN = "plain"  # a fresh interpreter that imports them itself

    def __str__(self) -> str:
        return self.value


START_KINDS = tuple(kind.value for kind in StartKind)


@dataclass(frozen=True)
class Request:
    """One job for the launcher: the worker's argv (python, script, arguments), as a plain start would run it."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    nice: int
    requested_at: float = field(default_factory=time.time)  # wall clock: the `fork` stage counts from here

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Request":
        data = json.loads(raw)
        if not isinstance(data.get("argv"), list) or len(data["argv"]) < 2:
            raise ValueError("argv must name the interpreter and the script")
        return cls([str(a) for a in data["argv"]], {str(k): str(v) for k, v in data["env"].items()},
                   str(data["cwd"]), int(data["nice"]), float(data["requested_at"]))


def send(sock: socket.socket, message: dict) -> None:
    sock.send(json.dumps(message).encode())


def receive(sock: socket.socket) -> dict | None:
    """The next message on a job or control socket; None at its end."""
    raw = sock.recv(MAX_MESSAGE)
    return json.loads(raw) if raw else None


class ForkedProcess:
    """A job forked by the launcher, seen as `subprocess.Popen` shows a child: pid, stdout, stderr, wait,
    returncode (negative: the signal that ended it)."""

    def __init__(self, pid: int, channel: socket.socket, stdout: IO[bytes], stderr: IO[bytes]):
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._channel = channel
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            self._channel.settimeout(timeout)
            try:
                message = receive(self._channel)
            except (socket.timeout, BlockingIOError):
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0) from None
            except OSError:
                message = None
            if message is not None and "status" in message:
                self.returncode = os.waitstatus_to_exitcode(int(message["status"]))
            else:
                # The launcher died: its jobs were SIGKILLed with it (PR_SET_PDEATHSIG); make sure of it.
                kill_group(self.pid)
                _wait_gone(self.pid)
                self.returncode = -9
            self._channel.close()
            return self.returncode


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


@dataclass
class LauncherState:
    """What /healthz and the log say about the launcher."""

    kind: str
    ready: bool = False
    pid: int | None = None
    starts: int = 0
    deaths: int = 0
    imports_s: float | None = None
    rss_mb: float | None = None
    note: str | None = None  # why jobs start the plain way now, for operators

    def as_json(self) -> dict:
        """For /healthz, which anyone may read: no process ids."""
        return {k: v for k, v in asdict(self).items() if k != "pid"}


class Launcher:
    """Starts the jobs' processes. With StartKind.PRELOADED a supervisor thread keeps the launcher process
    running (restarted with backoff when it dies or cannot start); jobs asked for while it is not ready start
    the plain way, which is said once in the log each time that begins."""

    def __init__(self, kind: StartKind, env: Mapping[str, str], cwd: Path, python: str = sys.executable):
        self.kind = kind
        self._env = dict(env)
        self._cwd = cwd
        self._python = python
        self._lock = threading.Lock()  # one request at a time on the control socket
        self._changed = threading.Condition()
        self._state = LauncherState(kind.value)
        self._control: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self.kind is StartKind.PRELOADED and self._thread is None:
            # The thread that starts the launcher lives as long as it should: the launcher dies with that
            # thread (PR_SET_PDEATHSIG), so a SIGKILLed service leaves no launcher and no job behind.
            self._thread = threading.Thread(target=self._supervise, name="sr-launcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._stop_process()
        if self._thread is not None:
            self._thread.join(10)

    def wait_ready(self, timeout: float) -> bool:
        """True once the launcher has imported the libraries and takes jobs (False for plain starts)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.kind is StartKind.PRELOADED and not self._state.ready and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._state.ready

    def state(self) -> LauncherState:
        with self._changed:
            state = LauncherState(**asdict(self._state))
        if state.pid is not None:
            state.rss_mb = _rss_mb(state.pid)
        return state

    # ---- jobs -------------------------------------------------------------------------------

    def popen(self, argv: list[str], *, cwd: Path, env: Mapping[str, str], nice: int,
              die_with_parent: bool = False) -> "subprocess.Popen | ForkedProcess":
        """The job's process: forked by the launcher when it is ready, else started the plain way."""
        if self.kind is StartKind.PRELOADED and self._state.ready:
            forked = self._fork(Request(list(argv), dict(env), str(cwd), nice))
            if forked is not None:
                return forked
        return start(argv, cwd=cwd, env=env, nice=nice, die_with_parent=die_with_parent)

    def _fork(self, request: Request) -> ForkedProcess | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            with self._lock:
                control = self._control
                if control is None:
                    raise OSError("the launcher is not running")
                socket.send_fds(control, [request.encode()], [theirs.fileno(), out_w, err_w])
            ours.settimeout(FORK_TIMEOUT_S)
            reply = receive(ours)
            if reply is None or "pid" not in reply:
                raise OSError(reply.get("error", "no answer") if reply else "it closed the job's socket")
        except OSError as err:
            for fd in (out_r, err_r):
                os.close(fd)
            ours.close()
            self._lost(f"a job could not be forked ({err})")
            return None
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
        return ForkedProcess(int(reply["pid"]), ours, os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"))

    # ---- the launcher process -----------------------------------------------------------------

    def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            began = time.monotonic()
            note = self._run_once()
            if self._closing:
                break
            failures = 0 if time.monotonic() - began > STEADY_S else failures + 1
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            with self._changed:
                self._state.note = f"{note}; jobs start the plain way until it is back (next try in {delay:g} s)"
                log.warning("the preloaded launcher %s", self._state.note)
                self._changed.wait(delay)

    def _run_once(self) -> str:
        """Starts the launcher and serves until it ends; returns what ended it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [self._python, "-m", "infer.zygote", str(theirs.fileno())], stdin=subprocess.DEVNULL,
                env=self._env, cwd=self._cwd, pass_fds=[theirs.fileno()], start_new_session=True,
                preexec_fn=dies_with_parent(os.getpid()),
            )
        except OSError as err:
            ours.close()
            theirs.close()
            return f"cannot start ({err})"
        theirs.close()
        with self._changed:
            self._proc = proc
            self._state.starts += 1
        ours.settimeout(READY_TIMEOUT_S)
        try:
            ready = receive(ours)
        except OSError:
            ready = None
        if not ready or not ready.get("ready"):
            proc.kill()
            proc.wait()
            ours.close()
            return f"did not start (exit {proc.returncode})" if ready is None else f"did not start ({ready.get('error')})"
        with self._changed:
            self._control = ours
            self._state.ready, self._state.pid, self._state.note = True, proc.pid, None
            self._state.imports_s = ready.get("imports_s")
            self._changed.notify_all()
        log.info("preloaded launcher ready (pid %d, imports took %.1f s)", proc.pid, ready.get("imports_s") or 0)
        proc.wait()
        with self._changed:
            self._state.ready, self._state.pid = False, None
            if not self._closing:
                self._state.deaths += 1
            self._changed.notify_all()
        with self._lock:
            self._control = None
            ours.close()
        return f"stopped (exit {proc.returncode})"

    def _lost(self, why: str) -> None:
        """The launcher failed a job: it is restarted, and the job starts the plain way."""
        log.warning("the preloaded launcher %s; restarting it", why)
        self._stop_process()

    def _stop_process(self) -> None:
        with self._changed:
            proc, self._state.ready = self._proc, False
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
