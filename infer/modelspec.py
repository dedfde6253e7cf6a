"""What a model file is: its family and scale, from its name or given by flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infer.checkpoints import CheckpointInfo, family_of, inspect, is_checkpoint
from infer.errors import ModelError, UsageError
from infer.families import FAMILIES, Colour, Family, family_from_stem


@dataclass(frozen=True)
class ModelSpec:
    """A model file plus how to feed it (its family's colour pipeline).

    A TensorFlow graph (`.pb`) has its family and scale from its name; a PyTorch checkpoint carries
    what its weights say (`checkpoint`), and its family is built from that."""

    path: Path
    algo: str
    scale: int
    checkpoint: CheckpointInfo | None = None
    # A checkpoint with a denoise twin: 1 runs it as it is, 0 runs the twin, between blends their weights.
    denoise_strength: float | None = None

    @property
    def family(self) -> Family:
        if self.checkpoint is not None:
            return family_of(self.checkpoint)
        return FAMILIES[self.algo]

    @property
    def format(self) -> str:
        """"pb" (TensorFlow graph) or "checkpoint" (PyTorch, through spandrel): which engines can run it."""
        return "pb" if self.checkpoint is None else "checkpoint"

    @property
    def channels(self) -> int:
        return self.family.channels

    @property
    def uses_luma(self) -> bool:
        return self.family.colour is Colour.LUMA


def spec_from_path(path: str | Path, algo: str | None = None, scale: int | None = None) -> ModelSpec:
    """Family and scale come from the file name (`EDSR_x3.pb`) unless given explicitly; a checkpoint's
    come from its weights (and an explicit `scale` must agree)."""
    path = Path(path)
    if is_checkpoint(path):
        return _checkpoint_spec(path, algo, scale)
    named = family_from_stem(path.stem)
    if named and scale and scale != named[1]:
        _refuse_scale(path, named[1], scale, "read from its name")
    algo = (algo or (named[0].name if named else "")).lower()
    scale = scale or (named[1] if named else None)
    if not algo or not scale:
        raise ModelError(
            f"cannot tell the algorithm and scale of {path.name!r} from its name; "
            "name it like EDSR_x3.pb or pass --algo and --scale"
        )
    family = FAMILIES.get(algo)
    if family is None:
        raise ModelError(f"unknown algorithm {algo!r}; use one of: {', '.join(FAMILIES)}")
    if scale not in family.scales:
        allowed = ", ".join(str(s) for s in family.scales)
        raise ModelError(f"{algo} models come in scales {allowed}, not x{scale}")
    return ModelSpec(path=path, algo=algo, scale=int(scale))


def _refuse_scale(path: Path, own: int, asked: int, how: str) -> None:
    """UsageError for a --scale the named model does not have: --outscale reaches a smaller one from it."""
    if asked < own:
        fix = f"use --outscale {asked} for a {asked}x result from this x{own} model"
    else:
        fix = f"drop --scale, or choose a x{asked} model (a model's output is never enlarged further)"
    raise UsageError(f"{path.name} upscales x{own} ({how}), not x{asked}; {fix}")


def _checkpoint_spec(path: Path, algo: str | None, scale: int | None) -> ModelSpec:
    if not path.is_file():
        raise ModelError(f"model file {path} not found; download it with `sr-models fetch {path.stem}` or check the path")
    info = inspect(path)
    if algo and algo.lower() != info.architecture.lower():
        raise ModelError(f"{path.name} is a {info.architecture_name} checkpoint; --algo applies to .pb models only, drop it")
    if scale and scale != info.scale:
        _refuse_scale(path, info.scale, scale, "read from its weights")
    return ModelSpec(path=path, algo=info.architecture.lower(), scale=info.scale, checkpoint=info)
