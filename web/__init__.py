"""Flask front end: an upload page and JSON API in front of one worker process per job."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any, Mapping

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from web.http import api, auth, damage, ops, owners, pages
from web.jobs.cleanup import Cleaner
from web.jobs.damage import DamageFinder
from web.backends import BackendUnavailable, create_backend
from web.config import MIN_TOKEN_LENGTH, ConfigError, config_from_env
from web.http.errors import register_error_handlers
from web.jobs.finishing import Finisher
from web.jobs.intake import Intake
from web.jobs.store import JobStore
from web.jobs.cache import ResultCache
from web.jobs.metrics import Metrics, Snapshot
from web.guards.health import HealthLog
from web.jobs.runner import Runner
from web.services import EXTENSION_KEY, Services
from web.guards.owner_ids import OwnerIds
from web.guards.sessions import SessionBook, import_signed_out_file
from web.guards.shares import StreamSlots
from web.guards.signins import SignInGuard

log = logging.getLogger(__name__)

# Room for the multipart envelope and the small form fields around the photo itself.
FORM_OVERHEAD_BYTES = 256 * 1024

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Builds the app from SR_* variables; `test_config` overrides settings by their Config field name
    (lower case) or Flask's own (upper case). Starts the job runner and the clean-up thread."""
    test_config = dict(test_config or {})
    flask_settings = {k: v for k, v in test_config.items() if k.isupper()}
    config = config_from_env().with_overrides({k: v for k, v in test_config.items() if not k.isupper()})

    for folder in (config.uploads_dir, config.results_dir, config.state_dir, config.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes + config.max_mask_bytes + FORM_OVERHEAD_BYTES
    app.config.update(flask_settings)
    app.url_map.converters["job_id"] = api.JobIdConverter
    if config.behind_proxy:
        # One reverse proxy in front (TLS, a path prefix): trust its X-Forwarded-* headers, so that
        # the sign-in cookie is marked Secure and links carry the prefix. The prefix only when told: a
        # proxy that passes a client's own X-Forwarded-Prefix on would let it rewrite its links and cookies.
        prefix = 1 if config.trust_forwarded_prefix else 0
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=prefix)  # type: ignore[method-assign]

    try:
        backend = create_backend(config)
    except BackendUnavailable as err:
        raise ConfigError(str(err)) from None
    backend.start()
    store = JobStore(config.db_path)
    metrics = Metrics()
    # With the model on remote nodes, the cache keys a job by the model content the nodes report running.
    cache = ResultCache(config, store, backend.name,
                        None if backend.uses_local_model else getattr(backend, "node_model_digest", lambda _: None))
    finisher = Finisher(config, store, metrics)
    runner = Runner(config, store, metrics, backend, finisher, cache)
    health_log = HealthLog()
    metrics.read_gauges_from(lambda: _snapshot(runner, store))
    cleaner = Cleaner(config, store)
    app.extensions[EXTENSION_KEY] = Services(
        config=config,
        store=store,
        runner=runner,
        intake=Intake(config, store, runner, cache, finisher, health_log),
        metrics=metrics,
        cleaner=cleaner,
        event_streams=StreamSlots(config.stream_limit, config.owner_share),
        sync_waits=threading.BoundedSemaphore(config.sync_wait_limit),
        health_log=health_log,
        sessions=SessionBook(config.auth_token, config.session_ttl_h * 3600, store),
        sign_ins=SignInGuard(),
        owner_ids=OwnerIds(store),
        damage=DamageFinder(config, backend),
    )
    import_signed_out_file(config.state_dir / "signed-out.json", store)
    log.info("%s", config.thread_bounds())
    if config.auth_token and len(config.auth_token) < MIN_TOKEN_LENGTH:
        log.warning("SR_AUTH_TOKEN is %d character(s) long, which can be guessed; it is allowed by "
                    "SR_ALLOW_SHORT_TOKEN=1, for a service reachable on loopback only", len(config.auth_token))

    register_error_handlers(app)
    app.before_request(auth.require_token)
    app.after_request(owners.issue_cookie)
    app.after_request(_security_headers)
    for blueprint in (api.bp, auth.bp, damage.bp, ops.bp, pages.bp):
        app.register_blueprint(blueprint)

    runner.start()
    cleaner.start()
    atexit.register(shutdown, app)
    return app


def _snapshot(runner: Runner, store: JobStore) -> Snapshot:
    """What /metrics reads at scrape time; node counts only where the backend has a cluster (Ray)."""
    usage = getattr(runner.backend, "node_usage", None)
    nodes = usage() if usage is not None else None
    return Snapshot(runner.queue_length(), runner.workers_running(), store.counts(), store.waiting_for_node(),
                    node_seconds=dict(nodes.seconds) if nodes else {}, nodes_alive=dict(nodes.alive) if nodes else {})


def shutdown(app: Flask) -> None:
    """Stops the clean-up thread and the runner (killing running workers); safe to call twice."""
    services: Services = app.extensions[EXTENSION_KEY]
    services.cleaner.stop()
    services.runner.stop()
    services.runner.backend.close()


def _security_headers(response: Response) -> Response:
    if request.endpoint != "static":
        # Jobs, results, the page and the sign-in form belong to one browser (its owner cookie, its
        # session): no shared cache may keep them, nor the browser's own on disk.
        response.headers["Cache-Control"] = "private, no-store"
        response.vary.add("Cookie")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response
