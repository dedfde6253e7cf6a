"""The Ray backend: each job a streaming Ray task on a (GPU) worker node; photo and result through the object store.
The service is not the Ray driver: a child process is (web/backends/ray/driver.py), supervised and restarted here."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infer.worker_process import dies_with_parent
from infer.catalog import InstalledModel
from web.backends import ON_NODE_EVENT, WAITING_FOR_NODE_EVENT, BackendUnavailable, EventHandler, Health, JobSpec
from web.backends.ray.address import RayAddress
from web.backends.ray.autoscaling import Autoscaler
from web.backends.ray.inventory import ModelReport
from web.backends.ray.driver import EXIT_CLUSTER_LOST, DriverSettings
from web.backends.ray.link import Link, LinkClosed, Op
from web.backends.ray.task import EXITED, PLACED, TaskRequest
from web.config import Config
from web.jobs.store import Job
from web.jobs.outcomes import Ending, Lost, ending_from_returncode

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "SR_BACKEND=ray needs Ray on this machine: pip install -e '.[ray]' (worker nodes: '.[worker,ray]')"
# A cancelled task first gets KeyboardInterrupt, so that it kills its worker and removes its folder;
# if it has not ended after this long, its process is killed.
CANCEL_GRACE_S = 5.0
# After a kill, how long to wait for Ray to report the task's end before giving up on it.
KILL_GRACE_S = 30.0
# The driver process: restarted after it ends, first after RESTART_MIN_S, doubling up to RESTART_MAX_S while
# it keeps ending within STABLE_S of its start; pinged every PING_S, killed when silent for SILENT_S.
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0
PING_S = 5.0
SILENT_S = 60.0
# How long a submission may wait for the driver's answer (the photo goes into the object store meanwhile).
SUBMIT_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0


def ray_installed() -> bool:
    """Whether Ray can be imported here, without importing it (the service itself never connects)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["ray"] is None
        return False


class RayExecution:
    """One job's task, as the driver process reports it: events, then the result, then the end of its stream."""

    def __init__(self, backend: "RayBackend", spec: JobSpec, on_event: EventHandler):
        self._backend = backend
        self._spec = spec
        self._on_event = on_event
        self._lock = threading.Lock()
        self._answered = threading.Event()  # SUBMITTED or REFUSED came (or the driver went)
        self._refusal: str | None = None
        self._finished = threading.Event()
        self._killed = False
        self._abandoned = False
        self._returncode: int | None = None
        self._lost: Lost | None = None
        self.result_temp = spec.output_path.with_name(f".{spec.job_id}.{uuid.uuid4().hex}.part")

    @property
    def job_id(self) -> str:
        return self._spec.job_id

    @property
    def local_pid(self) -> int | None:
        return None

    def wait(self, timeout: float | None) -> bool:
        if timeout is None and self._killed:
            timeout = KILL_GRACE_S
            if not self._finished.wait(timeout):
                # Ray never told us; nothing it sends later is used (see result_written).
                with self._lock:
                    self._abandoned = True
                    self._lost = self._lost or Lost.CLUSTER
                log.error("job %s: no word from Ray %g s after cancelling its task", self.job_id, timeout)
                return True
            return True
        return self._finished.wait(timeout)

    def kill(self) -> None:
        with self._lock:
            if self._killed or self._finished.is_set():
                return
            self._killed = True
        self._backend.cancel(self.job_id, force=False)
        timer = threading.Timer(CANCEL_GRACE_S, self._force_cancel)
        timer.daemon = True
        timer.start()

    def _force_cancel(self) -> None:
        if not self._finished.is_set():
            # The task's process is killed, and the worker under it dies with it (parent-death signal).
            self._backend.cancel(self.job_id, force=True)

    def finish(self) -> Ending:
        rc = self._returncode
        # A worker that reported its own end by a signal was not lost, whatever the stream said after.
        return ending_from_returncode(rc, lost=None if rc is not None and rc < 0 else self._lost)

    # ---- what the driver reports (from the backend's reader thread) ---------------------------

    def answered(self, refusal: str | None) -> None:
        if refusal is None:
            # Submitted: until the task reports where it runs, it waits for a node (one with room, or one
            # the autoscaler starts).
            self._on_event({"event": WAITING_FOR_NODE_EVENT})
        self._refusal = refusal
        self._answered.set()

    def await_answer(self) -> str | None:
        """None once submitted; else why not."""
        if not self._answered.wait(SUBMIT_TIMEOUT_S):
            return f"the Ray driver did not answer within {SUBMIT_TIMEOUT_S:g} s"
        return self._refusal

    def item(self, item: dict[str, Any]) -> None:
        kind = item.get("event")
        if kind == PLACED:
            digest = item.get("model_sha256")
            if isinstance(digest, str):
                self._backend.model_reported(self._spec.model_path.name, str(item.get("node_id")), digest)
            self._on_event({"event": ON_NODE_EVENT, "model_sha256": digest})
            # The model as the node looked it up: the operator's log names the node's file, not this machine's.
            found = "" if item.get("model_found", True) else " (not there)"
            self._log(
                f"sr-web: on Ray node {item.get('node_id')} ({item.get('node_ip')}), "
                f"task pid {item.get('task_pid')}, worker pid {item.get('worker_pid')}, "
                f"model {item.get('model_path')}{found}\n",
                mode="w",
            )
        elif kind == EXITED:
            self._returncode = int(item.get("returncode", 1))
            self._log(str(item.get("stderr") or ""))
        else:
            self._on_event(item)

    def result_written(self) -> None:
        """The driver has written and fsynced the result's bytes under result_temp: renamed into place,
        unless the job was given up meanwhile."""
        with self._lock:
            try:
                if not (self._abandoned or self._killed):
                    os.replace(self.result_temp, self._spec.output_path)
            except OSError as err:
                log.error("job %s: cannot move its result into place: %s", self.job_id, err)
            finally:
                self.result_temp.unlink(missing_ok=True)

    def ended(self, lost: Lost | None, detail: str | None) -> None:
        if self._finished.is_set():
            return
        if detail:
            self._log(f"sr-web: {detail}\n")
            if not self._killed:
                level = logging.WARNING if lost is Lost.NODE else logging.ERROR
                log.log(level, "job %s: %s", self.job_id, detail)
        if lost is None and detail and self._returncode is None:
            self._returncode = 1  # an exception inside the task itself, not the worker's exit code
        self._lost = lost
        self._answered.set()
        self._finished.set()

    def _log(self, text: str, mode: str = "a") -> None:
        try:
            with open(self._spec.log_path, mode, encoding="utf-8") as out:
                out.write(text)
        except OSError:
            pass


@dataclass(frozen=True)
class NodeModels:
    """A worker node's models folder, the file names in it and the models it can run, as it reported them
    when it joined."""

    folder: str
    names: frozenset[str]
    models: tuple[ModelReport, ...] = ()

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "NodeModels":
        reports = []
        for data in message.get("models") or []:
            try:
                reports.append(ModelReport.from_json(data))
            except (KeyError, TypeError, ValueError):
                continue
        return cls(str(message.get("folder")), frozenset(str(n) for n in message.get("names") or []), tuple(reports))

    def has(self, file_name: str) -> bool:
        """The file is in the node's folder, or is the model the node reported under that name (its default)."""
        return file_name in self.names or any(r.file == file_name for r in self.models)


@dataclass(frozen=True)
class NodeUsage:
    """The cluster's worker nodes as the driver counts them: seconds alive since the service started, and
    how many are alive now, by kind (`gpu`, `cpu`)."""

    seconds: dict[str, float] = field(default_factory=dict)
    alive: dict[str, int] = field(default_factory=dict)

    def counted(self, seconds: dict[str, float], alive: dict[str, int]) -> "NodeUsage":
        total = dict(self.seconds)
        for kind, value in seconds.items():
            total[str(kind)] = total.get(str(kind), 0.0) + float(value)
        return NodeUsage(total, {str(k): int(v) for k, v in alive.items()})


@dataclass
class DriverProcess:
    """One started driver process and its end of the link."""

    proc: subprocess.Popen
    link: Link
    started: float
    last_heard: float


class RayBackend:
    """Keeps a Ray driver process running (the service starts either way, and survives the cluster's loss) and
    has it submit one task per job."""

    name = "ray"
    uses_local_model = False

    def __init__(self, config: Config):
        if not ray_installed():
            raise BackendUnavailable(RAY_INSTALL_HINT)
        self.config = config
        self.address = RayAddress.parse(config.ray_address)
        self._settings = DriverSettings(
            address=config.ray_address,
            allow_public_address=config.ray_allow_public_address,
            gpus_per_job=config.ray_gpus_per_job,
            cpus_per_job=config.ray_cpus_per_job,
            worker_start=config.worker_start,
        )
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._driver: DriverProcess | None = None
        self._connected = False
        self._reason: str | None = "connecting to the Ray cluster (SR_RAY_ADDRESS)"
        self._executions: dict[str, RayExecution] = {}
        self._to_recover: list[str] = []
        self._thread: threading.Thread | None = None
        self._usage = NodeUsage()
        # (model file name, node id) -> the SHA-256 that node reported running, for its live nodes only.
        self._model_digests: dict[tuple[str, str], str] = {}
        self._node_models: dict[str, NodeModels] = {}  # live worker node id -> the models it has
        self._autoscaler = Autoscaler.UNKNOWN

    # ---- the driver process ------------------------------------------------------------------

    def start(self) -> None:
        # This thread starts every driver process and lives as long as the backend: the driver's
        # parent-death signal is tied to the thread that started it.
        self._thread = threading.Thread(target=self._supervise, name="sr-ray-driver", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        delay = RESTART_MIN_S
        while not self._closed.is_set():
            try:
                driver = self._spawn()
            except OSError as err:
                log.error("cannot start the Ray driver process: %s", err)
                self._set_state(False, f"the Ray driver process cannot be started: {type(err).__name__}")
            else:
                if self._closed.is_set():  # close() came while it was starting
                    self._stop_driver(driver)
                self._serve(driver)
                if self._closed.is_set():
                    return
                if time.monotonic() - driver.started >= STABLE_S:
                    delay = RESTART_MIN_S
                log.error("%s; starting a new one in %g s", self._describe_end(driver), delay)
            if self._closed.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_S)

    def _spawn(self) -> DriverProcess:
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if k != "SR_AUTH_TOKEN"}
        root = str(Path(__file__).resolve().parents[3])  # where `web` is importable from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "web.backends.ray.driver", "--fd", str(theirs.fileno()),
                 "--settings", self._settings.to_json()],
                stdin=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                preexec_fn=dies_with_parent(os.getpid()),
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        now = time.monotonic()
        driver = DriverProcess(proc, Link(ours), now, now)
        with self._lock:
            self._driver = driver
        log.info("started the Ray driver process (pid %d)", proc.pid)
        return driver

    def _serve(self, driver: DriverProcess) -> None:
        """Reads the driver's messages until it ends; then whatever it was running is lost."""
        pinger = threading.Thread(target=self._ping, args=(driver,), name="sr-ray-ping", daemon=True)
        pinger.start()
        for message in driver.link.messages():
            driver.last_heard = time.monotonic()
            try:
                self._dispatch(driver, message)
            except Exception:
                log.exception("a message from the Ray driver could not be handled: %r", message.get("op"))
        driver.link.close()
        try:
            driver.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            driver.proc.kill()
            driver.proc.wait()
        with self._lock:
            self._driver = None
            self._connected = False
            lost, self._executions = list(self._executions.values()), {}
            self._usage = self._usage.counted({}, {})  # unknown until a new driver counts them
            self._model_digests = {}
            self._node_models = {}
            self._autoscaler = Autoscaler.UNKNOWN
            if not self._closed.is_set():
                self._reason = f"lost contact with the Ray cluster: {self._describe_end(driver)}; restarting it"
        for execution in lost:
            execution.ended(Lost.CLUSTER, "the Ray driver process ended while the job was running")
        if lost and not self._closed.is_set():
            log.error("%d running job(s) failed with cluster_lost: %s", len(lost),
                      ", ".join(e.job_id for e in lost))

    @staticmethod
    def _describe_end(driver: DriverProcess) -> str:
        rc = driver.proc.returncode
        if rc == EXIT_CLUSTER_LOST:
            return f"the Ray driver process (pid {driver.proc.pid}) lost the cluster and exited"
        if rc is not None and rc < 0:
            try:
                how = signal.Signals(-rc).name
            except ValueError:
                how = f"signal {-rc}"
            return f"the Ray driver process (pid {driver.proc.pid}) was killed ({how})"
        # Ray's core worker ends its process with status 1, silently, when it loses its raylet or the GCS.
        return f"the Ray driver process (pid {driver.proc.pid}) exited with status {rc}"

    def _ping(self, driver: DriverProcess) -> None:
        while driver.proc.poll() is None and not self._closed.wait(PING_S):
            if time.monotonic() - driver.last_heard > SILENT_S:
                log.error("the Ray driver process (pid %d) has not answered for %g s; killing it",
                          driver.proc.pid, SILENT_S)
                driver.proc.kill()
                return
            try:
                driver.link.send(Op.PING)
            except LinkClosed:
                return

    def _dispatch(self, driver: DriverProcess, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == Op.HEALTH.value:
            ok = bool(message.get("ok"))
            self._set_state(ok, None if ok else str(message.get("reason") or "the Ray cluster cannot be used"))
            with self._lock:
                pending = list(self._to_recover) if ok else []
            if pending:
                driver.link.send(Op.RECOVER, jobs=pending)
            return
        if op == Op.RECOVERED.value:
            done = set(message.get("jobs") or [])
            with self._lock:
                self._to_recover = [j for j in self._to_recover if j not in done]
            return
        if op == Op.PONG.value:
            return
        if op == Op.NODES.value:
            alive = {str(node) for node in message.get("ids") or []}
            with self._lock:
                self._usage = self._usage.counted(message.get("seconds") or {}, message.get("alive") or {})
                # A node that has gone takes its reports along: a replacement may have other files.
                self._model_digests = {key: d for key, d in self._model_digests.items() if key[1] in alive}
                self._node_models = {n: m for n, m in self._node_models.items() if n in alive}
                try:
                    self._autoscaler = Autoscaler(message.get("autoscaler"))
                except ValueError:
                    self._autoscaler = Autoscaler.UNKNOWN
            return
        if op == Op.MODELS.value:
            node = NodeModels.from_message(message)
            with self._lock:
                self._node_models[str(message.get("node"))] = node
            if self.config.model_path.name not in node.names:
                log.warning("Ray node %s has no %s in its models folder %s (it has: %s)", message.get("node"),
                            self.config.model_path.name, node.folder, ", ".join(sorted(node.names)) or "nothing")
            log.info("Ray node %s offers the models %s (folder %s)", message.get("node"),
                     ", ".join(m.id for m in node.models) or "none", node.folder)
            return
        job_id = str(message.get("job"))
        with self._lock:
            execution = self._executions.get(job_id)
            if op in (Op.END.value, Op.REFUSED.value):
                self._executions.pop(job_id, None)
        if execution is None:
            path = Path(str(message.get("path") or ""))
            if op == Op.RESULT.value and path.name.startswith(f".{job_id}.") and path.parent == self.config.results_dir:
                path.unlink(missing_ok=True)  # the job's submission was given up: nothing of it is kept
            return
        if op == Op.SUBMITTED.value:
            execution.answered(None)
        elif op == Op.REFUSED.value:
            execution.answered(str(message.get("reason") or "refused"))
        elif op == Op.ITEM.value and isinstance(message.get("item"), dict):
            execution.item(message["item"])
        elif op == Op.RESULT.value:
            execution.result_written()
        elif op == Op.END.value:
            lost = message.get("lost")
            execution.ended(Lost(lost) if lost in (Lost.NODE.value, Lost.CLUSTER.value) else None,
                            message.get("detail"))

    def _set_state(self, connected: bool, reason: str | None) -> None:
        with self._lock:
            self._connected = connected
            self._reason = reason

    def health(self) -> Health:
        with self._lock:
            details = {"worker_nodes_alive": sum(self._usage.alive.values()), "autoscaler": self._autoscaler.value}
            return Health(ok=self._connected, reason=self._reason, details=details)

    def model_reported(self, name: str, node_id: str, sha256: str) -> None:
        with self._lock:
            others = {d for (n, node), d in self._model_digests.items() if n == name and node != node_id}
            self._model_digests[(name, node_id)] = sha256
        if others - {sha256}:
            log.warning("the Ray nodes run different files as the model %s; its results are not cached until "
                        "they agree (docs/scaling.md, \"Models on the nodes\")", name)

    def node_model_digest(self, name: str) -> str | None:
        """The SHA-256 of the model file of this name on the live nodes that ran it, when they agree; None
        before one has, or when they differ."""
        with self._lock:
            found = {d for (n, _), d in self._model_digests.items() if n == name}
        return found.pop() if len(found) == 1 else None

    def model_check(self, name: str) -> Health:
        """Whether the live worker nodes have the model file `name` (for /healthz): not ok when nodes are
        alive and none has it; a reason also when some lack it, or when no node is alive to ask."""
        with self._lock:
            nodes = dict(self._node_models)
            alive = sum(self._usage.alive.values())
        if not nodes:
            if alive:
                return Health(True, None)  # just joined: its list is on the way
            return Health(True, f"no Ray worker node is alive: whether the nodes have {name} is checked when one joins")
        lacking = sorted(n[:12] for n, m in nodes.items() if not m.has(name))
        if len(lacking) == len(nodes):
            # The nodes' folders are in the log, not in this public answer.
            return Health(False, f"no live Ray worker node has the model {name} in its models folder: run "
                                 "`sr-models fetch` there, or set SR_MODELS_DIR in the environment of its `ray start` "
                                 "(the log names each node's folder)")
        if lacking:
            return Health(True, f"Ray node(s) {', '.join(lacking)} lack the model {name}; jobs placed there fail")
        return Health(True, None)

    def node_models(self, folder: Path) -> list[InstalledModel] | None:
        """The models at least one live worker node can run (the first report of each id), named as if in
        `folder`; None while no live node has reported (none alive, or its report on the way)."""
        with self._lock:
            nodes = list(self._node_models.values())
        if not nodes:
            return None
        found: dict[str, InstalledModel] = {}
        for node in nodes:
            for report in node.models:
                model = report.model(folder)
                if model is not None:
                    found.setdefault(model.id.lower(), model)
        return list(found.values())

    def may_have(self, file_name: str) -> bool:
        """Whether a job naming this model file may find it: some live node has it, or none has reported (then
        the front end's own settings are the declaration of what the nodes have)."""
        with self._lock:
            nodes = list(self._node_models.values())
        return not nodes or any(m.has(file_name) for m in nodes)

    def nodes_with(self, file_name: str) -> list[str] | None:
        """The live nodes that have this model file, when some other live nodes lack it (jobs for it are sent
        there); None when all have it, or none, or nothing is known: then Ray places the job as it will."""
        with self._lock:
            nodes = dict(self._node_models)
        having = sorted(n for n, m in nodes.items() if m.has(file_name))
        return having if having and len(having) < len(nodes) else None

    def capacity_check(self, waiting: int) -> Health:
        """Whether any worker node can run jobs now, and who starts one when none can (for /healthz): not ok
        when none is alive and the cluster has no autoscaler."""
        with self._lock:
            alive = sum(self._usage.alive.values())
            autoscaler = self._autoscaler
            connected = self._connected
        if not connected or autoscaler is Autoscaler.UNKNOWN:
            return Health(True, None)
        if autoscaler is Autoscaler.PRESENT:
            if waiting:
                return Health(True, "no node can run jobs now; the autoscaler has been asked (`ray status` on the "
                                    "head shows the demand and the nodes it starts)")
            return Health(True, None if alive else "no Ray worker node is alive; the autoscaler starts one for a job")
        if not alive:
            return Health(False, "no node can run jobs now and this cluster has no autoscaler: start a worker node "
                                 "(docs/scaling.md)")
        if waiting:
            return Health(True, "no node can run jobs now (the live nodes are busy) and this cluster has no "
                                "autoscaler: jobs wait for a running one, or start another worker node (docs/scaling.md)")
        return Health(True, None)

    def node_usage(self) -> "NodeUsage":
        with self._lock:
            return self._usage

    def close(self) -> None:
        """Stops the driver process: asked first, killed after STOP_GRACE_S."""
        self._closed.set()
        with self._lock:
            driver = self._driver
        if driver is not None:
            self._stop_driver(driver)
        if self._thread is not None:
            self._thread.join(STOP_GRACE_S)

    @staticmethod
    def _stop_driver(driver: DriverProcess) -> None:
        try:
            driver.link.send(Op.STOP)
        except LinkClosed:
            pass
        try:
            driver.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.error("the Ray driver process (pid %d) did not stop; killing it", driver.proc.pid)
            driver.proc.kill()
            driver.proc.wait()

    # ---- jobs ------------------------------------------------------------------------------

    def launch(self, spec: JobSpec, on_event: EventHandler) -> RayExecution:
        request = TaskRequest(
            job_id=spec.job_id,
            input_suffix=spec.input_path.suffix,
            output_suffix=spec.output_path.suffix,
            model_name=spec.model_path.name,
            denoise=spec.denoise,
            faces=spec.faces,
            face_fidelity=spec.face_fidelity,
            outscale=spec.outscale,
            denoise_strength=spec.denoise_strength,
            repair=spec.repair,
            colour=spec.colour,
            find_damage=spec.find_damage,
            max_pixels=self.config.max_pixels,
            nice=self.config.worker_nice,
            start=self.config.worker_start,
            input_label=str(spec.input_path),
            output_label=str(spec.output_path),
            # The file's name alone: the worker's messages name the node's file, which is not this machine's.
            model_label=spec.model_path.name,
        )
        execution = RayExecution(self, spec, on_event)
        with self._lock:
            driver = self._driver if self._connected else None
            if driver is not None:
                self._executions[spec.job_id] = execution
        if driver is None:
            raise BackendUnavailable("not connected to the Ray cluster")
        try:
            # The driver reads the photo (and the repair mask) from the uploads folder and puts their bytes into
            # the object store.
            driver.link.send(Op.SUBMIT, job=spec.job_id, request=asdict(request), input=str(spec.input_path),
                             mask=str(spec.repair_mask) if spec.repair_mask is not None else None,
                             result_temp=str(execution.result_temp), nodes=self.nodes_with(spec.model_path.name))
            refusal = execution.await_answer()
        except LinkClosed as err:
            refusal = f"the Ray driver process has gone: {err}"
        if refusal is None and execution.finish().lost is Lost.CLUSTER and execution.wait(0):
            refusal = "the Ray driver process ended before the job was submitted"
        if refusal is not None:
            with self._lock:
                self._executions.pop(spec.job_id, None)
            self.cancel(spec.job_id, force=True)
            execution.result_temp.unlink(missing_ok=True)
            raise BackendUnavailable(f"submitting the job to Ray failed: {refusal}")
        return execution

    def cancel(self, job_id: str, force: bool) -> None:
        with self._lock:
            driver = self._driver
        if driver is not None:
            try:
                driver.link.send(Op.CANCEL, job=job_id, force=force)
            except LinkClosed:
                pass  # the driver has gone, and the task with it

    def recover(self, jobs: list[Job]) -> None:
        """Ray ends the tasks of a driver that died; this also kills, on every node, any worker of these jobs
        still running, as soon as a driver is connected."""
        with self._lock:
            self._to_recover.extend(job.id for job in jobs)
            pending = list(self._to_recover)
            driver = self._driver if self._connected else None
        if driver is not None and pending:
            try:
                driver.link.send(Op.RECOVER, jobs=pending)
            except LinkClosed:
                pass
