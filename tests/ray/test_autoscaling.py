"""Whether a cluster has an autoscaler, from the monitor's status: the read-only provider of a head started
without an autoscaling config is none; a configured node type, or a launch, is one. (A real loopback cluster
without an autoscaler: tests/ray/test_node_models.py and test_hand_run_cluster.py.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

from web.backends.ray.autoscaling import STALE_S, Autoscaler, from_v1_status, from_v2_status

NOW = 1_800_000_000.0
HEAD = "6ae6cff5283dee8441f2b2fe23578b3086318e9ca7788cdc832088c2"


def _v1(mapping: dict[str, str], time: float = NOW, **report: object) -> str:
    """The monitor's status as Ray 2.60 writes it (trimmed to what is read)."""
    return json.dumps({"time": time, "monitor_pid": 1, "autoscaler_report": {
        "active_nodes": {kind: 1 for kind in mapping.values()}, "pending_nodes": [], "pending_launches": {},
        "failed_nodes": [], "node_type_mapping": mapping, "legacy": True, **report}})


def test_the_read_only_provider_of_a_head_without_an_autoscaling_config_is_no_autoscaler() -> None:
    assert from_v1_status(_v1({HEAD: f"node_{HEAD}"}), NOW) is Autoscaler.ABSENT


def test_a_configured_node_type_or_a_launch_is_an_autoscaler() -> None:
    assert from_v1_status(_v1({HEAD: "ray.head.default"}), NOW) is Autoscaler.PRESENT
    assert from_v1_status(_v1({HEAD: f"node_{HEAD}"}, pending_launches={"gpu": 1}), NOW) is Autoscaler.PRESENT


def test_no_status_or_a_dead_monitors_is_no_autoscaler_and_garbage_is_unknown() -> None:
    assert from_v1_status(None, NOW) is Autoscaler.ABSENT
    assert from_v1_status(_v1({HEAD: "ray.head.default"}, time=NOW - STALE_S - 1), NOW) is Autoscaler.ABSENT
    assert from_v1_status(b"{not json", NOW) is Autoscaler.UNKNOWN


def test_v2_counts_an_autoscaler_once_one_has_reported_with_its_own_node_types() -> None:
    def status(version: str, kind: str) -> SimpleNamespace:
        node = SimpleNamespace(node_id=HEAD, ray_node_type_name=kind)
        return SimpleNamespace(stats=SimpleNamespace(autoscaler_version=version), active_nodes=[], idle_nodes=[node],
                               pending_launches=[], pending_nodes=[])

    assert from_v2_status(status("0", "head")) is Autoscaler.ABSENT
    assert from_v2_status(status("3", f"node_{HEAD}")) is Autoscaler.ABSENT
    assert from_v2_status(status("3", "head")) is Autoscaler.PRESENT
