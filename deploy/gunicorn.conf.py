"""Gunicorn settings for the photo upscaler: one process with many threads.

Run from the repository root:  gunicorn -c deploy/gunicorn.conf.py
"""

import logging
import sys

from web.config import setting_value  # the defaults and checks of SR_BIND and the others below

wsgi_app = "web:create_app()"
bind = setting_value("SR_BIND")

# Exactly one worker process. The job queue, the supervisor threads and the worker processes they
# start all live inside the app's process: with several gunicorn workers each would keep its own
# queue, SR_CONCURRENCY would be multiplied by their number, and a job queued in one process could
# not be followed from another. Requests are served by threads instead; the model never runs here,
# so the service itself needs little CPU.
workers = 1
worker_class = "gthread"
# Each open /events stream and each waiting POST /upload holds a thread for as long as its job runs;
# the app lets at most SR_MAX_EVENT_STREAMS streams be open and SR_MAX_SYNC_WAITS uploads wait (each a
# quarter of these threads unless set), and refuses to start where together they could take them all.
threads = setting_value("SR_WEB_THREADS")

# The app starts its threads when it is created; they must start in the worker, not in a master
# that then forks (threads do not survive a fork).
preload_app = False
# Recycling the worker would kill the jobs it is running.
max_requests = 0
# gthread answers the arbiter's heartbeat from its own main loop, so long requests do not trip this.
timeout = 60
# On SIGTERM, in-flight requests get this long; running jobs are then stopped and marked failed.
graceful_timeout = 20
keepalive = 5

# Uploads are checked by the app itself (SR_MAX_UPLOAD_MB); these only bound the request head.
limit_request_line = 8190
limit_request_fields = 100

# Off unless SR_ACCESS_LOG names a file or "-" (standard output): every poll of a job would be a line,
# and formatting them costs about a third of the service's throughput (docs/benchmarks.md). The
# reverse proxy in front usually keeps an access log anyway.
_access = setting_value("SR_ACCESS_LOG")
accesslog = None if _access.lower() in ("off", "none", "") else _access
errorlog = "-"
loglevel = setting_value("SR_LOG_LEVEL")

# The app's own lines (the bounds in force at start, a client that went away) go where gunicorn's do.
_app_log = logging.getLogger("web")
_app_log.setLevel(loglevel.upper())
if not _app_log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                            "%Y-%m-%d %H:%M:%S %z"))
    _app_log.addHandler(_handler)


def worker_exit(server, worker):
    """Stop the runner (and its worker processes) before the process goes."""
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        from web import shutdown

        shutdown(app)
