"""deploy/grafana: the dashboard is importable JSON and queries only metrics the service really exports."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from infer import REPO_ROOT
from tests.web.server import LiveServer

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboard.json"
_METRIC = re.compile(r"\b(sr_[a-z0-9_]+)")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_dashboard_panels_query_exported_metrics(module_server: LiveServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["panels"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "gpu_price_per_hour" in variables
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all(p.get("datasource") for p in dashboard["panels"])
    queried = {_family(m) for e in exprs for m in _METRIC.findall(e)}
    exported = {f.name for f in text_string_to_metric_families(module_server.client().get("/metrics").body.decode())}
    missing = queried - exported
    assert not missing, f"panels query metrics /metrics does not export: {sorted(missing)}"
    # every variable a query uses is defined
    used = {v for e in exprs for v in re.findall(r"\$([a-z_]+)", e)} - {"__rate_interval"}
    assert used <= variables, used - variables
    assert {"sr_gpu_seconds", "sr_cache_hits", "sr_cache_saved_seconds", "sr_jobs_finished", "sr_job_seconds", "sr_queue_length", "sr_workers_running"} <= queried
