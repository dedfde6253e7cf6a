"""The deploy files read as their tools read them: cluster.yaml by Ray's own schema and checks, the KubeRay
manifests by the RayCluster CRD's schema, the systemd units by systemd-analyze, and every SR_* name in them
by the service's settings table."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from infer import REPO_ROOT
from tests.deploy.deployfiles import (
    CRD_SCHEMA, cluster_config, containers, deploy_texts, manifests, sr_names, units,
)
from web.config import SETTINGS, config_from_env

ray = pytest.importorskip("ray")


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


# ---- ray up: deploy/ray/cluster.yaml ---------------------------------------------------------------------


def test_cluster_yaml_passes_rays_own_schema_and_checks() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = cluster_config()
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    # What `ray up` does with it before anything is started: defaults filled in, then checked again.
    validate_config(prepare_config(config))


def test_the_extras_give_the_dashboard_and_the_aws_provider() -> None:
    extras = _extras()
    assert any(req.startswith("ray[default]==") for req in extras["ray"]), extras["ray"]
    assert any(req.startswith("boto3") for req in extras["aws"]) and "photo-upscaler[ray]" in extras["aws"]


def test_the_head_installs_what_its_autoscaler_needs_and_the_nodes_what_jobs_need() -> None:
    config = cluster_config()
    head = " ".join(config["head_setup_commands"])
    workers = " ".join(config["worker_setup_commands"])
    assert "pip install -e '.[aws]'" in head
    assert "pip install -e '.[worker,ray]'" in workers and "sr-models fetch" in workers


def test_no_job_lands_on_the_head_and_every_ray_start_uses_the_token() -> None:
    config = cluster_config()
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0, "GPU": 0}
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--num-cpus=0" in head_start and "--num-gpus=0" in head_start
    worker_start = next(c for c in config["worker_start_ray_commands"] if "ray start" in c)
    for command in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token" in command
    assert "SR_MODELS_DIR=" in worker_start
    front_end = next(c for c in config["head_start_ray_commands"] if "nohup" in c)
    assert "RAY_AUTH_MODE=token" in front_end and "SR_BACKEND=ray" in front_end
    # The token reaches every node where Ray looks for it.
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_the_aws_provider_cannot_start_without_boto3_here_which_is_why_the_aws_extra_exists() -> None:
    # The failure the `aws` extra prevents, as `ray up` meets it (this test environment has no boto3).
    from ray.autoscaler._private.providers import _get_node_provider

    if _has("boto3"):
        pytest.skip("boto3 is installed here; tests/deploy/test_install_paths.py checks the provider with it")
    config = cluster_config()
    with pytest.raises(ImportError, match="boto3"):
        _get_node_provider(config["provider"], config["cluster_name"])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---- KubeRay: deploy/ray/raycluster.yaml --------------------------------------------------------------


def test_raycluster_passes_the_crds_schema() -> None:
    schema = json.loads(CRD_SCHEMA.read_text())
    raycluster = manifests()["RayCluster"]
    assert raycluster["apiVersion"] == "ray.io/v1"
    jsonschema.validate(raycluster, schema)


def test_raycluster_schema_catches_a_missing_required_field() -> None:
    # The check is real: KubeRay requires these.
    schema = json.loads(CRD_SCHEMA.read_text())
    broken = manifests()["RayCluster"]
    del broken["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(broken, schema)


def test_raycluster_head_takes_no_jobs_and_uses_ray_token_auth() -> None:
    raycluster = manifests()["RayCluster"]
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    head_params = spec["headGroupSpec"]["rayStartParams"]
    assert head_params["num-cpus"] == "0" and head_params["num-gpus"] == "0"
    front_end = containers(raycluster)["sr-web"]
    env = {e["name"]: e for e in front_end["env"]}
    # KubeRay puts the token only into the Ray container; the front end's driver needs it too.
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    token_ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token_ref == {"name": spec["authOptions"]["secretName"], "key": "auth_token"}


def test_raycluster_front_end_command_runs_from_any_folder() -> None:
    raycluster = manifests()["RayCluster"]
    front_end = containers(raycluster)["sr-web"]
    assert all(Path(part).is_absolute() for part in front_end["command"] if "/" in part), front_end["command"]
    assert Path(front_end["workingDir"]).is_absolute()
    dockerfile = (REPO_ROOT / "deploy" / "container" / "Dockerfile").read_text()
    # The files the command names are where the image puts them.
    assert "/opt/photo-upscaler/gunicorn.conf.py" in dockerfile and front_end["command"][-1] == "/opt/photo-upscaler/gunicorn.conf.py"


def test_raycluster_images_are_the_container_recipes_targets() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "container" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    assert {"web", "worker"} <= targets
    images = {name: c["image"] for name, c in containers(manifests()["RayCluster"]).items()}
    assert images["ray-head"] == images["sr-web"]
    for target in ("web", "worker"):
        assert f"--target {target}" in dockerfile
    assert all(image.endswith(":0.1.0") for image in images.values())


def test_front_end_settings_in_the_manifest_are_accepted_by_the_service(tmp_path: Path) -> None:
    front_end = containers(manifests()["RayCluster"])["sr-web"]
    env = {e["name"]: e["value"] for e in front_end["env"] if "value" in e and e["name"].startswith("SR_")}
    env["SR_DATA_DIR"] = str(tmp_path)  # the pod's volume
    config = config_from_env(env)
    assert config.backend == "ray" and config.ray_address == "127.0.0.1:6379"


# ---- every deploy file: SR_* names are settings ------------------------------------------------------


def test_every_sr_name_in_the_deploy_files_is_a_setting() -> None:
    known = {row.env for row in SETTINGS}
    for path, text in deploy_texts().items():
        unknown = sr_names(text) - known
        assert not unknown, f"{path.relative_to(REPO_ROOT)} names {sorted(unknown)}, which the service does not read"


def test_a_misspelt_setting_would_be_caught() -> None:
    assert sr_names("SR_RAY_GPU_PER_JOB=1 SR_BACKEND=ray") - {row.env for row in SETTINGS} == {"SR_RAY_GPU_PER_JOB"}


# ---- systemd units --------------------------------------------------------------------------------------


def test_one_front_end_unit_for_each_backend() -> None:
    found = units()
    assert found["sr-web.service"].environment()["SR_BACKEND"] == "local"
    assert found["sr-web-ray.service"].environment()["SR_BACKEND"] == "ray"


def test_the_ray_front_end_unit_can_reach_the_raylet_and_read_a_home_install() -> None:
    unit = units()["sr-web-ray.service"]
    # The driver attaches to the raylet through sockets under /tmp/ray: a private /tmp would hide them.
    assert unit.one("PrivateTmp") in (None, "false", "no")
    assert "/tmp/ray" in (unit.one("ReadWritePaths") or "").split()
    assert unit.one("ProtectHome") in ("read-only", "false", "no", None)
    assert unit.environment()["RAY_AUTH_MODE"] == "token"


def test_ray_node_units_take_no_jobs_on_the_head_and_give_nodes_their_models_folder() -> None:
    found = units()
    head = found["ray-head.service"]
    assert "--num-cpus=0" in head.one("ExecStart") and "--num-gpus=0" in head.one("ExecStart")
    node = found["ray-node.service"]
    assert "SR_MODELS_DIR" in node.environment()
    for unit in (head, node):
        assert "--block" in unit.one("ExecStart") and unit.environment()["RAY_AUTH_MODE"] == "token"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # /opt/photo-upscaler (the units' install) stands for this checkout and its virtual environment.
    install = tmp_path / "opt" / "photo-upscaler"
    install.mkdir(parents=True)
    (install / ".venv").symlink_to(Path(sys.prefix))
    (install / "deploy").symlink_to(REPO_ROOT / "deploy")
    for name, unit in units().items():
        text = unit.path.read_text().replace("/opt/photo-upscaler", str(install))
        (tmp_path / name).write_text(text)
        verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
        problems = [line for line in (verify.stdout + verify.stderr).splitlines() if name in line]
        assert verify.returncode == 0 and not problems, f"{name}: {verify.stdout}{verify.stderr}"
