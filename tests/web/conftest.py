"""Web test fixtures: tiny photos cut from the shared ones, real models, and real servers on loopback."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from PIL import Image

from tests.web.server import LiveServer, start_live_server, worker_processes


@dataclass(frozen=True)
class Photos:
    """Small test photos (bytes), so that every job stays around a second."""

    small_png: bytes  # 64x48 crop of chelsea
    small_jpg: bytes  # 60x40 crop of coffee
    slow_png: bytes  # 600x400 coffee: seconds of work in one window with `edsr_model_slow`
    wide_jpg: bytes  # 400x300: over a 100 000 pixel limit


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos(shared_photos: Path) -> Photos:
    with Image.open(shared_photos / "chelsea.png") as chelsea, Image.open(shared_photos / "coffee.png") as coffee:
        chelsea, coffee = chelsea.convert("RGB"), coffee.convert("RGB")
        return Photos(
            small_png=_encode(chelsea.crop((100, 60, 164, 108)), "PNG"),
            small_jpg=_encode(coffee.crop((200, 150, 260, 190)), "JPEG"),
            slow_png=_encode(coffee, "PNG"),
            wide_jpg=_encode(coffee.crop((0, 0, 400, 300)), "JPEG"),
        )


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


StartServer = Callable[..., LiveServer]


@pytest.fixture
def start_server(tmp_path: Path, fsrcnn_model: Path) -> Iterator[StartServer]:
    """Starts real servers (FSRCNN x3 unless `model_path` is given) on fresh data folders; stops them after
    the test and checks that no worker process outlived its server."""
    started: list[LiveServer] = []

    def start(data_dir: Path | None = None, **settings: object) -> LiveServer:
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        settings.setdefault("model_path", fsrcnn_model)
        server = start_live_server(data_dir, **settings)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        leftovers = worker_processes(server.data_dir)
        for proc in leftovers:
            proc.kill()
        assert not leftovers, f"worker processes outlived the server: {leftovers}"


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory, fsrcnn_model: Path) -> Iterator[LiveServer]:
    """One server shared by the read-mostly API tests of a module."""
    server = start_live_server(tmp_path_factory.mktemp("web-data"), model_path=fsrcnn_model, worker_start="preloaded")
    yield server
    server.stop()
