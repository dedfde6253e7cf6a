"""The built-in server's request log: quiet for ordinary requests, at info for failures and slow answers."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.web.conftest import wait_until
from tests.web.server import start_service_process
from web.http.requestlog import SLOW_SECONDS, RequestLogHandler


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(SLOW_SECONDS + 0.5)
    status = "500 INTERNAL SERVER ERROR" if path == "/boom" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture
def server():
    served = make_server("127.0.0.1", 0, _app, threaded=True, request_handler=RequestLogHandler)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{served.server_port}"
    served.shutdown()
    served.server_close()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_ordinary_requests_are_debug_failures_and_slow_ones_info(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="web.requests")
    assert [_get(f"{server}/{p}") for p in ("ok", "boom", "slow")] == [200, 500, 200]
    wait_until(lambda: len(caplog.records) == 3, timeout=10, what="three request lines")
    levels = {r.getMessage().split('"')[1]: r.levelno for r in caplog.records if r.name == "web.requests"}
    assert levels == {"GET /ok HTTP/1.1": logging.DEBUG, "GET /boom HTTP/1.1": logging.INFO,
                      "GET /slow HTTP/1.1": logging.INFO}, levels
    slow = next(r.getMessage() for r in caplog.records if "/slow" in r.getMessage())
    assert " 200 " in slow and float(slow.split(" in ")[-1].split()[0]) > SLOW_SECONDS, slow


@pytest.mark.parametrize("level,shown", [(None, False), ("debug", True)])
def test_the_service_logs_requests_only_at_debug_level(fsrcnn_model: Path, tmp_path: Path, level: str | None,
                                                       shown: bool) -> None:
    env = {"SR_DATA_DIR": str(tmp_path / "data"), "SR_MODEL_PATH": str(fsrcnn_model),
           **({"SR_LOG_LEVEL": level} if level else {})}
    service = start_service_process(tmp_path / "service.log", env)
    try:
        client = service.client()
        for _ in range(3):
            assert client.get("/healthz").status == 200
        if shown:
            wait_until(lambda: service.log_path.read_text().count("GET /healthz") == 3, timeout=10,
                       what="the requests in the log")
    finally:
        service.terminate()
    log = service.log_path.read_text()
    assert ("GET /healthz" in log) is shown, log
    assert "serving on http://127.0.0.1:" in log
