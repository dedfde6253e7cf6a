"""The models installed in a folder, as people choose them: a scale and a quality (best or fast)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from infer.checkpoints import is_checkpoint
from infer.errors import ModelError, UsageError
from infer.families import Family
from infer.modelsfolder import files_in
from infer.modelspec import ModelSpec, spec_from_path
from infer.scans import checkpoint_files, read_scan


class Quality(str, Enum):
    BEST = "best"  # the family that restores most detail (EDSR, else LapSRN)
    FAST = "fast"  # the lightest network (ESPCN, FSRCNN)


QUALITIES = tuple(q.value for q in Quality)


@dataclass(frozen=True)
class InstalledModel:
    """One usable model file: its id is the file name without `.pb` (`EDSR_x3`)."""

    id: str
    spec: ModelSpec

    @property
    def family(self) -> Family:
        return self.spec.family

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def label(self) -> str:
        """How the page names it: the family's label for a .pb; file name, architecture and scale for a checkpoint."""
        info = self.spec.checkpoint
        if info is not None:
            return f"{self.id} ({info.architecture_name} x{info.scale})"
        return self.family.label or self.family.name


def checkpoint_model(path: Path) -> InstalledModel | None:
    """A checkpoint as its scan record describes it (no PyTorch needed); None when unscanned, stale or not offered."""
    scan = read_scan(path)
    if scan is None or not scan.offered or scan.info is None:
        return None
    spec = ModelSpec(path=path, algo=scan.info.architecture.lower(), scale=scan.info.scale, checkpoint=scan.info)
    return InstalledModel(path.stem, spec)


def model_at(path: Path) -> InstalledModel | None:
    """The model file at `path` as a choice (a .pb by its name, a checkpoint by its scan record), or None."""
    try:
        if is_checkpoint(path):
            return checkpoint_model(path)
        if path.stat().st_size == 0:
            return None
        return InstalledModel(path.stem, spec_from_path(path))
    except (ModelError, OSError):
        return None


def installed_models(folder: Path) -> list[InstalledModel]:
    """Every non-empty `*.pb` in `folder` whose name says its family and scale, and every checkpoint whose scan
    record offers it, sorted by scale, then best first."""
    paths = [*(p for p in files_in(Path(folder)) if p.suffix == ".pb"), *checkpoint_files(Path(folder))]
    found = [m for m in map(model_at, paths) if m is not None]
    return sorted(found, key=lambda m: (m.scale, -m.family.quality_rank, m.id))


def scales(models: list[InstalledModel]) -> list[int]:
    return sorted({m.scale for m in models})


def choose(
    models: list[InstalledModel],
    *,
    model_id: str | None = None,
    scale: int | None = None,
    quality: str | None = None,
    default: InstalledModel | None = None,
) -> InstalledModel:
    """A model by its id, or the best (or fastest) one for a scale; `default` when nothing is asked.

    Raises UsageError with the valid values when the request matches nothing installed."""
    if not models:
        raise ModelError("no model is installed; fetch one with `sr-models fetch EDSR_x3`")
    if model_id:
        for m in models:
            if m.id.lower() == model_id.lower():
                return m
        raise UsageError(f"unknown model {model_id!r}; installed: {', '.join(m.id for m in models)}")
    if quality is not None and quality not in QUALITIES:
        raise UsageError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
    if scale is None and quality is None:
        return default or models[0]
    if scale is None:
        scale = default.scale if default is not None else models[0].scale
    at_scale = [m for m in models if m.scale == scale]
    if not at_scale:
        raise UsageError(f"no model for x{scale} is installed; scales available: {', '.join(f'x{s}' for s in scales(models))}")
    if quality == Quality.FAST.value:
        return min(at_scale, key=lambda m: (m.family.quality_rank, m.id))
    return max(at_scale, key=lambda m: (m.family.quality_rank, m.id))


def quality_of(model: InstalledModel, models: list[InstalledModel]) -> str:
    """"best" for the highest quality rank installed at the model's scale, else "fast"."""
    top = max((m.family.quality_rank for m in models if m.scale == model.scale), default=model.family.quality_rank)
    return Quality.BEST.value if model.family.quality_rank >= top else Quality.FAST.value
