"""Shared pytest fixtures: the shared test data folder beside the repo and tiny EDSR-layout model files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infer import REPO_ROOT
from tests.fixtures.edsr_graph import write_edsr_graph

SHARED_DIR = REPO_ROOT.parent / "shared"


def _require_dir(path: Path, what: str) -> Path:
    """Skips when test data is absent, except under SR_TEST_STRICT=1 (CI), where absence is a failure."""
    if path.is_dir() and any(path.iterdir()):
        return path
    reason = f"{what} not found at {path} (put the shared test data folder beside the repo)"
    if os.environ.get("SR_TEST_STRICT") == "1":
        pytest.fail(reason + "; SR_TEST_STRICT=1 makes this an error")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require_dir(SHARED_DIR, "shared test data")


@pytest.fixture(scope="session")
def shared_models(shared_dir: Path) -> Path:
    return _require_dir(shared_dir / "models", "shared models")


@pytest.fixture(scope="session")
def shared_photos(shared_dir: Path) -> Path:
    return _require_dir(shared_dir / "photos", "shared photos")


@pytest.fixture(scope="session")
def edsr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny EDSR x3 (2 blocks x 16 filters, quint8 weights where TensorFlow would quantize), named EDSR_x3.pb."""
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_quantized") / "EDSR_x3.pb", quantize=True)


@pytest.fixture(scope="session")
def edsr_model_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network with every weight in float32, also named EDSR_x3.pb (in another folder)."""
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_plain") / "EDSR_x3.pb", quantize=False)


@pytest.fixture(scope="session")
def edsr_model_slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A heavier EDSR x3 (16 blocks x 48 filters), also named EDSR_x3.pb: a 600x400 photo keeps a worker
    busy for seconds, long enough to kill, cancel or restart around it whatever the machine's speed."""
    return write_edsr_graph(tmp_path_factory.mktemp("edsr_slow") / "EDSR_x3.pb", blocks=16, filters=48, quantize=True)
