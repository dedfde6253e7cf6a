"""The preloaded launcher's process: imports the worker's libraries once, then forks one job process per request.

Run as `python -m infer.zygote FD` by infer/launcher.py, FD being its end of the control socket. It never
opens a GPU and never runs a tensor operation: a fork copies a process whose OpenMP pool or CUDA context is
live into a child that hangs in its first parallel region (measured: a scan child forked after one matmul
timed out at 300 s). Each child becomes what `python SCRIPT ARGS` would be: a session of its own, the job's
environment, working folder, niceness and thread counts, stdin from /dev/null, stdout and stderr to the job's
pipes, the script run as `__main__`; it is SIGKILLed if this process dies.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import io
import os
import runpy
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import NoReturn

from infer.errors import EXIT_OTHER
from infer.launcher import MAX_MESSAGE, Request, send

# The worker's libraries and modules, imported before any fork; one that fails to import is left to the job,
# which then says why as a plain start would.
PRELOAD = (
    "setproctitle", "numpy", "cv2", "psutil", "PIL.Image", "torch", "spandrel",
    "infer.pipeline", "infer.sr_infer", "infer.engines.torch", "infer.engines.checkpoint", "infer.engines.opencv",
    "infer.faces.stage", "infer.denoise",
)
# Thread counts that libraries read from the environment once, at import (here, not in the job): set again in
# each job from the job's own environment, before its first tensor operation.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ForkedStart:
    """When the service asked for this job process, and when its script began (wall clock)."""

    requested_at: float
    script_began: float


# Set once, in a forked job only, before its script runs: the worker's stage accounting reads it.
_forked: ForkedStart | None = None


def forked_start() -> ForkedStart | None:
    """How this process started, when the launcher forked it; None for a plain start."""
    return _forked


def preload() -> float:
    """Imports PRELOAD; the seconds it took."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # a CUDA check here must not open the driver
    began = time.perf_counter()
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001  (the job says it again, as a plain start would)
            missing.append(f"{name} ({type(err).__name__}: {err})")
    if missing:
        print(f"sr-launcher: not preloaded, each job imports them itself: {'; '.join(missing)}", file=sys.stderr)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised while preloading; forking would break the jobs")
    # The preloaded objects are never collected: a job's collector then leaves their pages shared instead of
    # touching (and so copying) every one of them.
    gc.collect()
    gc.freeze()
    return round(time.perf_counter() - began, 3)


def serve(control: socket.socket) -> int:
    """Forks a job for each request until the service closes the control socket."""
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, None)
    jobs: dict[int, tuple[int, socket.socket]] = {}  # pid -> (pidfd, the job's socket)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                try:
                    raw, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 3)
                except OSError:
                    raw, fds = b"", []
                if not raw:
                    return 0
                _start_job(raw, fds, control, selector, jobs)
            else:
                pid = key.data
                pidfd, channel = jobs.pop(pid)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                try:
                    send(channel, {"status": status})
                except OSError:
                    pass  # the service gave up on the job
                channel.close()


def _start_job(raw: bytes, fds: list[int], control: socket.socket, selector: selectors.BaseSelector,
               jobs: dict[int, tuple[int, socket.socket]]) -> None:
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return
    channel = socket.socket(fileno=fds[0])
    out_w, err_w = fds[1], fds[2]
    try:
        request = Request.decode(raw)
    except (ValueError, KeyError, TypeError) as err:
        _refuse(channel, f"bad request: {err}", out_w, err_w)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    # The pid is answered once the child leads its session: from then on the service can kill its whole group.
    led_r, led_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(led_r)
        # Detached, so that no socket object left in this copy of the launcher can close a reused descriptor.
        inherited = [control.detach(), channel.detach(), *(fd for fd, _ in jobs.values()),
                     *(c.detach() for _, c in jobs.values())]
        _become_job(request, out_w, err_w, parent, inherited, selector, led_w)
    os.close(led_w)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(led_r, "rb") as led:
        led.read(1)  # a byte, or the end when the child died before it
    pidfd = os.pidfd_open(pid)
    jobs[pid] = (pidfd, channel)
    selector.register(pidfd, selectors.EVENT_READ, pid)
    try:
        send(channel, {"pid": pid})
    except OSError:
        os.killpg(pid, signal.SIGKILL) if _leads_group(pid) else os.kill(pid, signal.SIGKILL)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _refuse(channel: socket.socket, why: str, *fds: int) -> None:
    for fd in fds:
        os.close(fd)
    try:
        send(channel, {"error": why})
    except OSError:
        pass
    channel.close()


def _become_job(request: Request, out_w: int, err_w: int, parent: int, inherited: list[int],
                selector: selectors.BaseSelector, led_w: int) -> NoReturn:
    """In the forked child: become the job's process and run its script; never returns."""
    global _forked
    code = EXIT_OTHER
    try:
        os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(EXIT_OTHER)
        if request.nice > 0:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, request.nice)
            except OSError:
                pass
        _show_command(request.argv)  # before the environment changes: setproctitle finds argv beside it
        os.write(led_w, b"1")
        os.close(led_w)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        selector.close()
        for fd in inherited:
            try:
                os.close(fd)
            except OSError:
                pass
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in {null, out_w, err_w} - {0, 1, 2}:
            os.close(fd)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace")
        before = dict(os.environ)
        os.environ.clear()
        os.environ.update(request.env)
        os.chdir(request.cwd)
        _set_threads(before, request.env)
        script, args = request.argv[1], request.argv[2:]
        sys.argv = [script, *args]
        _forked = ForkedStart(request.requested_at, time.time())
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as done:
            code = _exit_code(done.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001  (the job's own last resort, as an uncaught error in a plain start)
        traceback.print_exc()
        code = EXIT_OTHER
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _show_command(argv: list[str]) -> None:
    """The job's command line in place of the launcher's, for `ps` and for finding a job's process by it."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(" ".join(argv))


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _set_threads(before: dict[str, str], job_env: dict[str, str]) -> None:
    """The thread counts the job's environment asks for, as a fresh process would have read them."""
    for name in THREAD_VARIABLES:
        if before.get(name) == job_env.get(name):
            continue
        count = _count(job_env.get(name))
        if name == "OMP_NUM_THREADS" and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(count or os.cpu_count() or 1)
        elif name == "OPENCV_FOR_THREADS_NUM" and "cv2" in sys.modules:
            sys.modules["cv2"].setNumThreads(count if count else -1)


def _count(raw: str | None) -> int | None:
    try:
        value = int((raw or "").strip())
    except ValueError:
        return None
    return value if value > 0 else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops it; Ctrl-C at its terminal is the service's
    try:
        imports_s = preload()
    except Exception as err:  # noqa: BLE001
        send(control, {"ready": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    send(control, {"ready": True, "pid": os.getpid(), "imports_s": imports_s})
    return serve(control)


if __name__ == "__main__":
    # As `infer.zygote`, not `__main__`: the jobs' worker reads forked_start() from that module.
    from infer import zygote

    sys.exit(zygote.main())
