"""A cache hit against a real run of the same photo: upload to done, through the real service on loopback."""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from infer import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench.common import photo_path, shared_model  # noqa: E402
from tests.web.server import start_live_server  # noqa: E402


def _browser(server):
    client = server.client()
    cookie = re.match(r"sr_owner=([^;]+)", client.get("/api/jobs").header("Set-Cookie") or "").group(1)
    client.cookies["sr_owner"] = cookie
    return client


def _timed(client, data: bytes) -> tuple[float, dict]:
    t = time.perf_counter()
    job = client.upload(data, filename="photo.png").json()
    if job["status"] != "done":
        job = client.wait(job["id"], timeout=600)
    return time.perf_counter() - t, job


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="FSRCNN_x3", help="a shared model name or a .pb path")
    p.add_argument("--photo", default="coffee")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    model = Path(args.model) if args.model.endswith(".pb") else shared_model(args.model)
    data = photo_path(args.photo).read_bytes()
    runs, hits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_live_server(Path(tmp), model_path=model, auth_token=None)
        try:
            for _ in range(args.rounds):
                client = _browser(server)  # a new browser: its first upload is a real run
                seconds, job = _timed(client, data)
                assert not job["cached"] and job["status"] == "done", job
                runs.append(seconds)
                seconds, job = _timed(client, data)
                assert job["cached"] and job["status"] == "done", job
                hits.append(seconds)
        finally:
            server.stop()
    run, hit = statistics.median(runs), statistics.median(hits)
    print(f"{model.name}, {args.photo}, upload to done, median of {args.rounds} interleaved pairs")
    print()
    print("| | median s | all s |")
    print("|---|---|---|")
    print(f"| real run (worker) | {run:.3f} | {', '.join(f'{s:.3f}' for s in runs)} |")
    print(f"| cache hit | {hit:.4f} | {', '.join(f'{s:.4f}' for s in hits)} |")
    print(f"\ncache hit / real run: {hit / run:.4f} ({run / hit:.0f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
