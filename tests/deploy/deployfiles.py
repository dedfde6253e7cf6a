"""The deploy files as data: cluster.yaml, the KubeRay manifests, systemd units, and the SR_* names they use."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infer import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
CLUSTER_YAML = DEPLOY / "ray" / "cluster.yaml"
RAYCLUSTER_YAML = DEPLOY / "ray" / "raycluster.yaml"
SYSTEMD = DEPLOY / "systemd"
BUILD_SCRIPT = DEPLOY / "container" / "build.sh"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
CRD_SCHEMA = Path(__file__).with_name("kuberay-raycluster-v1.schema.json")

_SR_NAME = re.compile(r"\bSR_[A-Z0-9_]+\b")


def cluster_config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def manifests() -> dict[str, dict[str, Any]]:
    """deploy/ray/raycluster.yaml's documents by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(RAYCLUSTER_YAML.read_text()) if doc}


def containers(raycluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every container of the head and worker pods, by name."""
    spec = raycluster["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return {c["name"]: c for g in groups for c in g["template"]["spec"]["containers"]}


@dataclass(frozen=True)
class Unit:
    """A systemd unit file: each key's values in order (keys may repeat, e.g. Environment)."""

    path: Path
    entries: dict[str, list[str]]

    @classmethod
    def read(cls, path: Path) -> "Unit":
        entries: dict[str, list[str]] = {}
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            key, value = line.split("=", 1)
            entries.setdefault(key.strip(), []).append(value.strip())
        return cls(path, entries)

    def one(self, key: str) -> str | None:
        values = self.entries.get(key)
        return values[-1] if values else None

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.entries.get("Environment", []):
            for pair in value.split():
                name, _, val = pair.partition("=")
                env[name] = val
        return env


def units() -> dict[str, Unit]:
    return {path.name: Unit.read(path) for path in sorted(SYSTEMD.glob("*.service"))}


def sr_names(text: str) -> set[str]:
    return set(_SR_NAME.findall(text))


def deploy_texts() -> dict[Path, str]:
    """Every deploy file that sets or names settings."""
    paths = [CLUSTER_YAML, RAYCLUSTER_YAML, DOCKERFILE, BUILD_SCRIPT, *SYSTEMD.glob("*.service")]
    return {path: path.read_text() for path in paths}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
