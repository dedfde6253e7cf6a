"""What a job runs: the request's catalog, and the choice made from it with its settings on their grid."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from infer import contract
from infer.catalog import Catalog, InstalledModel, parse_ranks
from infer.faces.options import DEFAULT_FIDELITY, FaceMode
from infer.launcher import StartKind
from infer.licences import parse_allowed
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
    """The catalog of one request: the models folder, its scan records and SR_MODEL_PATH, and where the backend's
    nodes hold the files, what the live nodes reported; less what SR_ALLOWED_LICENCES leaves out. SR_MODEL_PATH
    is taken by its name alone where a live node has that file, or while none has reported (none alive: the
    cluster scaled to zero), when the folder and SR_MODEL_PATH are the declaration of what the nodes have
    (docs/scaling.md)."""
    allowed = parse_allowed(config.allowed_licences)
    if backend.uses_local_model:
        return Catalog.load(config.models_dir, config.model_path, ranks=parse_ranks(config.model_ranks),
                            allowed_licences=allowed)
    reported = backend.node_models(config.models_dir)
    return Catalog.load(config.models_dir, config.model_path, ranks=parse_ranks(config.model_ranks),
                        local_files=not backend.may_have(config.model_path.name), elsewhere=reported or (),
                        allowed_licences=allowed)


# A job's fixed cost (the worker's start, model load and release, the service's own handling) before this
# service has run any: docs/benchmarks.md, "Small jobs: the preloaded launcher" (160x120 photos, upload to done:
# 0.2-0.6 s forked, 0.6 s plain without PyTorch, 3.2-5.3 s plain with it).
START_PRIOR_S = {StartKind.PRELOADED.value: 0.5, StartKind.PLAIN.value: 4.0}
# How many megapixels of evidence the family's benchmark figure counts for. A model's speed is its recent jobs'
# work seconds over their megapixels, pixel-weighted with this prior: a tiny job, whose work is mostly per-call
# overhead, barely moves it, and a few large photos outweigh the benchmark machine.
PRIOR_MEGAPIXELS = 0.5


def seconds_per_mp(store: JobStore, model: InstalledModel) -> float:
    """Seconds of work per input megapixel with this model: this service's recent jobs, weighed by their pixels
    with the family's benchmark figure (counted as PRIOR_MEGAPIXELS)."""
    samples = store.recent_work(model.path.name)
    seconds = PRIOR_MEGAPIXELS * model.family.cpu_seconds_per_mp + sum(work for work, _ in samples)
    megapixels = PRIOR_MEGAPIXELS + sum(mp for _, mp in samples)
    return round(seconds / megapixels, 3)


def start_seconds(store: JobStore, config: Config) -> float:
    """A job's fixed cost on this service: the median over its recent jobs, else the benchmark figure for how
    its workers start."""
    measured = store.recent_overheads()
    if measured:
        return round(statistics.median(measured), 2)
    kind = config.worker_start if config.backend == "local" else StartKind.PLAIN.value
    return START_PRIOR_S[kind]


def estimate_seconds(store: JobStore, config: Config, model: InstalledModel, megapixels: float) -> float:
    """How long a job of this many input megapixels is expected to take once its worker starts."""
    return start_seconds(store, config) + megapixels * seconds_per_mp(store, model)


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
    repair: str = "off"  # contract.Repair: "auto" finds scratches and dust
    colour: str = "off"  # contract.Colour: "restore" brings back faded colour

    @property
    def scale(self) -> int:
        """The scale the result is written at."""
        return self.outscale or self.model.scale
