"""The Ray backend: each job a streaming Ray task on a (GPU) worker node; photo and result through the object store."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from web.backends import BackendUnavailable, EventSink, Health, JobSpec
from web.backends.ray_task import EXITED, PLACED, TaskRequest, kill_job_processes, run_job_on_node
from web.config import Config, ConfigError, is_private_address, public_refusal
from web.jobs import Job
from web.outcomes import Ending, Lost, ending_from_returncode

try:
    import ray
    import ray.exceptions as ray_errors
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # the front end without the `ray` extra
    ray = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

INSTALL_HINT = "SR_BACKEND=ray needs Ray on this machine: pip install -e '.[ray]' (worker nodes: '.[worker,ray]')"
NAMESPACE = "photo-upscaler"
RECONNECT_S = 10.0
# A cancelled task first gets KeyboardInterrupt, so that it kills its worker and removes its folder;
# if it has not ended after this long, its process is killed.
CANCEL_GRACE_S = 5.0
# After a kill, how long to wait for Ray to report the task's end before giving up on it.
KILL_GRACE_S = 30.0
RECOVER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RayAddress:
    """SR_RAY_ADDRESS taken apart: `auto` (a cluster this machine belongs to) or `host:port` (the head's GCS)."""

    raw: str
    host: str | None  # None for auto
    port: int | None = None

    @classmethod
    def parse(cls, raw: str) -> "RayAddress":
        raw = raw.strip()
        if raw == "auto":
            return cls(raw, None)
        parts = urlsplit(raw if "://" in raw else f"gcs://{raw}")
        if parts.scheme not in ("ray", "gcs") or not parts.hostname:
            raise ConfigError(f"SR_RAY_ADDRESS={raw!r}: use auto or host:port (the head's GCS, e.g. head:6379)")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            raise ConfigError(f"SR_RAY_ADDRESS={raw!r} has no port: use host:6379")
        return cls(raw, parts.hostname, port)


def public_addresses(host: str) -> list[str]:
    """The addresses `host` stands for outside loopback and private networks (OSError if unresolvable)."""
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        found = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
    return sorted({str(a) for a in found if not is_private_address(a)})


def probe(host: str, port: int, timeout: float = 5.0) -> None:
    """Raises OSError unless something accepts TCP connections there (ray.init would wait for minutes)."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


class RayExecution:
    """One job's task: a thread reads its stream (events, then the result's bytes) as the task yields them."""

    def __init__(self, backend: "RayBackend", spec: JobSpec, on_event: EventSink, generator: Any):
        self._backend = backend
        self._spec = spec
        self._on_event = on_event
        self._generator = generator
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._killed = False
        self._abandoned = False
        self._returncode: int | None = None
        self._lost: Lost | None = None
        self.placement: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._consume, name=f"sr-ray-{spec.job_id[:8]}", daemon=True)
        self._thread.start()

    @property
    def local_pid(self) -> int | None:
        return None

    def wait(self, timeout: float | None) -> bool:
        if timeout is None and self._killed:
            timeout = KILL_GRACE_S
            if not self._finished.wait(timeout):
                # Ray never told us; nothing it sends later is used (see _write_result).
                with self._lock:
                    self._abandoned = True
                    self._lost = self._lost or Lost.CLUSTER
                log.error("job %s: no word from Ray %g s after cancelling its task", self._spec.job_id, timeout)
                return True
            return True
        return self._finished.wait(timeout)

    def kill(self) -> None:
        with self._lock:
            if self._killed or self._finished.is_set():
                return
            self._killed = True
        self._cancel(force=False)
        timer = threading.Timer(CANCEL_GRACE_S, self._force_cancel)
        timer.daemon = True
        timer.start()

    def _force_cancel(self) -> None:
        if not self._finished.is_set():
            # The task's process is killed, and the worker under it dies with it (parent-death signal).
            self._cancel(force=True)

    def _cancel(self, force: bool) -> None:
        try:
            ray.cancel(self._generator, force=force)
        except Exception:
            log.exception("job %s: cancelling its Ray task failed (force=%s)", self._spec.job_id, force)

    def finish(self) -> Ending:
        rc = self._returncode
        # A worker that reported its own end by a signal was not lost, whatever the stream said after.
        return ending_from_returncode(rc, lost=None if rc is not None and rc < 0 else self._lost)

    def _consume(self) -> None:
        try:
            for ref in self._generator:
                item = ray.get(ref)
                if isinstance(item, bytes):
                    self._write_result(item)
                elif isinstance(item, dict):
                    self._handle(item)
        except ray_errors.RayTaskError as err:
            # An exception inside the task itself (not the worker's failure, which is an exit code).
            self._log(f"sr-web: the Ray task failed: {err}\n")
            log.error("job %s: the Ray task failed: %s", self._spec.job_id, err)
            self._returncode = self._returncode if self._returncode is not None else 1
        except (
            ray_errors.WorkerCrashedError,
            ray_errors.NodeDiedError,
            ray_errors.LocalRayletDiedError,
            ray_errors.ObjectLostError,
            ray_errors.TaskCancelledError,
            ray_errors.OutOfMemoryError,
        ) as err:
            self._lost = Lost.NODE
            self._log(f"sr-web: the task's process or node was lost: {type(err).__name__}\n")
            if not self._killed:
                log.warning("job %s: its Ray worker or node was lost: %s", self._spec.job_id, err)
        except Exception as err:
            self._lost = Lost.CLUSTER
            self._log(f"sr-web: lost contact with the Ray cluster: {type(err).__name__}: {err}\n")
            if not self._killed:
                log.error("job %s: lost contact with the Ray cluster: %r", self._spec.job_id, err)
                self._backend.connection_lost(err)
        finally:
            self._finished.set()

    def _handle(self, item: dict[str, Any]) -> None:
        kind = item.get("event")
        if kind == PLACED:
            self.placement = item
            self._log(
                f"sr-web: on Ray node {item.get('node_id')} ({item.get('node_ip')}), "
                f"task pid {item.get('task_pid')}, worker pid {item.get('worker_pid')}\n",
                mode="w",
            )
        elif kind == EXITED:
            self._returncode = int(item.get("returncode", 1))
            self._log(str(item.get("stderr") or ""))
        else:
            self._on_event(item)

    def _write_result(self, data: bytes) -> None:
        """Atomically: a temporary file named after the job (removed with the job's leftovers), then a rename."""
        output = self._spec.output_path
        temp = output.with_name(f".{self._spec.job_id}.{uuid.uuid4().hex}.part")
        with self._lock:
            if self._abandoned or self._killed:
                return
            try:
                with open(temp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, output)
            finally:
                temp.unlink(missing_ok=True)

    def _log(self, text: str, mode: str = "a") -> None:
        try:
            with open(self._spec.log_path, mode, encoding="utf-8") as out:
                out.write(text)
        except OSError:
            pass


class RayBackend:
    """Connects to the cluster in the background (the service starts either way) and submits one task per job."""

    name = "ray"
    uses_local_model = False

    def __init__(self, config: Config):
        if ray is None:
            raise BackendUnavailable(INSTALL_HINT)
        self.config = config
        self.address = RayAddress.parse(config.ray_address)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._connected = False
        self._owns_connection = False
        self._reason: str | None = "connecting to the Ray cluster (SR_RAY_ADDRESS)"
        self._remote: Any = None
        self._killer: Any = None
        self._to_recover: list[str] = []
        self._thread: threading.Thread | None = None

    def _public_refusal(self, public: list[str]) -> str:
        return public_refusal(self.config.ray_address, public)

    # ---- connection ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._connect_loop, name="sr-ray-connect", daemon=True)
        self._thread.start()

    def _connect_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._connect()
            except _Refused as err:
                self._set_reason("SR_RAY_ADDRESS resolves to a public address; not connecting (see the log)")
                log.error("not connecting to Ray: %s", err)
                return
            except Exception as err:
                self._set_reason(f"the Ray cluster (SR_RAY_ADDRESS) cannot be reached: {type(err).__name__}")
                log.error("cannot connect to the Ray cluster at %s: %s; retrying in %g s",
                          self.config.ray_address, err, RECONNECT_S)
            else:
                self._recover_pending()
                return
            self._closed.wait(RECONNECT_S)

    def _connect(self) -> None:
        if self.address.host is not None and not self.config.ray_allow_public_address:
            public = public_addresses(self.address.host)
            if public:
                raise _Refused(self._public_refusal(public))
        if self.address.host is not None and self.address.port is not None:
            probe(self.address.host, self.address.port)
        if not ray.is_initialized():
            ray.init(
                address=self.config.ray_address,
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            self._owns_connection = True
        # The resources go into the declaration itself: Ray fixes max_calls there (`.options()` cannot
        # change it), so every job gets a fresh worker process that exits after it, GPU or not.
        remote = ray.remote(
            num_gpus=self.config.ray_gpus_per_job,
            num_cpus=self.config.ray_cpus_per_job,
            max_calls=1,
            max_retries=0,  # a job is never run twice behind the uploader's back (docs/scaling.md)
            num_returns="streaming",
        )(run_job_on_node)
        killer = ray.remote(num_cpus=0, max_retries=0)(kill_job_processes)
        with self._lock:
            self._remote, self._killer = remote, killer
            self._connected = True
            self._reason = None
        log.info("connected to the Ray cluster at %s", self.config.ray_address)

    def connection_lost(self, err: BaseException) -> None:
        """A job found the cluster gone: report it on /healthz and reconnect in the background."""
        with self._lock:
            if not self._connected:
                return
            self._connected = False
            self._reason = f"lost contact with the Ray cluster (SR_RAY_ADDRESS): {type(err).__name__}"
        threading.Thread(target=self._reconnect, name="sr-ray-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        if self._owns_connection:
            try:
                ray.shutdown()
            except Exception:
                log.exception("ray.shutdown() failed")
            self._owns_connection = False
        self._connect_loop()

    def _set_reason(self, reason: str) -> None:
        with self._lock:
            self._reason = reason

    def health(self) -> Health:
        with self._lock:
            return Health(ok=self._connected, reason=self._reason)

    def close(self) -> None:
        self._closed.set()
        if self._owns_connection:
            try:
                ray.shutdown()
            except Exception:
                log.exception("ray.shutdown() failed")
            self._owns_connection = False

    # ---- jobs ------------------------------------------------------------------------------

    def launch(self, spec: JobSpec, on_event: EventSink) -> RayExecution:
        with self._lock:
            remote = self._remote if self._connected else None
        if remote is None:
            raise BackendUnavailable("not connected to the Ray cluster")
        request = TaskRequest(
            job_id=spec.job_id,
            input_suffix=spec.input_path.suffix,
            output_suffix=spec.output_path.suffix,
            model_name=spec.model_path.name,
            denoise=spec.denoise,
            default_model=spec.is_default_model,
            max_pixels=self.config.max_pixels,
            nice=self.config.worker_nice,
            input_label=str(spec.input_path),
            output_label=str(spec.output_path),
            model_label=str(spec.model_path),
        )
        data = Path(spec.input_path).read_bytes()
        try:
            photo = ray.put(data)
            generator = remote.options(name=f"sr-job-{spec.job_id}").remote(request, photo)
        except Exception as err:
            self.connection_lost(err)
            raise BackendUnavailable(f"submitting the job to Ray failed: {err!r}") from err
        return RayExecution(self, spec, on_event, generator)

    def recover(self, jobs: list[Job]) -> None:
        """Ray ends the tasks of a driver that died; this also kills, on every node, any worker of these jobs
        still running, as soon as the cluster is reachable."""
        with self._lock:
            self._to_recover.extend(job.id for job in jobs)
            connected = self._connected
        if connected:
            threading.Thread(target=self._recover_pending, name="sr-ray-recover", daemon=True).start()

    def _recover_pending(self) -> None:
        with self._lock:
            job_ids, self._to_recover = self._to_recover, []
            killer = self._killer
        if not job_ids or killer is None:
            return
        try:
            refs = [
                killer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                    job_ids
                )
                for node in ray.nodes()
                if node.get("Alive")
            ]
            killed = [pid for pids in ray.get(refs, timeout=RECOVER_TIMEOUT_S) for pid in pids]
            if killed:
                log.warning("killed %d task process(es) left by the previous service: %s", len(killed), killed)
        except Exception:
            log.exception("could not end the Ray tasks of %d interrupted job(s)", len(job_ids))


class _Refused(Exception):
    """The address is public and SR_RAY_ALLOW_PUBLIC_ADDRESS is not set."""
