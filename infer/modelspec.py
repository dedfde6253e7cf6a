"""What a model file is: algorithm, scale, colour handling, parsed from its name or given by flags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from infer.errors import ModelError

# Scales each published OpenCV dnn_superres model family comes in.
SUPPORTED_SCALES: dict[str, tuple[int, ...]] = {
    "edsr": (2, 3, 4),
    "espcn": (2, 3, 4),
    "fsrcnn": (2, 3, 4),
    "lapsrn": (2, 4, 8),
}

# DIV2K mean in BGR order, subtracted before EDSR and added back after (as dnn_superres does).
EDSR_MEAN_BGR = (103.1545782, 111.561547, 114.35629928)

_NAME_RE = re.compile(r"^(?P<algo>edsr|espcn|fsrcnn(?:-small)?|lapsrn)_x(?P<scale>\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSpec:
    """A model file plus how to feed it: EDSR sees BGR minus the mean, the others see Y in [0, 1]."""

    path: Path
    algo: str
    scale: int

    @property
    def channels(self) -> int:
        return 3 if self.algo == "edsr" else 1

    @property
    def uses_luma(self) -> bool:
        return self.algo != "edsr"


def spec_from_path(path: str | Path, algo: str | None = None, scale: int | None = None) -> ModelSpec:
    """Algorithm and scale come from the file name (`EDSR_x3.pb`) unless given explicitly."""
    path = Path(path)
    match = _NAME_RE.match(path.stem)
    name_algo = match.group("algo").lower().replace("-small", "") if match else None
    name_scale = int(match.group("scale")) if match else None
    algo = (algo or name_algo or "").lower()
    scale = scale or name_scale
    if not algo or not scale:
        raise ModelError(
            f"cannot tell the algorithm and scale of {path.name!r} from its name; "
            "name it like EDSR_x3.pb or pass --algo and --scale"
        )
    if algo not in SUPPORTED_SCALES:
        raise ModelError(f"unknown algorithm {algo!r}; use one of: {', '.join(SUPPORTED_SCALES)}")
    if scale not in SUPPORTED_SCALES[algo]:
        allowed = ", ".join(str(s) for s in SUPPORTED_SCALES[algo])
        raise ModelError(f"{algo} models come in scales {allowed}, not x{scale}")
    return ModelSpec(path=path, algo=algo, scale=int(scale))
