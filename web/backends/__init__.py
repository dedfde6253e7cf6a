"""How a job is executed: the backend protocol the runner drives, and the registry of backends by SR_BACKEND name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from infer.contract import Colour, Denoise, Event, Repair, WorkerCommand
from web.config import ConfigError
from web.jobs.outcomes import Ending

if TYPE_CHECKING:
    from web.config import Config
    from web.jobs.store import Job

# SR_BACKEND name -> "module:class"; imported only when chosen, so Ray is needed only by those who use it.
BACKENDS: dict[str, str] = {
    "local": "web.backends.local:LocalBackend",
    "ray": "web.backends.ray.backend:RayBackend",
}
# SR_BACKEND name -> "module:function" that refuses the backend's unusable settings (ConfigError) before
# the backend is imported; these modules need nothing beyond the front end's own dependencies.
SETTINGS_CHECKS: dict[str, str] = {
    "ray": "web.backends.ray.address:check_settings",
}

# Takes each of the worker's events (a backend that receives them as JSON objects may pass those on).
EventHandler = Callable[[Event | dict[str, Any]], None]
# A remote backend's own events through the same handler: the job's task waits for a node, or has one.
WAITING_FOR_NODE_EVENT = "sr_waiting_for_node"
ON_NODE_EVENT = "sr_on_node"


class BackendUnavailable(Exception):
    """The chosen backend cannot be used (e.g. Ray is not installed); the message says what to do."""


@dataclass(frozen=True)
class JobSpec:
    """What a backend needs to run one job: where the photo is, where the result goes, where its log goes."""

    job_id: str
    input_path: Path
    output_path: Path
    log_path: Path
    model_path: Path  # the chosen model; a remote backend passes only its file name to the node
    denoise: str = "off"
    faces: str = "off"
    face_fidelity: float | None = None
    face_model: Path | None = None  # the GFPGAN file; a remote backend leaves it to the node's models folder
    outscale: int | None = None  # the written scale, where it is below the model's
    denoise_strength: float | None = None
    repair_mask: Path | None = None  # the job's repair mask; a remote backend carries its bytes to the node
    repair: str = "off"
    colour: str = "off"
    find_damage: bool = False  # instead of enlarging: the damage found, as a mask PNG at `output_path`

    def worker_command(self, max_pixels: int, script: Path) -> WorkerCommand:
        """The worker's command for this job on this machine."""
        return WorkerCommand(self.input_path, self.output_path, self.model_path, max_pixels,
                             Denoise(self.denoise), script, faces=self.faces, face_fidelity=self.face_fidelity,
                             face_model=self.face_model, outscale=self.outscale,
                             denoise_strength=self.denoise_strength, repair_mask=self.repair_mask,
                             repair=Repair(self.repair), colour=Colour(self.colour),
                             find_damage=self.find_damage)


@dataclass(frozen=True)
class Health:
    """Whether the backend can take jobs now; `reason` is for operators (logs and /healthz)."""

    ok: bool
    reason: str | None = None
    details: dict[str, Any] | None = None  # the backend's own figures for /healthz (the launcher's state)


class Execution(Protocol):
    """One job being executed. `kill` may be called from any thread, at any time, more than once."""

    @property
    def local_pid(self) -> int | None:
        """The worker's pid when it runs on this machine (kept in the job row), else None."""

    def wait(self, timeout: float | None) -> bool:
        """True once the worker has ended and every event has been delivered; False on timeout."""

    def kill(self) -> None: ...

    def finish(self) -> Ending:
        """How the worker ended (exit code, signal or lost), for the outcome rules; valid after wait()
        returned True. The runner adds what it knows itself (timeout, cancel, stop, the result's presence)."""


class Backend(Protocol):
    """Runs workers: one fresh worker process per job, the worker's CLI and JSON events as the contract."""

    name: str
    # False where the model lives on other machines (/healthz then does not look for it here).
    uses_local_model: bool

    def start(self) -> None: ...

    def health(self) -> Health: ...

    def launch(self, spec: JobSpec, on_event: EventHandler) -> Execution:
        """Starts the job; `on_event` receives each of the worker's JSON events as it happens."""

    def recover(self, jobs: "list[Job]") -> None:
        """Ends whatever a previous service process left running for these jobs (they are failed after)."""

    def close(self) -> None: ...


def _load(target: str) -> Any:
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def check_backend_settings(config: "Config") -> None:
    """ConfigError unless SR_BACKEND names a backend and that backend's settings can be used."""
    if config.backend not in BACKENDS:
        raise ConfigError(f"SR_BACKEND={config.backend!r} is not one of: {', '.join(BACKENDS)}")
    check = SETTINGS_CHECKS.get(config.backend)
    if check is not None:
        _load(check)(config)


def create_backend(config: "Config") -> Backend:
    """The backend SR_BACKEND names; ConfigError for unusable settings, BackendUnavailable when its extra
    is not installed."""
    check_backend_settings(config)
    return _load(BACKENDS[config.backend])(config)
