"""The body of the Ray task, run on a worker node: the worker CLI as a process of its own (forked from this Ray worker
process's preloaded launcher, or started plain) in a temporary folder, its
events streamed back, the result's bytes last. Imports only the standard library and `infer` paths."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from infer.worker_process import is_running

if TYPE_CHECKING:
    from infer.launcher import ForkedProcess, Launcher

# Items the task yields besides the worker's own events (theirs are dicts with "event" set by the worker).
PLACED = "sr_placed"  # first: where the job runs (node, task pid, worker pid)
EXITED = "sr_exited"  # after the worker has ended: exit status and its stderr (bounded)

_WORK_ROOT_NAME = "sr-ray-jobs"


@dataclass(frozen=True)
class TaskRequest:
    """What the front end sends with each job, besides the photo's bytes (a separate object in the store)."""

    job_id: str
    input_suffix: str  # ".png": the worker reads the type from the bytes, the name is only for messages
    output_suffix: str  # ".png", ".jpg", ".webp": chooses the output format
    model_name: str  # the front end's model file name, looked up in the node's models folder
    max_pixels: int
    nice: int
    # How the front end names the photo, the result and the model: the worker's messages name the node's
    # files, and are rewritten to these, so that the front end can word them for the uploader as it does locally.
    input_label: str = "the photo"
    output_label: str = "the result"
    model_label: str = "the model"
    denoise: str = "off"
    faces: str = "off"
    face_fidelity: float | None = None
    outscale: int | None = None
    denoise_strength: float | None = None
    repair: str = "off"
    colour: str = "off"
    find_damage: bool = False  # --find-damage: the result is the damage found, as a mask PNG
    start: str = "plain"  # SR_WORKER_START: "preloaded" forks the job from this Ray worker process's launcher


@functools.cache
def node_launcher() -> "Launcher":
    """This Ray worker process's preloaded launcher, started by its first job (which itself starts plain while
    the launcher imports) and kept while the process lives; it dies with it, and its jobs with it."""
    from infer import REPO_ROOT
    from infer.launcher import Launcher, StartKind
    from infer.worker_process import worker_environment

    launcher = Launcher(StartKind.PRELOADED, worker_environment(), REPO_ROOT)
    launcher.start()
    return launcher


def node_model_path(model_name: str, env: Mapping[str, str] = os.environ) -> Path:
    """The model on this node, by the catalog's rule: this node's SR_MODEL_PATH when it names that file, else
    `model_name` in this node's models folder (SR_MODELS_DIR, else the install's models/)."""
    from infer.catalog import model_file_path
    from infer.models import default_in, models_dir

    folder = models_dir(env=env)
    return model_file_path(model_name, folder, default_in(folder, env))


def work_root() -> Path:
    return Path(tempfile.gettempdir()) / _WORK_ROOT_NAME


def sweep_abandoned(root: Path) -> None:
    """Removes job folders whose task process is gone (a task killed by `ray.cancel(force=True)` or with its
    node's raylet cannot clean up after itself). Folder names end in the owning task's pid."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        try:
            pid = int(folder.name.rsplit("-", 1)[-1])
        except ValueError:
            continue
        if pid != os.getpid() and not is_running(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def run_job_on_node(request: TaskRequest, photo: bytes, mask: bytes | None = None) -> Iterator[Any]:
    """Runs one job here; yields PLACED, each worker event as it comes, EXITED, then the result's bytes
    (only when the worker exited 0 and wrote it). `mask`: the job's repair mask, a separate object in the store."""
    import ray  # present on every node; imported here so that this module imports without it

    from infer import worker_process
    from infer.contract import Colour, Denoise, Repair, WorkerCommand, parse_event
    from infer.digests import sha256_of

    root = work_root()
    root.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{request.job_id}-", dir=root))
    # The owner's pid at the end of the name, for sweep_abandoned.
    owned = folder.with_name(f"{folder.name}-{os.getpid()}")
    folder.rename(owned)
    folder = owned
    proc: "subprocess.Popen | ForkedProcess | None" = None
    try:
        source = folder / f"input{request.input_suffix}"
        source.write_bytes(photo)
        del photo
        mask_file = None
        if mask is not None:
            mask_file = folder / "mask.png"
            mask_file.write_bytes(mask)
            del mask
        target = folder / f"{request.job_id}{request.output_suffix}"
        model = node_model_path(request.model_name)

        def relabel(text: str) -> str:
            for path, label in ((source, request.input_label), (target, request.output_label),
                                (model, request.model_label), (folder / "mask.png", "the repair mask")):
                text = text.replace(str(path), label)
            return text

        command = WorkerCommand(source, target, model, request.max_pixels, Denoise(request.denoise),
                                faces=request.faces, face_fidelity=request.face_fidelity,
                                outscale=request.outscale, denoise_strength=request.denoise_strength,
                                repair_mask=mask_file, repair=Repair(request.repair), colour=Colour(request.colour),
                                find_damage=request.find_damage)
        # The job's environment is read now: Ray sets this task's CUDA_VISIBLE_DEVICES in this process.
        env = worker_process.worker_environment()
        if request.start == "preloaded":
            proc = node_launcher().popen(command.argv(), cwd=folder, env=env, nice=request.nice, die_with_parent=True)
        else:
            proc = worker_process.start(command.argv(), cwd=folder, env=env, nice=request.nice, die_with_parent=True)
        context = ray.get_runtime_context()
        yield {
            "event": PLACED,
            "node_id": context.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "task_pid": os.getpid(),
            "worker_pid": proc.pid,
            # What this node runs under the model's name: the front end keys cached results by it.
            "model_sha256": sha256_of(model) if model.is_file() else None,
            "model_path": str(model),
            "model_found": model.is_file(),
        }
        stderr: list[bytes] = []
        logger = threading.Thread(target=worker_process.keep_bounded, args=(proc.stderr, stderr.append), daemon=True)
        logger.start()
        assert proc.stdout is not None
        for raw in proc.stdout:
            # Passed on as JSON objects: the front end parses them as the local backend's reader does.
            event = dict(parse_event(raw).record)
            if event.get("event") in (PLACED, EXITED):
                event = {}
            elif isinstance(event.get("message"), str):
                event["message"] = relabel(event["message"])
            yield event
        returncode = proc.wait()
        logger.join(5)
        text = relabel(b"".join(stderr).decode(errors="replace"))
        yield {"event": EXITED, "returncode": returncode, "stderr": text}
        if returncode == 0 and target.is_file():
            yield target.read_bytes()
    finally:
        if proc is not None:
            worker_process.kill_group(proc.pid)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def kill_job_processes(job_ids: list[str]) -> list[int]:
    """Kills the workers of these jobs on this node (those a previous front end left); returns their pids."""
    root = work_root()
    killed = []
    if not root.is_dir():
        return killed
    prefixes = tuple(f"{job_id}-" for job_id in job_ids)
    for folder in root.iterdir():
        if not folder.name.startswith(prefixes):
            continue
        try:
            task_pid = int(folder.name.rsplit("-", 1)[-1])
        except ValueError:
            continue
        # The worker dies with its task process (parent-death signal); the pid must still be a Ray worker's.
        if is_running(task_pid) and b"ray" in _cmdline(task_pid):
            try:
                os.kill(task_pid, signal.SIGKILL)
                killed.append(task_pid)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(folder, ignore_errors=True)
    return killed
