"""`sr-web` / `python -m web`: serve the app with a threaded WSGI server (see deploy/ for gunicorn)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from werkzeug.serving import make_server

from web import create_app, shutdown
from web.config import ConfigError, setting_value
from web.http.requestlog import RequestLogHandler


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sr-web", description="Photo upscaler web service.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks a free one)")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        # Each request is logged at debug level, failures and slow answers at info (web/http/requestlog.py).
        level = setting_value("SR_LOG_LEVEL").upper()
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app = create_app()
    except ConfigError as err:
        print(f"sr-web: {err}", file=sys.stderr)
        return 2
    try:
        server = make_server(args.host, args.port, app, threaded=True, request_handler=RequestLogHandler)
    except OSError as err:
        shutdown(app)
        print(f"sr-web: cannot listen on {args.host}:{args.port}: {err.strerror}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    # The actual port matters to whoever started us with --port 0.
    print(f"sr-web: serving on http://{args.host}:{server.server_port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        shutdown(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
