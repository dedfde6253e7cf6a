"""The settings table: reading SR_* variables, their checks, overrides, gunicorn's settings and the README's table."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from infer import REPO_ROOT
from web.config import README, SETTINGS, Config, ConfigError, config_from_env, markdown_table, readme_table


def test_nothing_set_gives_the_defaults() -> None:
    assert config_from_env({}) == Config()
    blank = {row.env: "  " for row in SETTINGS}
    # These two are read by the worker's own code (infer/models.py), which takes them as given.
    del blank["SR_MODEL_PATH"], blank["SR_MODELS_DIR"]
    del blank["SR_AUTH_TOKEN"]  # a token is taken exactly as given, spaces and all
    assert config_from_env(blank) == Config()


def test_each_kind_of_value_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_from_env({
        "SR_DATA_DIR": "data",  # relative: from the current folder
        "SR_MODELS_DIR": str(tmp_path / "models"),
        "SR_MAX_UPLOAD_MB": " 2.5 ",
        "SR_MAX_PIXELS": "1000",
        "SR_MIN_FREE_MB": "0",
        "SR_KEEP_UPLOADS": "yes",
        "SR_BEHIND_PROXY": "off",
        "SR_RESULT_CACHE": "Shared",
        "SR_BACKEND": "LOCAL",
        "SR_AUTH_TOKEN": " a long enough secret ",
        "SR_RAY_ADDRESS": " head:6379 ",
    })
    assert config.data_dir == tmp_path / "data"
    # Without SR_MODEL_PATH the default model is looked for in SR_MODELS_DIR.
    assert config.model_path == tmp_path / "models" / "EDSR_x3.pb"
    assert (config.max_upload_mb, config.max_pixels, config.min_free_mb) == (2.5, 1000, 0)
    assert config.keep_uploads is True and config.behind_proxy is False
    assert (config.result_cache, config.backend, config.ray_address) == ("shared", "local", "head:6379")
    assert config.auth_token == " a long enough secret "  # a token is taken exactly as given


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SR_CONCURRENCY", "0", "SR_CONCURRENCY=0 must be at least 1"),
        ("SR_CONCURRENCY", "two", "SR_CONCURRENCY='two' is not a valid int"),
        ("SR_MAX_UPLOAD_MB", "-1", "SR_MAX_UPLOAD_MB=-1.0 must be positive"),
        ("SR_MIN_FREE_MB", "-5", "SR_MIN_FREE_MB=-5.0 must be 0 or more"),
        ("SR_MAX_EVENT_STREAMS", "-1", "SR_MAX_EVENT_STREAMS=-1 must be 0 or more"),
        ("SR_RESULT_CACHE", "everyone", "SR_RESULT_CACHE='everyone' is not one of: owner, shared, off"),
        ("SR_JOB_TIMEOUT_S", "1e400x", "SR_JOB_TIMEOUT_S='1e400x' is not a valid float"),
    ],
)
def test_a_value_the_service_cannot_use_is_refused_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_env({variable: value})
    assert str(err.value) == message


def test_streams_and_waits_may_not_take_every_thread() -> None:
    defaults = config_from_env({"SR_WEB_THREADS": "4"})
    assert (defaults.stream_limit, defaults.sync_wait_limit) == (1, 1)
    assert (Config().stream_limit, Config().sync_wait_limit) == (8, 8)
    with pytest.raises(ConfigError, match="could take all SR_WEB_THREADS=4 threads"):
        config_from_env({"SR_WEB_THREADS": "4", "SR_MAX_SYNC_WAITS": "4"})
    with pytest.raises(ConfigError, match="could take all SR_WEB_THREADS=2 threads"):
        config_from_env({"SR_WEB_THREADS": "2"})
    assert config_from_env({"SR_WEB_THREADS": "2", "SR_MAX_EVENT_STREAMS": "0"}).sync_wait_limit == 1


def test_overrides_take_field_names_resolve_paths_and_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config().with_overrides({"data_dir": "here", "concurrency": 3})
    assert config.data_dir == tmp_path / "here" and config.concurrency == 3
    with pytest.raises(ConfigError, match="unknown setting"):
        Config().with_overrides({"concurency": 3})
    with pytest.raises(ConfigError, match="SR_QUEUE_SIZE=0 must be at least 1"):
        Config().with_overrides({"queue_size": 0})


def test_the_readme_table_is_the_settings_table() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = readme_table(text)
    expected = markdown_table()
    assert text[start:end].rstrip("\n") == expected, (
        "README.md's configuration table differs from the settings table in web/config.py; run "
        f"`python -m web.settings_table --write`, or paste:\n\n{expected}\n"
    )


def test_gunicorn_reads_its_settings_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SR_BIND", "SR_WEB_THREADS", "SR_LOG_LEVEL", "SR_ACCESS_LOG"):
        monkeypatch.delenv(name, raising=False)
    conf = runpy.run_path(str(REPO_ROOT / "deploy" / "gunicorn.conf.py"))
    assert (conf["bind"], conf["threads"], conf["loglevel"], conf["accesslog"]) == ("127.0.0.1:8080", 32, "info", None)
    monkeypatch.setenv("SR_WEB_THREADS", "8")
    monkeypatch.setenv("SR_ACCESS_LOG", "-")
    conf = runpy.run_path(str(REPO_ROOT / "deploy" / "gunicorn.conf.py"))
    assert (conf["threads"], conf["accesslog"]) == (8, "-")
    monkeypatch.setenv("SR_WEB_THREADS", "0")
    with pytest.raises(ConfigError, match="SR_WEB_THREADS=0 must be at least 1"):
        runpy.run_path(str(REPO_ROOT / "deploy" / "gunicorn.conf.py"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SR_BACKEND": "slurm"}, "sr-web: SR_BACKEND='slurm' is not one of: local, ray"),
        ({"SR_CONCURRENCY": "0"}, "sr-web: SR_CONCURRENCY=0 must be at least 1"),
    ],
)
def test_sr_web_refuses_to_start_with_a_setting_it_cannot_use(tmp_path: Path, env: dict[str, str], message: str) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    full_env.update(env, SR_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "web", "--port", "0"], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == message
