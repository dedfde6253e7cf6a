"""What a model file is: its family and scale, from its name or given by flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infer.errors import ModelError
from infer.families import FAMILIES, Colour, Family, family_from_stem


@dataclass(frozen=True)
class ModelSpec:
    """A model file plus how to feed it (its family's colour pipeline)."""

    path: Path
    algo: str
    scale: int

    @property
    def family(self) -> Family:
        return FAMILIES[self.algo]

    @property
    def channels(self) -> int:
        return self.family.channels

    @property
    def uses_luma(self) -> bool:
        return self.family.colour is Colour.LUMA


def spec_from_path(path: str | Path, algo: str | None = None, scale: int | None = None) -> ModelSpec:
    """Family and scale come from the file name (`EDSR_x3.pb`) unless given explicitly."""
    path = Path(path)
    named = family_from_stem(path.stem)
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
