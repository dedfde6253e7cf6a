"""Operations endpoints: `/healthz` for load balancers and `/metrics` for Prometheus."""

from __future__ import annotations

import os

from flask import Blueprint, Response

from web.guards.space import data_space
from web.jobs.metrics import CONTENT_TYPE
from web.guards.health import availability
from web.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    s = services()
    backend = s.runner.backend
    backend_health = backend.health()
    # With a remote backend the model lives on the worker nodes, not here.
    model_present = s.config.model_path.is_file() if backend.uses_local_model else None
    folders = {
        "uploads": s.config.uploads_dir,
        "results": s.config.results_dir,
        "state": s.config.state_dir,
    }
    writable = {name: path.is_dir() and os.access(path, os.W_OK | os.X_OK) for name, path in folders.items()}
    state = availability(s.config, backend)
    s.health_log.note(state)
    space = data_space(s.config)
    s.health_log.note(space)
    # A remote backend: whether its live nodes have the default model (they, not this machine, run it).
    check = getattr(backend, "model_check", None)
    node_models = check(s.config.model_path.name) if check is not None else None
    # A missing default is a warning in `notes` (another model stands in); jobs stop only when none can run.
    ok = all(writable.values()) and backend_health.ok and state.ok and space.ok
    reasons = [reason for reason in (state.reason, space.reason) if reason]
    notes = list(state.notes)
    if node_models is not None and node_models.reason:
        (notes if node_models.ok else reasons).append(node_models.reason)
        ok = ok and node_models.ok
    waiting = s.store.waiting_for_node()
    # A remote backend: whether any node can run jobs now, and whether an autoscaler starts one.
    capacity = getattr(backend, "capacity_check", None)
    nodes_now = capacity(waiting) if capacity is not None else None
    if nodes_now is not None:
        if nodes_now.reason:
            (notes if nodes_now.ok else reasons).append(nodes_now.reason)
        ok = ok and nodes_now.ok
    elif waiting:
        # Not unhealthy: a node may be booting. The operator's next step if it lasts is `ray status`.
        notes.append(f"{waiting} job(s) wait for a node that can run them: no node has room now; a cluster with an "
                     "autoscaler starts one (`ray status` on the head shows the demand and pending nodes), a "
                     "cluster without one needs a node added")
    body = {
        "status": "ok" if ok else "unhealthy",
        # Only the file name: this answer is public even when a token is set.
        "model": {"name": s.config.model_path.name, "present": model_present},
        "folders_writable": writable,
        "disk": space.as_json(),
        "backend": {"name": backend.name, "ok": backend_health.ok, "reason": backend_health.reason,
                    **(backend_health.details or {})},
        # The operator's reason and remedy when jobs cannot run (the page only says that they cannot).
        "reason": "; ".join(reasons) or None,
        # Checkpoints dropped into the models folder and not yet scanned (not offered), with the command to run.
        "models_unscanned": list(state.unscanned),
        "notes": notes,
        "queue_length": s.runner.queue_length(),
        "jobs_waiting_for_node": waiting,
        "workers_running": s.runner.workers_running(),
        "concurrency": s.config.concurrency,
    }
    return body, 200 if ok else 503


@bp.get("/metrics")
def metrics() -> Response:
    return Response(services().metrics.render(), content_type=CONTENT_TYPE)
