"""Service settings: one table of SR_* variables (type, default, check, meaning) that reading, validation and the README's table come from."""

from __future__ import annotations

import os
import re
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, get_args, get_type_hints

from infer import REPO_ROOT, data_home
from infer.catalog import parse_ranks
from infer.licences import TERMS, UNKNOWN, parse_allowed
from infer.launcher import START_KINDS
from infer.models import default_model_path, models_dir

DEFAULT_MODEL = data_home() / "models" / "EDSR_x3.pb"
WORKER_SCRIPT = REPO_ROOT / "infer" / "sr_infer.py"
README = REPO_ROOT / "README.md"
TABLE_HEADER = "| variable | default | meaning |"
_TRUE = {"1", "true", "yes", "on"}
# A shorter access token is guessed too easily: the service refuses it unless SR_ALLOW_SHORT_TOKEN=1.
MIN_TOKEN_LENGTH = 16


class ConfigError(ValueError):
    """An SR_* variable holds a value the service cannot use."""


# A repair mask is mostly black and compresses well: 200 hand-painted strokes over 16 megapixels, soft-edged, make a
# 1.2 MB PNG. It is a file of its own beside the photo, so the request may be this much larger.
MAX_MASK_MB = 8.0


@dataclass(frozen=True)
class Rule:
    """A rule a setting's value must follow, and what to say when it does not."""

    test: Callable[[Any], bool]
    problem: str

    def message(self, env: str, value: Any) -> str | None:
        return None if self.test(value) else f"{env}={value!r} {self.problem}"


def _parses(parse: Callable[[str | None], object]) -> Callable[[str | None], bool]:
    """A Rule's test for a setting read by `parse`, which raises ValueError on a bad one."""
    def test(text: str | None) -> bool:
        try:
            parse(text)
        except ValueError:
            return False
        return True
    return test


POSITIVE = Rule(lambda v: v > 0, "must be positive")
AT_LEAST_ONE = Rule(lambda v: v >= 1, "must be at least 1")
NOT_NEGATIVE = Rule(lambda v: v >= 0, "must be 0 or more")
UNSET_OR_NOT_NEGATIVE = Rule(lambda v: v is None or v >= 0, "must be 0 or more")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"is not one of: {', '.join(choices)}")


@dataclass(frozen=True)
class Setting:
    """One row of the table: a field of Config, or (`name` None) one that gunicorn's config file reads."""

    env: str
    kind: type  # str, int, float, bool or Path
    default: Any
    meaning: str
    check: Rule | None = None
    name: str | None = None  # the Config field
    shown_default: str | None = None  # for the README, where the value itself would mislead (a path here)
    read: Callable[[Mapping[str, str]], Any] | None = None  # where the worker's own code reads the variable
    lower: bool = False  # a word: case does not matter
    secret: bool = False  # taken exactly as given, never shown

    def value(self, env: Mapping[str, str]) -> Any:
        """The value from the environment: unset or blank gives the default."""
        if self.read is not None:
            return self.read(env)
        raw = env.get(self.env, "")
        if self.secret:
            return raw or self.default
        raw = raw.strip()
        if not raw:
            return self.default
        if self.kind is bool:
            return raw.lower() in _TRUE
        if self.kind is Path:
            return Path(raw).resolve()
        if self.kind in (int, float):
            try:
                return self.kind(raw)
            except ValueError:
                raise ConfigError(f"{self.env}={raw!r} is not a valid {self.kind.__name__}") from None
        return raw.lower() if self.lower else raw

    def validate(self, value: Any) -> None:
        problem = self.check.message(self.env, value) if self.check else None
        if problem:
            raise ConfigError(problem)

    def markdown_row(self) -> str:
        return f"| `{self.env}` | {self.shown_default or _shown(self.default)} | {self.meaning} |"


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, str):
        return f"`{default}`"
    return str(default)


def setting(env: str, default: Any, meaning: str, check: Rule | None = None, **more: Any) -> Any:
    """A Config field that is read from `env`; the row's type is the field's annotation."""
    return field(default=default, metadata={"setting": dict(env=env, meaning=meaning, check=check, **more)})


@dataclass(frozen=True)
class Config:
    """Everything the service is told from outside; one instance per app. Each field below is one row of
    the settings table (README, "Configuration")."""

    data_dir: Path = setting(
        "SR_DATA_DIR", data_home(),
        "holds `uploads/`, `results/` and `state/` (the job database `state/jobs.db` and one worker log per job "
        "in `state/logs/`)",
        shown_default="the repository (installed with `pip install .`: the current folder)",
        read=lambda env: Path(env.get("SR_DATA_DIR", "").strip() or data_home()).resolve(),
    )
    model_path: Path = setting(
        "SR_MODEL_PATH", DEFAULT_MODEL,
        "the default model (a job that names none gets it), always offered; its name gives the scale (`_x3`); "
        "missing, the best installed model at its scale and kind stands in, and `/healthz` says how to fetch it",
        shown_default="`models/EDSR_x3.pb`", read=lambda env: default_model_path(env).resolve(),
    )
    models_dir: Path = setting(
        "SR_MODELS_DIR", data_home() / "models",
        "folder `sr-models` fetches into, the models people may choose from (`GET /api/options`), and where "
        "the default `EDSR_x3.pb` is looked for when `SR_MODEL_PATH` is unset",
        shown_default="`models/` (in the repository; installed with `pip install .`: in the current folder)",
        read=lambda env: models_dir(env=env).resolve(),
    )
    model_ranks: str | None = setting(
        "SR_MODEL_RANKS", None,
        "ranks within a kind of result, `<model id>=<whole number>,…`: the highest is picked first; catalog models "
        "rank 1 to 44 (README, Models), other checkpoints 0 unless ranked here",
        Rule(_parses(parse_ranks), "is not a list of <model id>=<whole number>"),
    )
    allowed_licences: str | None = setting(
        "SR_ALLOWED_LICENCES", None,
        "only models under these licences are offered, as SPDX identifiers (`Apache-2.0,MIT,BSD-3-Clause,CC-BY-4.0`; "
        "`unknown` for custom checkpoints, whose licence nobody has said); unset: every installed model",
        Rule(_parses(parse_allowed), f"is not a list of licence identifiers ({', '.join(TERMS)}, {UNKNOWN})"),
    )
    max_upload_mb: float = setting(
        "SR_MAX_UPLOAD_MB", 25.0, "largest upload; bigger ones get 413 while they stream in", POSITIVE,
    )
    max_pixels: int = setting(
        "SR_MAX_PIXELS", 16_000_000,
        "largest photo (width × height), checked from the file header (422) and again by the worker, which gets "
        "it as `--max-pixels` (also on Ray nodes, whatever their own `SR_MAX_PIXELS`)", POSITIVE,
    )
    max_output_pixels: int = setting(
        "SR_MAX_OUTPUT_PIXELS", 144_000_000,
        "largest result (width × height × scale², 16 megapixels at x3), checked from the file header before the job "
        "is queued (422 `too_many_output_pixels`, naming the largest scale the photo allows)", POSITIVE,
    )
    # 500 MB: the largest PNG result a default setup makes plus one upload. Upscaled photos measured
    # 1.0-1.3 bytes a pixel as PNG (FSRCNN x3 of astronaut, coffee, chelsea), so a 16-megapixel photo at
    # x4 is about 330 MB, and an upload is at most 25 MB; the rest is room for the job database and logs.
    min_free_mb: float = setting(
        "SR_MIN_FREE_MB", 500.0,
        "free space the data folder's filesystem must keep: below it `/healthz` answers 503 and uploads get 507 "
        "before anything is written; 0 turns the check off (see \"A full disk\" below)", NOT_NEGATIVE,
    )
    concurrency: int = setting("SR_CONCURRENCY", 1, "worker processes alive at once", AT_LEAST_ONE)
    queue_size: int = setting(
        "SR_QUEUE_SIZE", 100, "jobs waiting at most; beyond that uploads get 503 with `Retry-After`", AT_LEAST_ONE,
    )
    web_threads: int = setting(
        "SR_WEB_THREADS", 32,
        "threads serving requests: gunicorn's (`deploy/gunicorn.conf.py`, in its one process); the bounds on open "
        "`/events` streams and waiting `POST /upload` requests follow it", AT_LEAST_ONE,
    )
    max_event_streams: int | None = setting(
        "SR_MAX_EVENT_STREAMS", None,
        "`/events` streams open at once (each holds a server thread); beyond that 503, and the page polls instead",
        UNSET_OR_NOT_NEGATIVE,
        shown_default="a quarter of `SR_WEB_THREADS` (8)",
    )
    owner_share: float = setting(
        "SR_OWNER_SHARE", 0.5,
        "the part of the queue and of the `/events` streams one owner (browser), and one client address, may hold, "
        "at least one place each; beyond it 429 `queue_share_full` / 503 `too_many_streams`. Uploads without an "
        "owner cookie count as one owner",
        Rule(lambda v: 0 < v <= 1, "must be above 0 and at most 1 (a fraction, e.g. 0.5)"),
    )
    max_sync_waits: int | None = setting(
        "SR_MAX_SYNC_WAITS", None,
        "`POST /upload` requests waiting for their job at once (each holds a server thread); beyond that 503 "
        "`too_many_waits` with `Retry-After`; 0 turns synchronous uploads off. With the streams they must leave "
        "a thread free, else the service does not start", UNSET_OR_NOT_NEGATIVE,
        shown_default="a quarter of `SR_WEB_THREADS` (8)",
    )
    sync_wait_s: float = setting(
        "SR_SYNC_WAIT_S", 300.0,
        "the longest a `POST /upload` waits; then 202 with the job and its `Location`, as `POST /api/jobs` answers",
        POSITIVE,
    )
    job_timeout_s: float = setting(
        "SR_JOB_TIMEOUT_S", 1800.0,
        "a worker running longer is killed with its whole process group and the job fails", POSITIVE,
    )
    result_ttl_h: float = setting(
        "SR_RESULT_TTL_H", 24.0,
        "finished jobs, their files and stray files older than this are removed by the service; the `sr_owner` "
        "cookie lives at least as long (30 days at least)", POSITIVE,
    )
    auth_token: str | None = setting(
        "SR_AUTH_TOKEN", None,
        "when set, every route but `/healthz` needs it: `Authorization: Bearer <token>` for the API, a sign-in "
        "form (HttpOnly, SameSite=Strict cookie) for the page; wrong tokens, however sent, are logged and slowed "
        "per address. A token under 16 characters stops the service at start (see `SR_ALLOW_SHORT_TOKEN`)",
        secret=True,
    )
    allow_short_token: bool = setting(
        "SR_ALLOW_SHORT_TOKEN", False,
        "1 lets `SR_AUTH_TOKEN` be shorter than 16 characters (with a warning at start); only for a service "
        "reachable on loopback alone",
    )
    session_ttl_h: float = setting(
        "SR_SESSION_TTL_H", 168.0,
        "how long a sign-in on the page lasts; the cookie carries its issue time and stops working at sign-out "
        "(kept in the job database, so also after a restart)", POSITIVE,
    )
    # Result cache: "owner" (one browser's own repeats), "shared" (everyone's), "off".
    result_cache: str = setting(
        "SR_RESULT_CACHE", "owner",
        "`owner`, `shared` or `off`: which earlier results an upload of the same photo and settings may reuse "
        "(see \"Result cache\" below)", one_of("owner", "shared", "off"), lower=True,
    )
    keep_uploads: bool = setting(
        "SR_KEEP_UPLOADS", False, "1 keeps each upload after its job has finished (normally it is deleted then)",
    )
    worker_nice: int = setting(
        "SR_WORKER_NICE", 10,
        "CPU niceness of the worker processes, so that the service's threads win the CPU when both want it; "
        "0 to disable",
    )
    worker_start: str = setting(
        "SR_WORKER_START", "preloaded",
        "`preloaded`: each job's process is forked from a launcher that has imported the worker's libraries "
        "(a small job takes 0.2-0.6 s instead of 0.6-5.3 s; the launcher holds about 700 MB; on Ray nodes, one in each "
        "Ray worker process, which is then kept for the next job); `plain`: each job starts a fresh interpreter. "
        "Jobs start plain while the launcher is (re)starting", one_of(*START_KINDS), lower=True,
    )
    worker_memory_mb: int = setting(
        "SR_WORKER_MEMORY_MB", 0,
        "the address space, in MB, each job's process may add once its libraries are loaded (`RLIMIT_AS`); a job "
        "over it fails with `out_of_memory`. 0: no limit. CPU jobs only: a GPU's driver reserves address space "
        "beyond any such limit. A capped worker does not ask for huge pages (README, \"Engines and precision\")",
        NOT_NEGATIVE,
    )
    behind_proxy: bool = setting(
        "SR_BEHIND_PROXY", False,
        "1 trusts one reverse proxy's `X-Forwarded-Proto/Host/For` (Secure cookie behind TLS, the client's "
        "address for sign-in throttling and the per-address shares)",
    )
    trust_forwarded_prefix: bool = setting(
        "SR_TRUST_FORWARDED_PREFIX", False,
        "1 (with `SR_BEHIND_PROXY=1`) also trusts `X-Forwarded-Prefix`, for a service served under a path prefix; "
        "only where the proxy sets or clears that header itself (`deploy/nginx/sr-web.conf` clears it), else a "
        "client could rewrite its own links and cookie paths",
    )
    # How jobs run; the names are the backend registry's (web/backends), which refuses an unknown one.
    backend: str = setting(
        "SR_BACKEND", "local",
        "`local`: workers are subprocesses of the service; `ray`: each job is a task on a Ray cluster's GPU nodes "
        "(see [Running on a Ray cluster](#running-on-a-ray-cluster))", lower=True,
    )
    ray_address: str = setting(
        "SR_RAY_ADDRESS", "auto",
        "the Ray cluster: `auto` on a machine of the cluster, else the head's GCS address `host:6379` "
        "([docs/scaling.md](docs/scaling.md))",
        Rule(lambda v: bool(v.strip()), "must not be empty (use auto or host:port, e.g. head:6379)"),
    )
    ray_gpus_per_job: float = setting(
        "SR_RAY_GPUS_PER_JOB", 1.0, "GPUs a job's Ray task asks for", NOT_NEGATIVE,
    )
    ray_cpus_per_job: float = setting("SR_RAY_CPUS_PER_JOB", 1.0, "CPUs a job's Ray task asks for", POSITIVE)
    # Ray's ports are not for the internet, token or not: an address outside loopback/private ranges needs this.
    ray_allow_public_address: bool = setting(
        "SR_RAY_ALLOW_PUBLIC_ADDRESS", False,
        "1 lets `SR_RAY_ADDRESS` be a public address (a Ray cluster's ports belong on a private network, even with its token)",
    )
    worker_script: Path = field(default=WORKER_SCRIPT)  # not a setting: tests point it at other workers

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

    @property
    def max_mask_bytes(self) -> int:
        """A repair mask's limit: MAX_MASK_MB, or the photo's limit where that is lower."""
        return min(int(MAX_MASK_MB * 1024 * 1024), self.max_upload_bytes)

    def _quarter_of_threads(self, asked: int | None) -> int:
        return max(1, self.web_threads // 4) if asked is None else asked

    @property
    def stream_limit(self) -> int:
        """`/events` streams open at once: SR_MAX_EVENT_STREAMS, else a quarter of the threads (at least 1)."""
        return self._quarter_of_threads(self.max_event_streams)

    @property
    def sync_wait_limit(self) -> int:
        """`POST /upload` requests waiting at once: SR_MAX_SYNC_WAITS, else a quarter of the threads (at least 1)."""
        return self._quarter_of_threads(self.max_sync_waits)

    def thread_bounds(self) -> str:
        """The bounds in force, for the log at start."""
        return (f"at most {self.stream_limit} /events streams and {self.sync_wait_limit} waiting POST /upload "
                f"requests hold server threads, of SR_WEB_THREADS={self.web_threads}")

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with some fields replaced (used by tests and `create_app(test_config)`)."""
        unknown = set(overrides) - set(_KINDS)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values = {
            key: Path(value).resolve() if _KINDS[key] is Path and value is not None else value
            for key, value in overrides.items()
        }
        new = replace(self, **values)
        new.validate()
        return new

    def validate(self) -> None:
        """ConfigError for the first value its setting's check refuses (the backend checks its own, and
        the backend's name, when it is created)."""
        for row in SETTINGS:
            if row.name is not None:
                row.validate(getattr(self, row.name))
        if self.trust_forwarded_prefix and not self.behind_proxy:
            raise ConfigError("SR_TRUST_FORWARDED_PREFIX=1 needs SR_BEHIND_PROXY=1 (a proxy that sets the header)")
        if self.stream_limit + self.sync_wait_limit >= self.web_threads:
            raise ConfigError(
                f"{self.stream_limit} /events streams (SR_MAX_EVENT_STREAMS) and {self.sync_wait_limit} waiting "
                f"uploads (SR_MAX_SYNC_WAITS) could take all SR_WEB_THREADS={self.web_threads} threads, and then "
                "nothing else (not even /healthz) would be answered; set fewer of them (0 turns either off) or "
                "more threads")
        if self.auth_token and len(self.auth_token) < MIN_TOKEN_LENGTH and not self.allow_short_token:
            raise ConfigError(
                f"SR_AUTH_TOKEN is {len(self.auth_token)} character(s) long, which can be guessed; use "
                f"{MIN_TOKEN_LENGTH} or more, for example the output of: python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))' (or set SR_ALLOW_SHORT_TOKEN=1 for a service reachable on "
                "loopback only)")


def _without_none(hint: Any) -> type:
    if isinstance(hint, types.UnionType):
        return next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


# Config field -> its type (`str | None` counts as str).
_KINDS: dict[str, type] = {name: _without_none(hint) for name, hint in get_type_hints(Config).items()}


def _config_rows() -> tuple[Setting, ...]:
    return tuple(
        Setting(name=f.name, kind=_KINDS[f.name], default=f.default, **f.metadata["setting"])
        for f in fields(Config)
        if "setting" in f.metadata
    )


# Read by deploy/gunicorn.conf.py and web/__main__.py, not by the app.
GUNICORN_SETTINGS = (
    Setting("SR_BIND", str, "127.0.0.1:8080", "gunicorn only (`deploy/gunicorn.conf.py`): the address and port it listens on"),
    Setting("SR_LOG_LEVEL", str, "info", "`debug`, `info`, `warning`, `error` or `critical`; `python -m web` (`make run`) logs each request at `debug`, and failed (5xx) and slow (over 2 s) ones at `info`", lower=True,
            check=one_of("debug", "info", "warning", "error", "critical")),
    Setting("SR_ACCESS_LOG", str, "off",
            "gunicorn only (`deploy/gunicorn.conf.py`): a file for the access log, or `-` for standard output (a line for every request)"),
)

SETTINGS: tuple[Setting, ...] = _config_rows() + GUNICORN_SETTINGS


def setting_value(env_name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting's checked value from the environment (for deploy/gunicorn.conf.py)."""
    row = next(row for row in SETTINGS if row.env == env_name)
    value = row.value(os.environ if env is None else env)
    row.validate(value)
    return value


def config_from_env(env: Mapping[str, str] | None = None) -> Config:
    """Reads SR_* variables; relative paths are taken from the current directory."""
    env = os.environ if env is None else env
    config = Config(**{row.name: row.value(env) for row in SETTINGS if row.name is not None})
    config.validate()
    return config


def markdown_table() -> str:
    """The README's configuration table, as the settings table says it."""
    return "\n".join([TABLE_HEADER, "|---|---|---|", *(row.markdown_row() for row in SETTINGS)])


def readme_table(text: str) -> tuple[int, int]:
    """Where the configuration table is in the README's text (start and end offsets)."""
    match = re.search(rf"^{re.escape(TABLE_HEADER)}\n(?:\|.*\n?)*", text, re.M)
    if match is None:
        raise ValueError(f"the README has no line {TABLE_HEADER!r}")
    return match.start(), match.end()


def write_readme(path: Path = README) -> bool:
    """Puts the table into the README; True when it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = readme_table(text)
    new = text[:start] + markdown_table() + "\n" + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text

