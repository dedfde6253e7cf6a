"""The repair mask on the Ray path without a cluster: the driver puts it into the object store as an object of its
own beside the photo, and the task on a node writes it beside the photo and runs the real worker with it. Ray itself
is replaced by stand-ins: what is tested is this project's code on both sides of it."""

from __future__ import annotations

import sys
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from web.backends.ray.driver import Driver, DriverSettings
from web.backends.ray.link import Op
from web.backends.ray.task import EXITED, PLACED, TaskRequest, run_job_on_node


class _Remote:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def options(self, **_: Any) -> "_Remote":
        return self

    def remote(self, *args: Any) -> object:
        self.calls.append(args)
        return object()


class _Link:
    def __init__(self) -> None:
        self.sent: list[tuple[Op, dict[str, Any]]] = []

    def send(self, op: Op, **fields: Any) -> None:
        self.sent.append((op, fields))


def _request(job_id: str = "job") -> TaskRequest:
    return TaskRequest(job_id=job_id, input_suffix=".png", output_suffix=".png", model_name="FSRCNN_x3.pb",
                       max_pixels=1_000_000, nice=0, repair="auto", colour="restore")


def test_the_driver_puts_the_mask_beside_the_photo(tmp_path: Path):
    photo, mask = tmp_path / "photo.png", tmp_path / "photo.mask.png"
    photo.write_bytes(b"photo bytes")
    mask.write_bytes(b"mask bytes")
    link, remote = _Link(), _Remote()
    driver = Driver(DriverSettings("127.0.0.1:6379", False, 1, 1), link)  # type: ignore[arg-type]
    driver.ray = types.SimpleNamespace(put=lambda data: ("object", data))
    driver._remote = remote
    driver._consume = lambda *args: None  # type: ignore[method-assign]
    for job_id, mask_path in (("with", str(mask)), ("without", None)):
        driver._submit({"job": job_id, "request": asdict(_request(job_id)), "input": str(photo), "mask": mask_path,
                        "result_temp": str(tmp_path / "result.part")})
    assert [op for op, _ in link.sent] == [Op.SUBMITTED, Op.SUBMITTED]
    (request, photo_ref, mask_ref), (_, _, no_mask) = remote.calls
    assert request.repair == "auto" and request.colour == "restore"
    assert photo_ref == ("object", b"photo bytes") and mask_ref == ("object", b"mask bytes") and no_mask is None


def test_the_task_runs_the_worker_with_the_mask(shared_photos: Path, shared_models: Path, tmp_path: Path,
                                                monkeypatch):
    fake_ray = types.ModuleType("ray")
    fake_ray.get_runtime_context = lambda: types.SimpleNamespace(get_node_id=lambda: "node")  # type: ignore[attr-defined]
    fake_ray.util = types.SimpleNamespace(get_node_ip_address=lambda: "127.0.0.1")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.setenv("SR_MODELS_DIR", str(shared_models))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    crop = tmp_path / "crop.png"
    Image.open(shared_photos / "chelsea.png").convert("RGB").crop((100, 60, 164, 108)).save(crop)
    mask = np.zeros((48, 64), np.uint8)
    mask[20:23, 5:60] = 255
    mask_file = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_file)
    items = list(run_job_on_node(_request(), crop.read_bytes(), mask_file.read_bytes()))
    events = [i for i in items if isinstance(i, dict)]
    assert events[0]["event"] == PLACED and events[-1]["event"] == EXITED, events
    assert events[-1]["returncode"] == 0, events[-1]["stderr"]
    start = next(e for e in events if e.get("event") == "start")
    assert start["repair"]["ran"] == "mask+auto" and start["repair"]["marked"] == 3 * 55
    assert start["colour"] == "restore"
    assert isinstance(items[-1], bytes) and items[-1][:8] == b"\x89PNG\r\n\x1a\n"
