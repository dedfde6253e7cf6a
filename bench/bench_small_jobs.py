"""Small-job latency through the real HTTP API with the local backend: the preloaded launcher against plain starts.

Two services run side by side (`python -m web` on loopback, result cache off), one with SR_WORKER_START=preloaded
and one with SR_WORKER_START=plain, sharing one models folder: a Compact Real-ESRGAN checkpoint (restore),
FSRCNN x3 (fast) and a small EDSR x3. For each model, after one warm-up job on each, jobs alternate between the
two services: a 160x120 photo (a different one each time) is sent to `POST /upload`, which answers with the
result, and the time from sending to the answer is recorded. Reported: median and p90 per model and start kind,
the ratio preloaded / plain, the launcher's RSS and USS, and each service's RSS.

    .venv/bin/python bench/bench_small_jobs.py              # the figures in docs/benchmarks.md
    .venv/bin/python bench/bench_small_jobs.py --jobs 3     # a quick look
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import edsr_fixture, shared_model  # noqa: E402
from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, write_checkpoint  # noqa: E402
from tests.web.client import HttpClient, multipart  # noqa: E402
from tests.web.server import ServiceProcess, start_service_process  # noqa: E402

MODELS = {"restore (Compact)": "realesr-animevideov3", "fast (FSRCNN x3)": "FSRCNN_x3", "small EDSR x3": "EDSR_x3"}
KINDS = ("preloaded", "plain")


def _models_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(shared_model("FSRCNN_x3"), folder / "FSRCNN_x3.pb")
    shutil.copy(edsr_fixture(full=False), folder / "EDSR_x3.pb")
    write_checkpoint(ANIMEVIDEOV3, folder / "realesr-animevideov3.pth")
    subprocess.run([sys.executable, "-c", "from infer.models import main; main()", "scan"], check=True,
                   env={**os.environ, "SR_MODELS_DIR": str(folder)}, stdout=subprocess.DEVNULL, cwd=REPO_ROOT)
    return folder


def _photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (15, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((160, 120), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _one(client: HttpClient, model: str, seed: int) -> float:
    body, content_type = multipart({"model": model}, {"image": ("photo.png", _photo(seed))})
    began = time.perf_counter()
    reply = client.request("POST", "/upload", body=body, headers={"Content-Type": content_type}, timeout=300)
    took = time.perf_counter() - began
    if reply.status != 200:
        raise SystemExit(f"{model}: {reply.status} {reply.body[:300]!r}")
    return took


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _mb(value: int) -> float:
    return round(value / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10, help="jobs per model and start kind, after one warm-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sr-small-jobs-") as tmp:
        root = Path(tmp)
        models = _models_folder(root / "models")
        services: dict[str, ServiceProcess] = {}
        try:
            for kind in KINDS:
                services[kind] = start_service_process(root / f"{kind}.log", {
                    "SR_DATA_DIR": str(root / kind), "SR_MODELS_DIR": str(models), "SR_RESULT_CACHE": "off",
                    "SR_WORKER_START": kind,
                }, timeout=120)
            clients = {kind: service.client() for kind, service in services.items()}
            deadline = time.monotonic() + 300
            while not clients["preloaded"].get("/healthz").json()["backend"]["launcher"]["ready"]:
                if time.monotonic() > deadline:
                    raise SystemExit("the launcher did not become ready in 300 s")
                time.sleep(0.2)
            print(f"load average before: {os.getloadavg()[0]:.2f}; CPU: {_cpu()}")
            times: dict[tuple[str, str], list[float]] = {}
            seed = 0
            for label, model in MODELS.items():
                for kind in KINDS:
                    seed += 1
                    _one(clients[kind], model, seed)  # warm-up
                for _ in range(args.jobs):
                    for kind in KINDS:
                        seed += 1
                        times.setdefault((label, kind), []).append(_one(clients[kind], model, seed))
            memory = _memory(services)
        finally:
            for service in services.values():
                service.terminate()
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| model | preloaded median (s) | preloaded p90 (s) | plain median (s) | plain p90 (s) | preloaded / plain |")
    print("|---|---|---|---|---|---|")
    for label in MODELS:
        pre, plain = times[(label, "preloaded")], times[(label, "plain")]
        print(f"| {label} | {statistics.median(pre):.2f} | {_p90(pre):.2f} | {statistics.median(plain):.2f} | "
              f"{_p90(plain):.2f} | {statistics.median(pre) / statistics.median(plain):.2f} |")
    print()
    print(f"launcher: RSS {memory['launcher_rss']} MB, USS {memory['launcher_uss']} MB; "
          f"service RSS: preloaded {memory['service_preloaded']} MB, plain {memory['service_plain']} MB")


def _memory(services: dict[str, ServiceProcess]) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind, service in services.items():
        proc = psutil.Process(service.proc.pid)
        out[f"service_{kind}"] = _mb(proc.memory_info().rss)
        for child in proc.children():
            if "infer.zygote" in " ".join(child.cmdline()):
                full = child.memory_full_info()
                out["launcher_rss"], out["launcher_uss"] = _mb(full.rss), _mb(full.uss)
    return out


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return f"{os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
