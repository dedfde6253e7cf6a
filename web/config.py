"""Service settings read from SR_* environment variables, with the defaults a single-user install needs."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from infer import REPO_ROOT
from infer.models import default_model_path, models_dir

DEFAULT_MODEL = REPO_ROOT / "models" / "EDSR_x3.pb"
WORKER_SCRIPT = REPO_ROOT / "infer" / "sr_infer.py"


# Where a Ray cluster may be reached without SR_RAY_ALLOW_PUBLIC_ADDRESS: loopback, RFC 1918, shared
# address space (RFC 6598, some VPCs and VPNs), link-local, IPv6 unique-local. Not Python's `is_private`,
# which also counts documentation ranges that are not private networks.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
              "::1/128", "fc00::/7", "fe80::/10")
)


def is_private_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in PRIVATE_NETWORKS if network.version == address.version)


def literal_host(address: str) -> str | None:
    """The host of SR_RAY_ADDRESS when it is written as an IP address (None for auto or a name)."""
    if address.strip() == "auto":
        return None
    rest = address.split("://", 1)[-1]
    host = rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host


def public_refusal(address: str, public: list[str]) -> str:
    return (
        f"SR_RAY_ADDRESS={address!r} is a public address ({', '.join(public)}); a Ray cluster has no "
        "authentication, keep it on a private network (or set SR_RAY_ALLOW_PUBLIC_ADDRESS=1 on purpose)"
    )


class ConfigError(ValueError):
    """An SR_* variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Config:
    """Everything the service is told from outside; one instance per app."""

    data_dir: Path = REPO_ROOT
    model_path: Path = DEFAULT_MODEL
    # The models people may choose from (SR_MODELS_DIR); model_path is the default and always offered.
    models_dir: Path = REPO_ROOT / "models"
    max_upload_mb: float = 25.0
    max_pixels: int = 16_000_000
    # The largest result (input pixels x scale²): 16 megapixels at x3 by default.
    max_output_pixels: int = 144_000_000
    concurrency: int = 1
    job_timeout_s: float = 1800.0
    result_ttl_h: float = 24.0
    auth_token: str | None = None
    # How long a sign-in on the page lasts (the API's bearer token is the token itself).
    session_ttl_h: float = 168.0
    queue_size: int = 100
    max_event_streams: int = 16
    # The part of the queue and of the event streams one owner may hold.
    owner_share: float = 0.5
    # Synchronous POST /upload requests waiting at once (each holds a server thread), and for how long.
    max_sync_waits: int = 8
    sync_wait_s: float = 300.0
    keep_uploads: bool = False
    worker_nice: int = 10
    behind_proxy: bool = False
    # X-Forwarded-Prefix is believed only when the proxy in front sets (or clears) it itself.
    trust_forwarded_prefix: bool = False
    # How jobs run: "local" (a subprocess here) or "ray" (a task on a Ray cluster); see docs/scaling.md.
    backend: str = "local"
    # Result cache: "owner" (one browser's own repeats), "shared" (everyone's), "off".
    result_cache: str = "owner"
    ray_address: str = "auto"
    ray_gpus_per_job: float = 1.0
    ray_cpus_per_job: float = 1.0
    # Ray has no authentication: an address outside loopback/private ranges needs this set on purpose.
    ray_allow_public_address: bool = False
    worker_script: Path = field(default=WORKER_SCRIPT)

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def state_dir(self) -> Path:
        """The job database and per-job worker logs."""
        return self.data_dir / "state"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "jobs.db"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with some fields replaced (used by tests and `create_app(test_config)`)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values = dict(overrides)
        for key in ("data_dir", "model_path", "models_dir", "worker_script"):
            if key in values and values[key] is not None:
                values[key] = Path(values[key]).resolve()
        new = replace(self, **values)
        new.validate()
        return new

    def validate(self) -> None:
        if self.max_output_pixels <= 0:
            raise ConfigError("SR_MAX_OUTPUT_PIXELS must be positive")
        if not 0 < self.owner_share <= 1:
            raise ConfigError("SR_OWNER_SHARE must be above 0 and at most 1 (a fraction, e.g. 0.5)")
        if self.concurrency < 1:
            raise ConfigError("SR_CONCURRENCY must be at least 1")
        if self.max_upload_mb <= 0:
            raise ConfigError("SR_MAX_UPLOAD_MB must be positive")
        if self.max_pixels <= 0:
            raise ConfigError("SR_MAX_PIXELS must be positive")
        if self.job_timeout_s <= 0:
            raise ConfigError("SR_JOB_TIMEOUT_S must be positive")
        if self.session_ttl_h <= 0:
            raise ConfigError("SR_SESSION_TTL_H must be positive")
        if self.result_ttl_h <= 0:
            raise ConfigError("SR_RESULT_TTL_H must be positive")
        if self.queue_size < 1:
            raise ConfigError("SR_QUEUE_SIZE must be at least 1")
        if self.max_event_streams < 0:
            raise ConfigError("SR_MAX_EVENT_STREAMS must be 0 or more")
        if self.trust_forwarded_prefix and not self.behind_proxy:
            raise ConfigError("SR_TRUST_FORWARDED_PREFIX=1 needs SR_BEHIND_PROXY=1 (a proxy that sets the header)")
        if self.max_sync_waits < 0:
            raise ConfigError("SR_MAX_SYNC_WAITS must be 0 or more")
        if self.sync_wait_s <= 0:
            raise ConfigError("SR_SYNC_WAIT_S must be positive")
        if self.result_cache not in ("owner", "shared", "off"):
            raise ConfigError(f"SR_RESULT_CACHE={self.result_cache!r} is not one of: owner, shared, off")
        from web.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"SR_BACKEND={self.backend!r} is not one of: {', '.join(BACKENDS)}")
        if self.ray_gpus_per_job < 0:
            raise ConfigError("SR_RAY_GPUS_PER_JOB must be 0 or more")
        if self.ray_cpus_per_job <= 0:
            raise ConfigError("SR_RAY_CPUS_PER_JOB must be positive")
        if not self.ray_address.strip():
            raise ConfigError("SR_RAY_ADDRESS must not be empty (use auto or host:port, e.g. head:6379)")
        if self.backend == "ray" and self.ray_address.strip().startswith("ray://"):
            raise ConfigError(
                f"SR_RAY_ADDRESS={self.ray_address!r}: Ray Client (ray://) cannot stream a job's events; connect "
                "to the cluster itself: auto on a machine of the cluster, or the head's GCS address (head:6379)"
            )
        # An address written as a number is checked here, before anything is sent to it; a host name is
        # resolved and checked by the Ray backend before it connects.
        host = literal_host(self.ray_address)
        if (
            self.backend == "ray"
            and host is not None
            and not self.ray_allow_public_address
            and not is_private_address(ipaddress.ip_address(host))
        ):
            raise ConfigError(public_refusal(self.ray_address, [host]))


def _number(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def config_from_env(env: Mapping[str, str] | None = None) -> Config:
    """Reads SR_* variables; relative paths are taken from the current directory."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("SR_DATA_DIR") or REPO_ROOT).resolve()
    model_path = default_model_path(env).resolve()
    config = Config(
        data_dir=data_dir,
        model_path=model_path,
        models_dir=models_dir(env=env).resolve(),
        max_upload_mb=_number(env, "SR_MAX_UPLOAD_MB", float, Config.max_upload_mb),
        max_pixels=_number(env, "SR_MAX_PIXELS", int, Config.max_pixels),
        max_output_pixels=_number(env, "SR_MAX_OUTPUT_PIXELS", int, Config.max_output_pixels),
        concurrency=_number(env, "SR_CONCURRENCY", int, Config.concurrency),
        job_timeout_s=_number(env, "SR_JOB_TIMEOUT_S", float, Config.job_timeout_s),
        result_ttl_h=_number(env, "SR_RESULT_TTL_H", float, Config.result_ttl_h),
        auth_token=env.get("SR_AUTH_TOKEN") or None,
        session_ttl_h=_number(env, "SR_SESSION_TTL_H", float, Config.session_ttl_h),
        queue_size=_number(env, "SR_QUEUE_SIZE", int, Config.queue_size),
        max_event_streams=_number(env, "SR_MAX_EVENT_STREAMS", int, Config.max_event_streams),
        owner_share=_number(env, "SR_OWNER_SHARE", float, Config.owner_share),
        max_sync_waits=_number(env, "SR_MAX_SYNC_WAITS", int, Config.max_sync_waits),
        sync_wait_s=_number(env, "SR_SYNC_WAIT_S", float, Config.sync_wait_s),
        keep_uploads=_flag(env, "SR_KEEP_UPLOADS"),
        result_cache=env.get("SR_RESULT_CACHE", Config.result_cache).strip().lower() or Config.result_cache,
        worker_nice=_number(env, "SR_WORKER_NICE", int, Config.worker_nice),
        behind_proxy=_flag(env, "SR_BEHIND_PROXY"),
        trust_forwarded_prefix=_flag(env, "SR_TRUST_FORWARDED_PREFIX"),
        backend=(env.get("SR_BACKEND") or Config.backend).strip().lower(),
        ray_address=(env.get("SR_RAY_ADDRESS") or Config.ray_address).strip(),
        ray_gpus_per_job=_number(env, "SR_RAY_GPUS_PER_JOB", float, Config.ray_gpus_per_job),
        ray_cpus_per_job=_number(env, "SR_RAY_CPUS_PER_JOB", float, Config.ray_cpus_per_job),
        ray_allow_public_address=_flag(env, "SR_RAY_ALLOW_PUBLIC_ADDRESS"),
    )
    config.validate()
    return config
