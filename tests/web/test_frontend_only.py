"""The front end without the worker's libraries: imported with OpenCV, PyTorch and numpy unimportable, and
installed alone (`pip install .`) into a fresh virtualenv, as the README tells a Ray deployment to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infer import REPO_ROOT
from tests.helpers import WORKER_LIBRARIES, install_fresh, without_modules
from tests.web.conftest import Photos

# Run in the blocked process: the app factory, the three pages a person or a monitor asks for first, and
# one photo through the synchronous upload (the worker is a child process with its own imports).
_APP_CHECK = """
import json
import web.backends.ray.task  # what the Ray backend sends to the nodes is imported by the front end too
from web import create_app, shutdown
app = create_app({'data_dir': DATA, 'model_path': MODEL, 'auth_token': None})
client = app.test_client()
answers = {path: client.get(path).status_code for path in ('/healthz', '/api/options', '/')}
options = client.get('/api/options').get_json()
with open(PHOTO, 'rb') as photo:
    upload = client.post('/upload', data={'image': (photo, 'photo.png')}, content_type='multipart/form-data')
shutdown(app)
loaded = sorted(m for m in sys.modules if m.partition('.')[0] in BLOCKED)
print(json.dumps({'answers': answers, 'formats': options['formats'], 'denoise': options['denoise'],
                  'upload': [upload.status_code, upload.mimetype, len(upload.data)], 'loaded': loaded}))
"""


def _run_blocked(code: str, tmp_path: Path, **values: object) -> dict:
    header = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    proc = subprocess.run([sys.executable, "-c", without_modules(header + code)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_app_runs_jobs_with_opencv_torch_and_numpy_unimportable(
    tmp_path: Path, fsrcnn_model: Path, photos: Photos
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(photos.small_png)
    result = _run_blocked(_APP_CHECK, tmp_path, DATA=str(tmp_path / "data"), MODEL=str(fsrcnn_model),
                          PHOTO=str(photo), BLOCKED=WORKER_LIBRARIES)
    assert result["answers"] == {"/healthz": 200, "/api/options": 200, "/": 200}
    assert result["formats"] == ["png", "jpg", "webp"] and result["denoise"] == ["off", "light", "strong"]
    status, mimetype, size = result["upload"]
    assert (status, mimetype) == (200, "image/png") and size > 0
    assert result["loaded"] == []


def test_without_a_model_the_blocked_app_still_answers_and_says_why(tmp_path: Path, photos: Photos) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(photos.small_png)
    result = _run_blocked(_APP_CHECK, tmp_path, DATA=str(tmp_path / "data"), MODEL=str(tmp_path / "EDSR_x3.pb"),
                          PHOTO=str(photo), BLOCKED=WORKER_LIBRARIES)
    assert result["answers"] == {"/healthz": 503, "/api/options": 200, "/": 200}
    assert result["upload"][0] == 503
    assert result["loaded"] == []


# ----------------------------------------------------------------------------- a fresh virtualenv


@pytest.mark.slow
def test_pip_install_dot_in_a_fresh_virtualenv_starts_sr_web(tmp_path: Path, photos: Photos) -> None:
    # As the README says for a front end alone: no extras, nothing from the test's own environment.
    installed = install_fresh(tmp_path)
    assert installed.installed(WORKER_LIBRARIES) == [], "the front end's install brought the worker's libraries"

    with installed.serve(tmp_path / "sr-web.log", SR_DATA_DIR=str(tmp_path / "data")) as client:
        health = client.get("/healthz")
        assert health.status == 503, health.body
        assert "sr-models fetch EDSR_x3" in health.json()["reason"]
        page = client.get("/")
        assert page.status == 200 and b"<html" in page.body
        upload = client.upload(photos.small_png)
        assert upload.status == 503, upload.body
        assert upload.json()["error"]["code"] == "unavailable"
    assert not list((tmp_path / "data").rglob("*.png")), "the refused upload left a file"
