"""The Ray driver process the service supervises: connects to the cluster, runs one streaming task per job and
relays its stream over the link; it exits when it loses the cluster, and the service starts a fresh one."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from web.backends.ray.link import Link, LinkClosed, Op
from web.backends.ray.address import public_refusal
from infer.launcher import StartKind
from web.backends.ray.autoscaling import Autoscaler, probe as probe_autoscaler
from web.backends.ray.inventory import node_inventory
from web.backends.ray.task import TaskRequest, kill_job_processes, run_job_on_node

log = logging.getLogger("web.backends.ray.driver")  # also when run as __main__

NAMESPACE = "photo-upscaler"
RECONNECT_S = 10.0
RECOVER_TIMEOUT_S = 30.0
# Exit status when the connection to the cluster is lost (Ray's own core worker may end the process first,
# with status 1, when it loses its raylet or the GCS): the service then starts a fresh driver.
EXIT_CLUSTER_LOST = 3
STOP_GRACE_S = 5.0
# How often the worker nodes alive are counted (node-seconds, what a cloud bills); a longer gap between two
# counts (the driver was busy or the cluster away) is counted as at most NODE_GAP_S.
NODE_SAMPLE_S = 10.0
NODE_GAP_S = 60.0
# A resource only the head has.
HEAD_RESOURCE = "node:__internal_head__"


def worker_nodes(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """Worker nodes alive, node id -> kind (`gpu` with a GPU, else `cpu`), from `ray.nodes()`; the head is not one."""
    found: dict[str, str] = {}
    for node in nodes:
        resources = node.get("Resources") or {}
        if node.get("Alive") and HEAD_RESOURCE not in resources:
            found[str(node.get("NodeID"))] = "gpu" if resources.get("GPU", 0) > 0 else "cpu"
    return found


def node_kinds(nodes: dict[str, str]) -> dict[str, int]:
    """How many of these worker nodes are of each kind."""
    kinds: dict[str, int] = {}
    for kind in nodes.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@dataclass(frozen=True)
class DriverSettings:
    """What the driver is told at start (its command line): where the cluster is, what each job asks for."""

    address: str
    allow_public_address: bool
    gpus_per_job: float
    cpus_per_job: float
    worker_start: str = "plain"  # SR_WORKER_START: how each node starts a job's process

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "DriverSettings":
        return cls(**json.loads(text))


class _Refused(Exception):
    """The address is public and SR_RAY_ALLOW_PUBLIC_ADDRESS is not set."""


class Driver:
    """The connection to the cluster and the jobs submitted over it; commands come from the link."""

    def __init__(self, settings: DriverSettings, link: Link):
        self.ray: Any = None  # imported by connect_loop, so that the link is answered meanwhile
        self.settings = settings
        self.link = link
        self._lock = threading.Lock()
        self._remote: Any = None
        self._killer: Any = None
        self._lister: Any = None
        self._generators: dict[str, Any] = {}
        self._pinned: dict[str, str] = {}  # job id -> the node it was sent to, for jobs pinned to nodes
        self._stopping = threading.Event()

    # ---- connection ------------------------------------------------------------------------

    def connect_loop(self) -> None:
        import ray

        self.ray = ray
        while not self._stopping.is_set():
            try:
                self._connect()
            except _Refused as err:
                self._health(False, "SR_RAY_ADDRESS resolves to a public address; not connecting (see the log)")
                log.error("not connecting to Ray: %s", err)
                return
            except Exception as err:
                self._health(False, f"the Ray cluster (SR_RAY_ADDRESS) cannot be reached: {type(err).__name__}")
                log.error("cannot connect to the Ray cluster at %s: %s; retrying in %g s",
                          self.settings.address, err, RECONNECT_S)
            else:
                return
            self._stopping.wait(RECONNECT_S)

    def _connect(self) -> None:
        from web.backends.ray.address import RayAddress, check_reachable, public_addresses

        ray = self.ray
        address = RayAddress.parse(self.settings.address)
        if address.host is not None and not self.settings.allow_public_address:
            public = public_addresses(address.host)
            if public:
                raise _Refused(public_refusal(self.settings.address, public))
        if address.host is not None and address.port is not None:
            check_reachable(address.host, address.port)
        if not ray.is_initialized():
            ray.init(address=self.settings.address, namespace=NAMESPACE, log_to_driver=False,
                     logging_level=logging.WARNING)
        # The resources go into the declaration itself: Ray fixes max_calls there (`.options()` cannot
        # change it). Plain starts: every job gets a fresh Ray worker process that exits after it. Preloaded:
        # the Ray worker process is kept for the next job, with the launcher it started (task.py); the job is
        # still a process of its own either way, which holds the GPU only while it runs.
        remote = ray.remote(
            num_gpus=self.settings.gpus_per_job,
            num_cpus=self.settings.cpus_per_job,
            max_calls=0 if self.settings.worker_start == StartKind.PRELOADED.value else 1,
            max_retries=0,  # a job is never run twice behind the uploader's back (docs/scaling.md)
            num_returns="streaming",
        )(run_job_on_node)
        killer = ray.remote(num_cpus=0, max_retries=0)(kill_job_processes)
        self._lister = ray.remote(num_cpus=0, max_retries=0)(node_inventory)
        with self._lock:
            self._remote, self._killer = remote, killer
        log.info("connected to the Ray cluster at %s (driver pid %d)", self.settings.address, os.getpid())
        self._health(True, None)
        threading.Thread(target=self._count_nodes, name="sr-driver-nodes", daemon=True).start()

    def _count_nodes(self) -> None:
        """Sends, every NODE_SAMPLE_S, the worker nodes alive and their seconds since the last count."""
        last: float | None = None
        alive: dict[str, str] = {}
        while not self._stopping.wait(0 if last is None else NODE_SAMPLE_S):
            now = time.monotonic()
            gap = 0.0 if last is None else min(now - last, NODE_GAP_S)
            # Nodes alive through the interval are counted with what was alive at its start.
            seconds = {kind: n * gap for kind, n in node_kinds(alive).items()}
            try:
                before, alive = alive, worker_nodes(self.ray.nodes())
            except Exception as err:
                log.warning("cannot count the Ray nodes: %r", err)
            else:
                for node_id in sorted(set(alive) - set(before)):
                    threading.Thread(target=self._list_models, args=(node_id,), name="sr-driver-models",
                                     daemon=True).start()
            last = now
            autoscaler = probe_autoscaler(self.ray) if self.ray is not None else Autoscaler.UNKNOWN
            self._send(Op.NODES, seconds=seconds, alive=node_kinds(alive), ids=sorted(alive),
                       autoscaler=autoscaler.value)

    def _list_models(self, node_id: str) -> None:
        """Asks a node that has joined which models it has: the front end offers them and /healthz checks them."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            ref = self._lister.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
            inventory = self.ray.get(ref, timeout=RECOVER_TIMEOUT_S)
        except Exception as err:
            log.warning("cannot list the models of Ray node %s: %r", node_id, err)
            return
        self._send(Op.MODELS, node=node_id, **inventory)

    def _health(self, ok: bool, reason: str | None) -> None:
        self._send(Op.HEALTH, ok=ok, reason=reason)

    def cluster_lost(self, err: BaseException) -> None:
        """Ray cannot be trusted to come back in this process: every job's stream ends, and a fresh driver
        connects again (the service starts it)."""
        log.error("lost contact with the Ray cluster: %r; the driver exits and the service starts a new one", err)
        with self._lock:
            jobs = list(self._generators)
        for job_id in jobs:
            self._send(Op.END, job=job_id, lost="cluster_lost", detail=f"lost contact with the Ray cluster: {err!r}")
        self._health(False, f"lost contact with the Ray cluster (SR_RAY_ADDRESS): {type(err).__name__}")
        os._exit(EXIT_CLUSTER_LOST)

    # ---- commands ----------------------------------------------------------------------------

    def serve(self) -> int:
        """Answers the link until the service says stop or goes away."""
        for message in self.link.messages():
            op = message["op"]
            if op == Op.PING.value:
                self._send(Op.PONG)
            elif op == Op.SUBMIT.value:
                threading.Thread(target=self._submit, args=(message,), name="sr-driver-job", daemon=True).start()
            elif op == Op.CANCEL.value:
                # In a thread of its own: a call into Ray may block while the cluster is away, pings may not.
                threading.Thread(target=self._cancel, args=(str(message.get("job")), bool(message.get("force"))),
                                 name="sr-driver-cancel", daemon=True).start()
            elif op == Op.RECOVER.value:
                jobs = [str(j) for j in message.get("jobs") or []]
                threading.Thread(target=self._recover, args=(jobs,), name="sr-driver-recover", daemon=True).start()
            elif op == Op.STOP.value:
                break
        else:
            log.warning("the service has gone; the Ray driver stops")
        self._stopping.set()
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        if self.ray is None:
            return
        stopper = threading.Thread(target=self.ray.shutdown, daemon=True)
        stopper.start()
        stopper.join(STOP_GRACE_S)

    def _send(self, op: Op, **fields: Any) -> None:
        try:
            self.link.send(op, **fields)
        except LinkClosed:
            pass  # the service has gone: serve() ends and so does this process

    def _submit(self, message: dict[str, Any]) -> None:
        job_id = str(message.get("job"))
        with self._lock:
            remote = self._remote
        if remote is None:
            self._send(Op.REFUSED, job=job_id, reason="not connected to the Ray cluster")
            return
        try:
            request = TaskRequest(**message["request"])
            data = Path(message["input"]).read_bytes()
            mask_data = Path(message["mask"]).read_bytes() if message.get("mask") else None
        except (KeyError, TypeError, OSError) as err:
            self._send(Op.REFUSED, job=job_id, reason=f"the job could not be read: {err!r}")
            return
        try:
            photo = self.ray.put(data)
            del data
            # The repair mask the same way as the photo: its own object, fetched by the node that runs the task.
            mask = self.ray.put(mask_data) if mask_data is not None else None
            del mask_data
            options: dict[str, Any] = {"name": f"sr-job-{job_id}"}
            node = self._pin(job_id, [str(n) for n in message.get("nodes") or []])
            if node is not None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
            generator = remote.options(**options).remote(request, photo, mask)
        except Exception as err:
            self._send(Op.REFUSED, job=job_id, reason=f"submitting the job to Ray failed: {err!r}")
            self.cluster_lost(err)
            return
        with self._lock:
            self._generators[job_id] = generator
        self._send(Op.SUBMITTED, job=job_id)
        self._consume(job_id, generator, Path(message["result_temp"]))

    def _consume(self, job_id: str, generator: Any, result_temp: Path) -> None:
        ray = self.ray
        import ray.exceptions as ray_errors

        lost: str | None = None
        detail: str | None = None
        try:
            for ref in generator:
                item = ray.get(ref)
                if isinstance(item, bytes):
                    self._write_result(job_id, item, result_temp)
                elif isinstance(item, dict):
                    self._send(Op.ITEM, job=job_id, item=item)
        except ray_errors.RayTaskError as err:
            # An exception inside the task itself (not the worker's failure, which is an exit code).
            detail = f"the Ray task failed: {err}"
        except (
            ray_errors.WorkerCrashedError,
            ray_errors.NodeDiedError,
            ray_errors.LocalRayletDiedError,
            ray_errors.ObjectLostError,
            ray_errors.TaskCancelledError,
            ray_errors.OutOfMemoryError,
            ray_errors.TaskUnschedulableError,  # the node it was pinned to has gone
        ) as err:
            lost, detail = "node_lost", f"the task's process or node was lost: {type(err).__name__}"
        except Exception as err:
            self.cluster_lost(err)
            return
        finally:
            with self._lock:
                self._generators.pop(job_id, None)
                self._pinned.pop(job_id, None)
        self._send(Op.END, job=job_id, lost=lost, detail=detail)

    def _pin(self, job_id: str, nodes: list[str]) -> str | None:
        """The node, among `nodes` (those known to have the job's model, sent only when others lack it), with the
        fewest of this driver's pinned jobs: Ray places a task on one named node, not on a set of them."""
        if not nodes:
            return None
        with self._lock:
            load = {node: 0 for node in nodes}
            for pinned in self._pinned.values():
                if pinned in load:
                    load[pinned] += 1
            node = min(nodes, key=lambda n: load[n])
            self._pinned[job_id] = node
        return node

    def _write_result(self, job_id: str, data: bytes, temp: Path) -> None:
        """Into the service's temporary name (the service renames it, or removes it if the job has gone)."""
        try:
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            temp.unlink(missing_ok=True)
            log.error("job %s: cannot write its result: %s", job_id, err)
            return
        self._send(Op.RESULT, job=job_id, path=str(temp))

    def _cancel(self, job_id: str, force: bool) -> None:
        with self._lock:
            generator = self._generators.get(job_id)
        if generator is None:
            return
        try:
            self.ray.cancel(generator, force=force)
        except Exception:
            log.exception("job %s: cancelling its Ray task failed (force=%s)", job_id, force)

    def _recover(self, job_ids: list[str]) -> None:
        """Kills, on every live node, any worker these jobs (left by a previous service) still have running."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        with self._lock:
            killer = self._killer
        if killer is None or not job_ids:
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
        except Exception:
            log.exception("could not end the Ray tasks of %d interrupted job(s)", len(job_ids))
            return
        if killed:
            log.warning("killed %d task process(es) left by the previous service: %s", len(killed), killed)
        self._send(Op.RECOVERED, jobs=job_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sr-ray-driver", description="The Ray driver of sr-web (started by it).")
    parser.add_argument("--fd", type=int, required=True, help="the service's end of the socket pair")
    parser.add_argument("--settings", required=True, help="DriverSettings as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    link = Link(socket.socket(fileno=args.fd))
    driver = Driver(DriverSettings.from_json(args.settings), link)
    threading.Thread(target=driver.connect_loop, name="sr-driver-connect", daemon=True).start()
    code = driver.serve()
    link.close()
    # Ray's threads may still hold the interpreter; nothing of this process is needed any more.
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
