"""Model families: each declares its facts once (file names, scales, colour pipeline, mean, tiles, pads)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Colour(str, Enum):
    """What the network sees, as OpenCV's dnn_superres feeds it."""

    BGR_MINUS_MEAN = "bgr-minus-mean"  # three channels, 0..255 minus a per-channel mean; the mean is added back
    LUMA = "luma"  # Y of YCrCb in 0..1; Cr and Cb are resized bilinearly beside it
    RGB = "rgb"  # three channels, RGB in 0..1 (PyTorch checkpoints, as spandrel's models take them)


@dataclass(frozen=True)
class Family:
    """One kind of model file; the registry below holds every supported kind."""

    name: str  # lower case, as --algo takes it
    file_stem: str  # regular expression for the part of the file name before `_x<scale>`
    scales: tuple[int, ...]
    colour: Colour
    tile: int  # default input tile edge on the CPU, from docs/benchmarks.md ("Tile size")
    tile_pad: int  # context pixels around each tile; also kept when a tile is split after running out of memory
    # Window attention's window edge (input pixels): tiles and their context are whole multiples of it, on the grid
    # of the photo padded to a multiple of it, so tiles cut the photo where the whole-photo forward does.
    tile_align: int = 1
    # `--engine auto` on the CPU tries these in order: the fastest whole job first (docs/benchmarks.md).
    cpu_engines: tuple[str, ...] = ("torch", "opencv")
    # Half-precision formats `--precision auto` may pick. Luma networks output Y in 0..1, where bf16's
    # 8-bit mantissa costs up to 4 grey levels (50.8 dB against fp32, measured); fp16 keeps 61 dB.
    auto_half: tuple[str, ...] = ("bf16", "fp16")
    mean_bgr: tuple[float, float, float] | None = None
    label: str = ""
    # Wall seconds per input megapixel of a whole job on 2 cores with the default CPU engine, measured
    # (docs/benchmarks.md, "The default CPU path"): a first estimate until the service has its own figures.
    cpu_seconds_per_mp: float = 10.0
    # Higher restores more detail (and costs more): the page's "best" takes the highest installed, "fast" the lowest.
    quality_rank: int = 1
    # The kind of result, as the page offers it: "faithful" (clean photos, no invented detail), "fast",
    # or "restore" (damaged photos: noise, JPEG, blur).
    kind: str = "fast"
    # On the PyTorch engine on the CPU, a window's memory over the graph's own count of live activations
    # (`GraphPlan.peak_values_per_pixel`, read from the weights), measured: the window is then taken from the job's
    # memory budget. 0: not measured, the family's tile.
    window_overhead: float = 0.0

    @property
    def display_name(self) -> str:
        """The family as people write it ("LapSRN", "EDSR"): the label up to its note."""
        return self.label.split(" (", 1)[0] if self.label else self.name.upper()

    @property
    def channels(self) -> int:
        return 1 if self.colour is Colour.LUMA else 3


# Small networks finish on OpenCV before PyTorch has even been imported (about 1.5 s).
_LIGHT = ("opencv", "torch")
_LUMA_HALF = ("fp16",)
# DIV2K mean in BGR order, subtracted before EDSR and added back after (as dnn_superres does).
_DIV2K_MEAN_BGR = (103.1545782, 111.561547, 114.35629928)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # OpenCV: tile 256 (886 CPU s/MP at 1.9 GB). PyTorch: the window the job's memory budget allows; its memory
        # is 1.10-1.24x the graph's count from a window of 320 up, in bf16 and fp32 (docs/benchmarks.md, "Windows
        # from memory").
        Family("edsr", "edsr", (2, 3, 4), Colour.BGR_MINUS_MEAN, tile=256, tile_pad=24, mean_bgr=_DIV2K_MEAN_BGR,
               quality_rank=3, cpu_seconds_per_mp=300.0, label="EDSR (best quality, slow)",
               kind="faithful", window_overhead=1.3),
        Family("espcn", "espcn", (2, 3, 4), Colour.LUMA, tile=512, tile_pad=8, cpu_engines=_LIGHT, auto_half=_LUMA_HALF,
               cpu_seconds_per_mp=5.0, label="ESPCN (fast)"),
        Family("fsrcnn", "fsrcnn(?:-small)?", (2, 3, 4), Colour.LUMA, tile=512, tile_pad=16, cpu_engines=_LIGHT,
               auto_half=_LUMA_HALF, cpu_seconds_per_mp=5.0, label="FSRCNN (fast)"),
        Family("lapsrn", "lapsrn", (2, 4, 8), Colour.LUMA, tile=256, tile_pad=24, cpu_engines=_LIGHT,
               auto_half=_LUMA_HALF, quality_rank=2, cpu_seconds_per_mp=60.0, label="LapSRN (up to x8)", kind="faithful"),
    )
}

# `EDSR_x3.pb`, and descriptive suffixes such as `EDSR_x3_trained.pb`.
_NAME_RE = re.compile(
    r"^(?P<stem>" + "|".join(f.file_stem for f in FAMILIES.values()) + r")_x(?P<scale>\d+)(?:[_-][\w-]*)?$",
    re.IGNORECASE,
)


def family_from_stem(stem: str) -> tuple[Family, int] | None:
    """`EDSR_x3` -> (the EDSR family, 3); None when the name follows no family's pattern."""
    match = _NAME_RE.match(stem)
    if not match:
        return None
    text = match.group("stem")
    for family in FAMILIES.values():
        if re.fullmatch(family.file_stem, text, re.IGNORECASE):
            return family, int(match.group("scale"))
    return None
