"""Whether the Ray cluster has an autoscaler, from what its head's monitor publishes in the GCS."""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Any

# The autoscaler (v1) monitor's status, rewritten every few seconds (ray._private.ray_constants).
STATUS_KEY = "__autoscaling_status"
# Older than this, the status is a dead monitor's.
STALE_S = 60.0
# How Ray's read-only provider names each node it mirrors: a head started without an autoscaling config runs
# the same monitor, with this provider, which never starts a node.
READONLY_TYPE_PREFIX = "node_"


class Autoscaler(str, Enum):
    PRESENT = "present"  # a monitor with a node provider that starts nodes
    ABSENT = "absent"  # no monitor, or one with the read-only provider
    UNKNOWN = "unknown"  # not asked yet, or the answer could not be read


def _readonly(node_types: dict[str, str]) -> bool:
    """Every node's type is the read-only provider's mirror of that very node."""
    return all(kind == f"{READONLY_TYPE_PREFIX}{node}" for node, kind in node_types.items())


def from_v1_status(raw: bytes | str | None, now: float) -> Autoscaler:
    """From the monitor's status JSON: present when it is fresh and its report names a configured node type."""
    if not raw:
        return Autoscaler.ABSENT
    try:
        status = json.loads(raw)
        report = status.get("autoscaler_report")
        fresh = now - float(status.get("time", 0)) < STALE_S
    except (ValueError, TypeError, AttributeError):
        return Autoscaler.UNKNOWN
    if not fresh or not isinstance(report, dict):
        return Autoscaler.ABSENT
    mapping = report.get("node_type_mapping") or {}
    launching = bool(report.get("pending_launches")) or bool(report.get("pending_nodes"))
    return Autoscaler.ABSENT if mapping and not launching and _readonly(mapping) else Autoscaler.PRESENT


def from_v2_status(status: Any) -> Autoscaler:
    """From `ray.autoscaler.v2.sdk.get_cluster_status`: present once an autoscaler has reported a state and its
    nodes' types are not the read-only provider's."""
    version = getattr(getattr(status, "stats", None), "autoscaler_version", None)
    if version in (None, "", "0"):
        return Autoscaler.ABSENT
    nodes = [*getattr(status, "active_nodes", []), *getattr(status, "idle_nodes", [])]
    types = {str(n.node_id): str(n.ray_node_type_name) for n in nodes}
    launching = bool(getattr(status, "pending_launches", None)) or bool(getattr(status, "pending_nodes", None))
    return Autoscaler.ABSENT if types and not launching and _readonly(types) else Autoscaler.PRESENT


def probe(ray: Any) -> Autoscaler:
    """Asks the connected cluster (call in a process that has run `ray.init`)."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            from ray.autoscaler.v2.sdk import get_cluster_status

            return from_v2_status(get_cluster_status(ray.get_runtime_context().gcs_address))
        from ray.experimental.internal_kv import _internal_kv_get

        return from_v1_status(_internal_kv_get(STATUS_KEY), time.time())
    except Exception:
        return Autoscaler.UNKNOWN
