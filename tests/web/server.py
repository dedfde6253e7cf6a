"""Real servers for the web tests: the app in a werkzeug thread, or `python -m web` as a child process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import psutil
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from infer import REPO_ROOT
from tests.web.client import HttpClient
from web import create_app, shutdown
from web.services import EXTENSION_KEY, Services


@dataclass
class LiveServer:
    """create_app() served on 127.0.0.1 with a free port, in this process."""

    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def services(self) -> Services:
        return self.app.extensions[EXTENSION_KEY]

    def client(self, token: str | None = None) -> HttpClient:
        return HttpClient(self.url, token=token)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutdown(self.app)


def start_live_server(data_dir: Path, model_path: Path, **settings: Any) -> LiveServer:
    config = {"data_dir": data_dir, "model_path": model_path, "auth_token": None, **settings}
    app = create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    thread.start()
    return LiveServer(app, server, thread, data_dir)


@dataclass
class ServiceProcess:
    """`python -m web --port 0` as a child process, as a user would run it."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None) -> HttpClient:
        return HttpClient(self.url, token=token)

    def kill(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would end it."""
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_service_process(
    log_path: Path, env: dict[str, str], timeout: float = 30.0, cwd: Path = REPO_ROOT,
    base_env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """`env` over `base_env` (default: this process's environment less its SR_* settings)."""
    full_env = dict(base_env) if base_env is not None else {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    full_env.update(env)
    # The log is appended to across restarts; only what this start writes counts.
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web", "--host", "127.0.0.1", "--port", "0"],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + timeout
    pattern = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)/")
    while time.monotonic() < deadline:
        text = log_path.read_bytes()[offset:]
        found = pattern.findall(text)
        if found:
            return ServiceProcess(proc, int(found[-1]), log_path, env)
        if proc.poll() is not None:
            raise AssertionError(f"the service exited with {proc.returncode}:\n{text.decode(errors='replace')}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the service did not start within {timeout} s:\n{log_path.read_text(errors='replace')}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(log_path: Path, env: dict[str, str], threads: int = 4, timeout: float = 60.0) -> ServiceProcess:
    """The service under gunicorn with `deploy/gunicorn.conf.py` and `threads` request threads, on a free
    loopback port; returns once /healthz answers (stop it with `terminate()`)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    full_env.update(env, SR_BIND=f"127.0.0.1:{port}", SR_WEB_THREADS=str(threads))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"], cwd=REPO_ROOT,
                                env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    service = ServiceProcess(proc, port, log_path, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if service.client().get("/healthz", timeout=2).status in (200, 503):
                return service
        except OSError:
            pass
        time.sleep(0.2)
    service.terminate()
    raise AssertionError(f"gunicorn did not answer within {timeout} s:\n{log_path.read_text(errors='replace')}")


def worker_processes(marker: str | Path) -> list[psutil.Process]:
    """Live worker processes (sr_infer.py) whose command line mentions `marker` (a data folder or job id)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if any(arg.endswith("sr_infer.py") for arg in cmdline) and any(str(marker) in arg for arg in cmdline):
            found.append(proc)
    return found
