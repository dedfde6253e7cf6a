"""Starting the service with SR_BACKEND=ray when it cannot work: Ray missing, a public address, no cluster there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infer import REPO_ROOT
from tests.ray.conftest import requires_ray
from tests.web.conftest import Photos, wait_until
from tests.web.server import start_service_process
from web import create_app
from web.guards.health import UNAVAILABLE_TEXT
from web.backends import check_backend_settings
from web.config import Config, ConfigError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_ray_installed_the_service_refuses_to_start_and_says_what_to_install(tmp_path: Path) -> None:
    # Ray made unimportable in the child, as on a front end installed without the `ray` extra.
    code = "import sys; sys.modules['ray'] = None; from web.__main__ import main; sys.exit(main(['--port', '0']))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    env.update({"SR_BACKEND": "ray", "SR_DATA_DIR": str(tmp_path / "data")})
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "pip install -e '.[ray]'" in proc.stderr


@pytest.mark.parametrize("address", ["203.0.113.7:6379", "8.8.8.8:6379", "[2001:db8::1]:6379"])
def test_a_public_cluster_address_is_refused_before_anything_is_sent(tmp_path: Path, address: str) -> None:
    # Refused by the Ray backend's settings check, before the backend exists: no connection is ever tried.
    with pytest.raises(ConfigError, match="SR_RAY_ALLOW_PUBLIC_ADDRESS"):
        create_app({"data_dir": tmp_path / "data", "backend": "ray", "ray_address": address})
    allowed = Config().with_overrides({"backend": "ray", "ray_address": address, "ray_allow_public_address": True})
    check_backend_settings(allowed)


@pytest.mark.parametrize(
    "address", ["auto", "127.0.0.1:6379", "10.0.0.5:6379", "172.20.1.2:6379", "192.168.1.9:6379",
                "100.64.3.4:6379", "[fd00::5]:6379", "head:6379"]
)
def test_loopback_private_and_named_addresses_are_accepted(address: str) -> None:
    check_backend_settings(Config().with_overrides({"backend": "ray", "ray_address": address}))


def test_ray_client_addresses_are_refused_with_what_to_use_instead() -> None:
    # Ray Client does not carry streaming generators, which bring a job's progress back as it happens.
    with pytest.raises(ConfigError, match="head:6379"):
        check_backend_settings(Config().with_overrides({"backend": "ray", "ray_address": "ray://10.0.0.5:10001"}))


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not one of: local, ray"):
        create_app({"data_dir": tmp_path / "data", "backend": "slurm"})


@requires_ray
def test_cluster_unreachable_at_start_service_answers_healthz_503_and_uploads_503(
    tmp_path: Path, photos: Photos
) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    data = tmp_path / "data"
    env = {"SR_DATA_DIR": str(data), "SR_BACKEND": "ray", "SR_RAY_ADDRESS": address}
    service = start_service_process(tmp_path / "service.log", env, timeout=60)
    try:
        client = service.client()
        health = client.get("/healthz")
        assert health.status == 503
        body = health.json()
        assert body["status"] == "unhealthy"
        assert body["backend"]["name"] == "ray" and body["backend"]["ok"] is False
        assert "Ray cluster" in body["backend"]["reason"]
        # The operator's details stay out of the public answer.
        assert address not in health.body.decode()

        reply = client.upload(photos.small_png, filename="holiday.png")
        assert reply.status == 503
        error = reply.json()["error"]
        assert error["code"] == "unavailable"
        assert error["message"] == UNAVAILABLE_TEXT
        assert reply.header("Retry-After") == "60"
        assert [p.name for p in (data / "uploads").iterdir() if p.name != ".gitkeep"] == []
        # Once the first attempt has failed, the reason says so, and the log tells the operator where it tried.
        wait_until(lambda: "cannot be reached" in (client.get("/healthz").json()["backend"]["reason"] or ""),
                   timeout=60, interval=0.5, what="the first connection attempt to fail")
        assert address in (tmp_path / "service.log").read_text(errors="replace")
        assert client.get("/healthz").status == 503
    finally:
        service.terminate()
