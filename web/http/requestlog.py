"""The built-in server's request log: each request at debug level; failures (5xx) and slow answers at info."""

from __future__ import annotations

import logging
import time

from werkzeug.serving import WSGIRequestHandler

# An answer that took longer than this (seconds, until its status line was sent) is logged at info level.
SLOW_SECONDS = 2.0

logger = logging.getLogger("web.requests")


class RequestLogHandler(WSGIRequestHandler):
    """werkzeug's request handler with a quieter log: `make run` shows what needs a look, not every poll."""

    def handle_one_request(self) -> None:
        self._began = time.monotonic()
        super().handle_one_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        seconds = time.monotonic() - getattr(self, "_began", time.monotonic())
        status = int(code) if str(code).isdigit() else 0
        level = logging.INFO if status >= 500 or seconds > SLOW_SECONDS else logging.DEBUG
        if not logger.isEnabledFor(level):
            return
        line = getattr(self, "requestline", "") or "-"
        logger.log(level, '%s "%s" %s %s in %.2f s', self.address_string(), line, code, size, seconds)
