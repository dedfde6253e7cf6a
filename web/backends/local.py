"""The local backend: one worker process per job on this machine, in its own process group, niced; forked from the
preloaded launcher (infer/launcher.py) unless SR_WORKER_START=plain."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO

import psutil

from infer import REPO_ROOT
from infer.contract import parse_event
from infer.launcher import ForkedProcess, Launcher, StartKind
from infer.memory_budget import CAP_VARIABLE
from infer.worker_process import keep_bounded, kill_group, worker_environment
from web.backends import EventHandler, Health, JobSpec
from web.config import Config
from web.jobs.store import Job
from web.jobs.outcomes import Ending, ending_from_returncode

log = logging.getLogger(__name__)


class LocalExecution:
    """A worker process and the threads that read its stdout (events) and stderr (the job's log)."""

    def __init__(self, proc: subprocess.Popen | ForkedProcess, on_event: EventHandler, log_path: Path):
        self._proc = proc
        self._reader = threading.Thread(target=_read_events, args=(proc.stdout, on_event), daemon=True)
        self._logger = threading.Thread(target=copy_bounded, args=(proc.stderr, log_path), daemon=True)
        self._reader.start()
        self._logger.start()

    @property
    def local_pid(self) -> int | None:
        return self._proc.pid

    def wait(self, timeout: float | None) -> bool:
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        # Anything the worker started in its group goes with it.
        kill_group(self._proc.pid)
        self._reader.join(5)
        self._logger.join(5)
        return True

    def kill(self) -> None:
        kill_group(self._proc.pid)

    def finish(self) -> Ending:
        return ending_from_returncode(self._proc.returncode)


class LocalBackend:
    """`python infer/sr_infer.py …` on this machine, results written in place."""

    name = "local"
    uses_local_model = True

    def __init__(self, config: Config):
        self.config = config
        self.launcher = Launcher(StartKind(config.worker_start), self.environment(), REPO_ROOT)

    def start(self) -> None:
        self.launcher.start()

    def health(self) -> Health:
        # Jobs start the plain way while the launcher is down: slower, never refused; the state is for /healthz.
        return Health(ok=True, details={"launcher": self.launcher.state().as_json()})

    def close(self) -> None:
        self.launcher.close()

    def command(self, spec: JobSpec) -> list[str]:
        return spec.worker_command(self.config.max_pixels, self.config.worker_script).argv()

    def environment(self) -> dict[str, str]:
        extra = {"SR_MODEL_PATH": str(self.config.model_path)}
        if self.config.worker_memory_mb:
            extra[CAP_VARIABLE] = str(self.config.worker_memory_mb)
        return worker_environment(extra)

    def launch(self, spec: JobSpec, on_event: EventHandler) -> LocalExecution:
        proc = self.launcher.popen(self.command(spec), cwd=REPO_ROOT, env=self.environment(),
                                   nice=self.config.worker_nice)
        return LocalExecution(proc, on_event, spec.log_path)

    def recover(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._kill_orphan(job)

    def _kill_orphan(self, job: Job) -> None:
        if not job.worker_pid:
            return
        try:
            proc = psutil.Process(job.worker_pid)
            # Only a worker of this very job: the pid may have been reused since.
            if not any(job.output_file in arg for arg in proc.cmdline()):
                return
            os.killpg(job.worker_pid, signal.SIGKILL)
            proc.wait(5)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def _read_events(stream: IO[bytes], on_event: EventHandler) -> None:
    for raw in stream:
        on_event(parse_event(raw))
    stream.close()


def copy_bounded(stream: IO[bytes], path: Path) -> None:
    """Copies the worker's stderr to its log file within bounds; when the log cannot be written (a full disk)
    the rest is drained, so that the worker never blocks."""
    try:
        with open(path, "wb") as out:
            keep_bounded(stream, lambda line: (out.write(line), out.flush()))
    except OSError as err:
        log.warning("the worker's log %s cannot be written (%s); the rest of its stderr is dropped", path.name, err)
        if not stream.closed:
            for _ in stream:
                pass
            stream.close()
