"""The deploy paths' install steps for real, each in a fresh virtual environment that stands for the machine or
image: the container recipe's steps (deploy/container/build.sh) with the KubeRay head started as the manifest
says and probed as KubeRay probes it, and `ray up`'s setup commands from deploy/ray/cluster.yaml, up to the AWS
node provider its autoscaler builds. No container runtime, registry or cloud is reachable here: docs/scaling.md
says what is left."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.deploy.deployfiles import BUILD_SCRIPT, CLUSTER_YAML, cluster_config, containers, free_port, manifests
from tests.helpers import copy_checkout
from tests.ray.handrun import HandRunCluster, hand_run, operator_env  # noqa: F401 (a fixture)
from tests.web.conftest import wait_until

pytestmark = [pytest.mark.slow]
pytest.importorskip("ray")

POD_IP = "127.0.0.5"  # the head pod's address, a loopback address of its own


def _run(command: list[str] | str, cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(command, str), executable="/bin/bash" if isinstance(command, str) else None,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _ready_but_for_the_autoscaler(status: int, body: str) -> bool:
    """The readiness probe's answer with the pod's Ray head: 200, or the one 503 a head without KubeRay's
    in-tree autoscaler gives while no GPU pod runs (the manifest enables that autoscaler; it cannot run here, so
    this head has none, and no worker node either)."""
    if status == 200:
        return True
    if status != 503 or not body:
        return False
    health = json.loads(body)
    return (health["backend"].get("autoscaler") == "absent" and health["backend"].get("worker_nodes_alive") == 0
            and "this cluster has no autoscaler" in (health["reason"] or "")
            and all(ok for ok in health["folders_writable"].values()))


def test_container_steps_build_both_images_and_the_kuberay_hand_run_runs_as_written(
    tmp_path: Path, hand_run: HandRunCluster
) -> None:
    env = operator_env()
    source = copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    started = time.monotonic()
    _run([str(BUILD_SCRIPT), "wheel", str(source), str(dist)], tmp_path, env)
    image = tmp_path / "image"  # the image's Python
    venv.create(image, with_pip=True)
    python = image / "bin" / "python"
    assert "photo-upscaler web: installed and imported" in _run([str(BUILD_SCRIPT), "install", "web", str(dist), str(python)], tmp_path, env)
    web_s = time.monotonic() - started

    # The head pod: `ray start --head` with the manifest's rayStartParams and the token KubeRay hands it.
    raycluster = manifests()["RayCluster"]
    params = raycluster["spec"]["headGroupSpec"]["rayStartParams"]
    token = secrets.token_hex(32)
    pod_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    gcs_port, dashboard_port, agent_port = free_port(POD_IP), free_port(), free_port(POD_IP)
    hand_run.ray, hand_run.env = image / "bin" / "ray", pod_env
    hand_run.run("start", "--head", f"--node-ip-address={POD_IP}", f"--port={gcs_port}",
                 *(f"--{key}={value}" for key, value in params.items()),
                 f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}",
                 f"--temp-dir={hand_run.temp_dir}", "--disable-usage-stats")
    assert "Ray runtime started." in hand_run.log[-1], hand_run.log[-1]
    # KubeRay's probes for Ray 2.53 and later: the node's dashboard agent, on the pod's address; before
    # that, also the dashboard's GCS check on 8265 (here another port), inside the pod.
    wait_until(lambda: _get(f"http://{POD_IP}:{agent_port}/api/healthz")[0] == 200, timeout=60, interval=0.5,
               what="the head's dashboard agent to answer KubeRay's probe")
    assert "success" in _get(f"http://127.0.0.1:{dashboard_port}/api/gcs_healthz")[1]

    # The front end's container: its command and environment from the manifest; the image's paths are
    # the build's, the pod's volume a folder, the Ray head the one above (in the pod: 127.0.0.1:6379).
    front_end = containers(raycluster)["sr-web"]
    command = [part.replace("/usr/local/bin", str(image / "bin")).replace("/opt/photo-upscaler", str(dist))
               for part in front_end["command"]]
    secrets_of = {"auth-token": secrets.token_urlsafe(24), "auth_token": token}
    container_env = {e["name"]: e["value"] if "value" in e else secrets_of[e["valueFrom"]["secretKeyRef"]["key"]]
                     for e in front_end["env"]}
    web_port = free_port()
    container_env.update(SR_RAY_ADDRESS=f"{POD_IP}:{gcs_port}", SR_DATA_DIR=str(tmp_path / "data"),
                         SR_BIND=f"127.0.0.1:{web_port}")
    workdir = tmp_path / "home-ray"
    workdir.mkdir()
    with open(tmp_path / "sr-web.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=workdir, env={**env, **container_env}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    try:
        probe = front_end["readinessProbe"]["httpGet"]
        answers: list[tuple[int, str]] = []

        def ready() -> bool:
            answers.append(_get(f"http://127.0.0.1:{web_port}{probe['path']}"))
            return _ready_but_for_the_autoscaler(*answers[-1]) or proc.poll() is not None

        wait_until(ready, timeout=90, interval=0.5, what="the front end's readiness probe")
        assert proc.poll() is None, (tmp_path / "sr-web.log").read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(30)

    # The worker image's step on top (the same Python; it adds the engines).
    started = time.monotonic()
    assert "photo-upscaler worker: installed and imported" in _run([str(BUILD_SCRIPT), "install", "worker", str(dist), str(python)], tmp_path, env)
    print(f"\ncontainer steps: wheel + web image {web_s:.0f} s, worker image on top {time.monotonic() - started:.0f} s")


def test_ray_up_setup_commands_install_the_aws_provider_on_the_head_and_the_engines_on_nodes(tmp_path: Path) -> None:
    config = cluster_config()
    home = tmp_path / "home"
    home.mkdir()
    # setup_commands[0] clones the project into ~/photo-upscaler: a copy of this checkout stands for it.
    clone = next(c for c in config["setup_commands"] if "git clone" in c)
    assert "photo-upscaler" in clone
    copy_checkout(home / "photo-upscaler")
    env = {**operator_env(), "HOME": str(home)}
    started = time.monotonic()
    for command in [c for c in config["setup_commands"] if c != clone] + config["head_setup_commands"]:
        _run(command, home, env)
    assert "export RAY_AUTH_MODE=token" in (home / ".bashrc").read_text()
    python = home / "photo-upscaler" / ".venv" / "bin" / "python"
    # What the head's autoscaler (and `ray up` on the operator's machine) builds first: the AWS provider.
    code = ("import sys, yaml; from ray.autoscaler._private.providers import _get_node_provider; "
            "c = yaml.safe_load(open(sys.argv[1])); p = _get_node_provider(c['provider'], c['cluster_name']); "
            "print(type(p).__name__)")
    built = _run([str(python), "-c", code, str(CLUSTER_YAML)], home, env)
    assert built.splitlines()[-1] == "AWSNodeProvider", built  # after Ray's own lines
    assert _run([str(python), "-c", "import ray.dashboard, aiohttp; print('ok')"], home, env).strip() == "ok"
    head_s = time.monotonic() - started

    # The worker nodes' pip part (`sr-models fetch` downloads, which nothing here can).
    started = time.monotonic()
    for command in config["worker_setup_commands"]:
        pip_part = command.split(" && .venv/bin/sr-models fetch")[0]
        assert "pip install" in pip_part
        _run(pip_part, home, env)
    _run([str(python), "-c", "import cv2, torch, spandrel, ray.dashboard"], home, env)
    print(f"\nray up setup: head {head_s:.0f} s, worker pip part {time.monotonic() - started:.0f} s")
