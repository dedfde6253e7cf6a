"""What a job runs: the request's catalog, and the choice made from it with its settings on their grid."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from infer import contract
from infer.catalog import Catalog, InstalledModel, parse_ranks
from infer.faces.options import DEFAULT_FIDELITY, FaceMode
from web.config import Config
from web.jobs.store import JobStore

DEFAULT_DENOISE = contract.Denoise.OFF.value
# Denoise strength and face fidelity are taken in steps of 0.01: the value a job records, passes to the worker
# and is cached under is then one and the same.
SETTING_STEP = 0.01


def quantised(value: float) -> float:
    """A 0..1 setting on the SETTING_STEP grid (0.3004 -> 0.3)."""
    return round(round(value / SETTING_STEP) * SETTING_STEP, 2)


def catalog_for(config: Config, backend: Any) -> Catalog:
    """The catalog of one request: the models folder, its scan records and SR_MODEL_PATH (taken by its name
    alone where the backend's nodes hold the files)."""
    return Catalog.load(config.models_dir, config.model_path, ranks=parse_ranks(config.model_ranks),
                        local_files=backend.uses_local_model)


def seconds_per_mp(store: JobStore, model: InstalledModel) -> float:
    """The median of this service's recent jobs with the model, else the family's figure from the benchmarks."""
    measured = store.recent_speeds(model.path.name)
    return round(statistics.median(measured) if measured else model.family.cpu_seconds_per_mp, 3)


@dataclass(frozen=True)
class Choice:
    """What a job runs: the catalog's pick, and the settings that go with it."""

    model: InstalledModel
    denoise: str
    faces: str = FaceMode.OFF.value
    face_fidelity: float = DEFAULT_FIDELITY
    outscale: int | None = None  # the written scale where it is below the model's
    denoise_strength: float | None = None
    why: str = ""  # why the catalog picked the model

    @property
    def scale(self) -> int:
        """The scale the result is written at."""
        return self.outscale or self.model.scale
