"""Converted-weight cache: a model's GraphPlan saved beside the .pb, keyed by the file's SHA-256."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
import torch

from infer.digests import sha256_of
from infer.engines.graph_plan import GraphPlan, build_plan
from infer.tfgraph import read_graph

_SUFFIX = ".torch.pt"


@dataclass(frozen=True)
class LoadedPlan:
    """A plan and where it came from: "cache", "converted" (and cached), or "converted, not cached"."""

    plan: GraphPlan
    source: str
    cache_path: Path


def cache_path(model: Path, digest: str) -> Path:
    """`EDSR_x3.pb` -> `EDSR_x3.pb.<first 16 hex digits of its SHA-256>.torch.pt` in the same folder."""
    return model.with_name(f"{model.name}.{digest[:16]}{_SUFFIX}")


def _log(message: str) -> None:
    print(f"sr-infer: {message}", file=sys.stderr)


def _to_torch(data: dict) -> dict:
    out = dict(data)
    out["consts"] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data["consts"].items()}
    return out


def _from_torch(data: dict) -> dict:
    out = dict(data)
    out["consts"] = {k: v.numpy() for k, v in data["consts"].items()}
    return out


def _read_cache(path: Path, digest: str) -> GraphPlan | None:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("sha256") != digest:
            raise ValueError("it belongs to another model file")
        return GraphPlan.from_dict(_from_torch(data["plan"]))
    except Exception as err:  # any unreadable cache is rebuilt, never trusted
        _log(f"ignoring the weight cache {path} ({type(err).__name__}: {err}); converting the model again")
        return None


def _write_cache(model: Path, path: Path, digest: str, plan: GraphPlan) -> None:
    """Atomic: a temporary file in the same folder, then os.replace; older caches of the model are removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"sha256": digest, "plan": _to_torch(plan.to_dict())}, f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from workers running as other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in path.parent.glob(f"{glob_escape(model.name)}.*{_SUFFIX}"):
        if old != path and len(old.name) == len(path.name):
            old.unlink(missing_ok=True)


def load_plan(model: Path, use_cache: bool = True) -> LoadedPlan:
    """The model's plan from the cache when its checksum matches; otherwise converted from the .pb and cached."""
    model = Path(model)
    digest = sha256_of(model)
    path = cache_path(model, digest)
    if use_cache and path.is_file():
        plan = _read_cache(path, digest)
        if plan is not None:
            return LoadedPlan(plan, "cache", path)
    plan = build_plan(read_graph(model))
    if not use_cache:
        return LoadedPlan(plan, "converted, not cached", path)
    try:
        _write_cache(model, path, digest, plan)
    except OSError as err:
        _log(f"cannot cache converted weights in {path.parent} ({err.strerror or err}); the model is converted on every job")
        return LoadedPlan(plan, "converted, not cached", path)
    return LoadedPlan(plan, "converted", path)
