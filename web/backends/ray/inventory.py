"""What a worker node has: its usable models, described by a small task run on that node from the files and scan
records in its models folder (standard library and `infer` only: no PyTorch), and read back by the front end."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from infer.catalog import Catalog, InstalledModel, installed_models
from infer.checkpoints import info_from_json
from infer.errors import UsageError
from infer.licences import ModelLicence
from infer.modelspec import ModelSpec, spec_from_path
from infer.scans import read_scan


@dataclass(frozen=True)
class ModelReport:
    """One usable model on a node, as it travels to the front end: enough to offer it without its file."""

    id: str
    file: str
    algo: str
    scale: int
    kind: str
    label: str
    checkpoint: dict[str, Any] | None = None  # the scan record's description of a checkpoint
    sha256: str | None = None  # from the scan record (a checkpoint); a .pb's is reported when a job runs it
    licence: dict[str, str] | None = None  # the node's own reading of it (infer/licences.py ModelLicence)

    @classmethod
    def of(cls, model: InstalledModel) -> "ModelReport":
        info = model.spec.checkpoint
        scan = read_scan(model.path) if info is not None else None
        return cls(model.id, model.path.name, model.spec.algo, model.scale, model.kind, model.label,
                   info.to_json() if info is not None else None, scan.sha256 if scan is not None else None,
                   asdict(model.licence))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelReport":
        return cls(id=str(data["id"]), file=Path(str(data["file"])).name, algo=str(data["algo"]),
                   scale=int(data["scale"]), kind=str(data["kind"]), label=str(data["label"]),
                   checkpoint=data.get("checkpoint"), sha256=data.get("sha256"), licence=data.get("licence"))

    def model(self, folder: Path) -> InstalledModel | None:
        """The model as the front end's catalog holds it, named as if in `folder` (its file is on the node)."""
        try:
            path = Path(folder) / self.file
            licence = ModelLicence(**{k: str(v) for k, v in (self.licence or {}).items()})
            if self.checkpoint is not None:
                info = info_from_json(self.checkpoint)
                spec = ModelSpec(path=path, algo=self.algo, scale=self.scale, checkpoint=info)
                return InstalledModel(self.id, spec, licence)
            return InstalledModel(self.id, spec_from_path(path), licence)
        except Exception:  # a report from another version of the code: not offered
            return None


@dataclass(frozen=True)
class NodeInventory:
    """A node's models folder, the file names in it, and the models it can run."""

    folder: str
    names: list[str] = field(default_factory=list)
    models: list[ModelReport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def node_inventory(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """This node's NodeInventory as JSON: the folder a job's model is looked up in here, by the worker's catalog
    (SR_MODELS_DIR, SR_MODEL_PATH), checkpoints by their scan records."""
    from infer.models import models_dir

    env = os.environ if env is None else env
    folder = models_dir(env=env)
    try:
        names = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        names = []
    try:
        models = Catalog.from_env(env).models
    except (UsageError, OSError):  # SR_MODEL_RANKS unreadable here: the folder's models still count
        models = installed_models(Path(folder))
    return NodeInventory(str(folder), names, [ModelReport.of(m) for m in models]).to_json()
