"""A cluster started by hand, as docs/scaling.md tells an operator: `ray start` commands on separate loopback
addresses of this machine, each node a set of processes found (and ended) by its temporary folder."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from infer import REPO_ROOT
from tests.web.client import HttpClient
from tests.web.server import ServiceProcess, start_service_process

# Ray's own test switch (tests/ray/conftest.py sets it): with it, `ray start --address` refuses to join.
_NOT_FOR_OPERATORS = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",)


def operator_env(**more: str) -> dict[str, str]:
    """This process's environment as an operator's shell has it: no test switches, no SR_* settings."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_OPERATORS and not k.startswith("SR_")}
    env.update(more)
    return env


@dataclass
class HandRunCluster:
    """`ray` commands run with one token and one temporary folder (short: Ray's socket paths must fit)."""

    ray: Path
    env: dict[str, str]
    temp_dir: Path
    log: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, folder: Path) -> "HandRunCluster":
        token = folder / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = operator_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        temp_dir = Path(tempfile.mkdtemp(prefix="sr-ray-", dir="/tmp"))
        return cls(Path(sys.executable).with_name("ray"), env, temp_dir)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.ray), *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.temp_dir)
        self.log.append(f"$ ray {' '.join(args)}\n{done.stdout}{done.stderr}")
        return done

    def start_head(self, ip: str, port: int) -> subprocess.CompletedProcess:
        return self.run("start", "--head", f"--node-ip-address={ip}", f"--port={port}", "--num-cpus=0", "--num-gpus=0",
                        "--dashboard-host=127.0.0.1", f"--temp-dir={self.temp_dir}", "--disable-usage-stats")

    def join(self, head: str, ip: str, gpus: int, cpus: int, models_dir: Path) -> subprocess.CompletedProcess:
        # The project is installed on every node: here this checkout, on the raylet's path.
        env = {"SR_MODELS_DIR": str(models_dir), "PYTHONPATH": str(REPO_ROOT)}
        return self.run("start", f"--address={head}", f"--node-ip-address={ip}", f"--num-gpus={gpus}",
                        f"--num-cpus={cpus}", "--disable-usage-stats", env=env, timeout=90)

    def status(self, head: str) -> subprocess.CompletedProcess:
        return self.run("status", f"--address={head}", timeout=60)

    def stop_node(self, ip: str) -> None:
        """Ends one node of this cluster: its raylet and what it started (a machine switched off)."""
        self._end(self.processes(also=f"--node_ip_address={ip}"))

    def processes(self, also: str = "") -> list[psutil.Process]:
        found: set[psutil.Process] = set()
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["cmdline"]):
            args = proc.info["cmdline"] or ()
            if any(marker in arg for arg in args) and (not also or also in args):
                found.add(proc)
                try:
                    found.update(proc.children(recursive=True))
                except psutil.Error:
                    pass
        return list(found)

    def stop(self) -> None:
        """Ends this cluster's processes only (never `ray stop`, which ends every Ray on the machine)."""
        self._end(self.processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _end(procs: list[psutil.Process]) -> None:
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def hand_run(tmp_path: Path) -> Iterator[HandRunCluster]:
    """A HandRunCluster whose processes are ended after the test."""
    cluster = HandRunCluster.create(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class FrontEnd:
    """`python -m web` of this checkout, started as an operator would, with the cluster's token."""

    service: ServiceProcess
    client: HttpClient
    data_dir: Path

    @classmethod
    def start(cls, folder: Path, env: dict[str, str], timeout: float = 60) -> "FrontEnd":
        folder.mkdir(parents=True, exist_ok=True)
        service = start_service_process(folder / "sr-web.log", {"SR_DATA_DIR": str(folder / "data"),
                                                               "PYTHONPATH": str(REPO_ROOT)},
                                        timeout=timeout, base_env=env)
        return cls(service, service.client(), folder / "data")

    def stop(self) -> None:
        self.service.terminate(timeout=30)
