"""The repair mask and the repair and colour options through the real service and worker: limits, the cache key,
files kept and removed, and jobs without them unchanged."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
from PIL import Image

from infer.digests import sha256_of
from tests.web.client import HttpClient, Reply, multipart
from tests.web.conftest import Photos, StartServer
from tests.web.test_cache import _browser, _logs
from web.jobs.cache import PRECISION_CLASS


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _stroke_mask(width: int = 64, height: int = 48, row: int = 20) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[row:row + 3, 5:60] = 255
    return _png(mask)


def _send(client: HttpClient, photo: bytes, mask: bytes | None, fields: dict[str, str] | None = None,
          mask_name: str = "mask.png") -> Reply:
    files = {"image": ("photo.png", photo)}
    if mask is not None:
        files["repair_mask"] = (mask_name, mask)
    body, content_type = multipart(fields or {}, files)
    return client.request("POST", "/api/jobs", body=body, headers={"Content-Type": content_type})


def _uploads(server) -> list[str]:
    folder = server.services.config.uploads_dir
    return sorted(p.name for p in folder.iterdir() if p.name != ".gitkeep") if folder.is_dir() else []


def test_a_mask_travels_with_the_job_and_is_removed_with_its_upload(start_server: StartServer, photos: Photos):
    server = start_server()
    client = _browser(server)
    created = _send(client, photos.small_png, _stroke_mask(), {"repair": "auto", "colour": "restore"})
    assert created.status == 202, created.body
    job = client.wait(created.json()["id"])
    assert job["status"] == "done", job
    assert job["repair"] == {"mode": "auto", "mask": True} and job["colour"] == "restore"
    assert job["output"]["download_name"] == "photo_x3_FSRCNN_x3_repaired_colour.png"
    assert job["timings"]["repair"] > 0
    assert _uploads(server) == []  # the photo and its mask went when the job was done
    plain = client.wait(client.upload(photos.small_png).json()["id"])
    assert plain["repair"] == {"mode": "off", "mask": False} and plain["colour"] == "off"
    assert "repair" not in plain["timings"]
    result = client.get(job["links"]["result"]).body
    assert result != client.get(plain["links"]["result"]).body


def test_the_mask_limits(start_server: StartServer, photos: Photos):
    noise = np.random.default_rng(3).integers(0, 256, (48, 64, 4), dtype=np.uint8)
    big_mask = _png(noise, "RGBA")
    assert len(big_mask) > len(photos.small_png) + 2048
    server = start_server(max_upload_mb=(len(photos.small_png) + 1024) / 2**20)
    client = _browser(server)
    refused = {
        "type": _send(client, photos.small_png, photos.small_jpg, mask_name="mask.jpg"),
        "size": _send(client, photos.small_png, _stroke_mask(width=48, height=64)),
        "bytes": _send(client, photos.small_png, big_mask),
        "empty": _send(client, photos.small_png, b""),
    }
    statuses = {k: (r.status, r.json()["error"]["code"]) for k, r in refused.items()}
    assert statuses == {"type": (415, "unsupported_mask_type"), "size": (422, "mask_size"),
                        "bytes": (413, "too_large"), "empty": (400, "empty_mask")}
    assert "64x48" in refused["size"].json()["error"]["message"]
    assert "repair mask" in refused["bytes"].json()["error"]["message"]
    assert _uploads(server) == []  # neither the photo nor the mask of a refused upload is kept
    bad = _send(client, photos.small_png, None, {"repair": "maybe"})
    assert bad.status == 400 and bad.json()["error"]["code"] == "bad_repair"
    bad = _send(client, photos.small_png, None, {"colour": "vivid"})
    assert bad.status == 400 and bad.json()["error"]["code"] == "bad_colour"


def test_a_mask_marking_every_pixel_fails_the_job_with_the_workers_reason(start_server: StartServer,
                                                                          photos: Photos):
    server = start_server()
    client = _browser(server)
    white = _png(np.full((48, 64), 255, np.uint8))
    job = client.wait(_send(client, photos.small_png, white).json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "bad_input"
    assert "nothing left to keep" in job["error"]["message"]
    assert _uploads(server) == []


def test_the_cache_key_counts_the_mask_and_the_options(start_server: StartServer, photos: Photos):
    server = start_server()
    client = _browser(server)

    def run(mask: bytes | None, fields: dict[str, str] | None = None) -> dict:
        return client.wait(_send(client, photos.small_png, mask, fields).json()["id"])

    first = run(_stroke_mask())
    again = run(_stroke_mask())
    other = run(_stroke_mask(row=30))
    plain = run(None)
    auto = run(None, {"repair": "auto"})
    colour = run(None, {"colour": "restore"})
    assert [j["status"] for j in (first, again, other, plain, auto, colour)] == ["done"] * 6
    assert again["cached"] is True
    assert not any(j["cached"] for j in (first, other, plain, auto, colour))
    assert _logs(server) == 5


def test_a_job_without_a_mask_keeps_its_cache_key(start_server: StartServer):
    """The key of a plain job is the one made before repair existed: the same parts, nothing added."""
    server = start_server()
    cache = server.services.intake.cache
    model = server.services.config.model_path
    plain = cache.key("ab" * 32, model, "FSRCNN_x3", 3, "off", "png")
    parts = ["ab" * 32, sha256_of(model), 3, "off", "png", PRECISION_CLASS, cache.backend_name]
    assert plain == hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    assert plain == cache.key("ab" * 32, model, "FSRCNN_x3", 3, "off", "png", None, None, None, "off", "off")
    keys = {plain, cache.key("ab" * 32, model, "FSRCNN_x3", 3, "off", "png", repair_mask_sha256="cd" * 32),
            cache.key("ab" * 32, model, "FSRCNN_x3", 3, "off", "png", repair_mask_sha256="ef" * 32),
            cache.key("ab" * 32, model, "FSRCNN_x3", 3, "off", "png", repair="auto"),
            cache.key("ab" * 32, model, "FSRCNN_x3", 3, "off", "png", colour="restore")}
    assert len(keys) == 5


def test_options_list_repair_and_colour(start_server: StartServer):
    server = start_server()
    options = server.client().get("/api/options").json()
    assert options["repair"]["modes"] == ["off", "auto"] and options["repair"]["default"] == "off"
    assert options["repair"]["mask"]["field"] == "repair_mask" and options["repair"]["mask"]["formats"] == ["png"]
    assert options["colour"] == {"modes": ["off", "restore"], "default": "off"}


def test_the_synchronous_upload_takes_a_mask(start_server: StartServer, photos: Photos):
    server = start_server()
    client = _browser(server)
    body, content_type = multipart({}, {"image": ("photo.png", photos.small_png),
                                        "repair_mask": ("m.png", _stroke_mask())})
    reply = client.request("POST", "/upload", body=body, headers={"Content-Type": content_type})
    assert reply.status == 200 and reply.body[:8] == b"\x89PNG\r\n\x1a\n"
