"""Repairing scratches, dust and tears before enlarging: the repair mask read and checked, masked pixels filled.

The filling is OpenCV's inpainting at the photo's own resolution, before denoise, faces and super-resolution,
so that the enlargement never sharpens damage or the repair's own softness into detail. Of OpenCV's two methods
Navier-Stokes at radius 5 is used: on the benchmark's scratches and dust over astronaut, chelsea, coffee and camera
(3 seeds, a painted mask) it gave 22.36 dB on the damaged pixels against Telea's 22.19 (radius 3) and 22.16
(radius 5), and NS radius 3's 22.32; the two methods are within 0.5 dB on every photo, Navier-Stokes ahead on
astronaut and camera, Telea on chelsea and coffee (bench/bench_repair.py, docs/benchmarks.md "Repairing old
photos")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from infer.contract import Repair
from infer.errors import InputError, UsageError
from infer.header import our_pixel_limit_only
from infer.images import DecodedImage
from infer.scratches import detect_damage

if TYPE_CHECKING:
    from infer.repair_network import NetworkFill

INPAINT_METHOD = cv2.INPAINT_NS
INPAINT_METHOD_NAME = "navier-stokes"
INPAINT_RADIUS = 5  # px of known picture around a hole each filled pixel is drawn from
NOTHING_LEFT = "the repair mask covers the whole photo, so there is nothing left to keep; paint only the damaged parts"


@dataclass(frozen=True)
class RepairSettings:
    """What to repair: a mask file, automatic detection, or both (their union)."""

    mask: Path | None = None
    mode: Repair = Repair.OFF
    model: Path | None = None  # --repair-model: an inpainting checkpoint instead of OpenCV (infer/repair_network.py)

    @property
    def enabled(self) -> bool:
        return self.mask is not None or self.mode is Repair.AUTO

    def describe(self) -> str:
        """"mask", "auto", "mask+auto" or "off": what the start event says ran."""
        parts = [p for p, on in (("mask", self.mask is not None), ("auto", self.mode is Repair.AUTO)) if on]
        return "+".join(parts) or "off"


@dataclass(frozen=True)
class RepairReport:
    """What a repair did, for the events: how it ran and how many pixels it filled."""

    ran: str
    marked: int  # pixels from the mask file
    found: int  # pixels the detection found
    filled: int  # pixels filled
    method: str = INPAINT_METHOD_NAME  # or the network's architecture ("LaMa")

    def to_json(self) -> dict[str, object]:
        return {"ran": self.ran, "method": self.method, "marked": self.marked, "found": self.found,
                "filled": self.filled}


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """The mask at `path` as H x W bool (True: repair): its alpha where it has a channel that is not all opaque,
    else its grey level; non-zero repairs. It must be the photo's size as shown (UsageError, exit 2); its size
    is read from the header before any pixel."""
    try:
        with our_pixel_limit_only(), Image.open(path) as im:
            if im.size != (width, height):
                raise UsageError(
                    f"the repair mask {path.name} is {im.width}x{im.height}, but the photo is {width}x{height}; "
                    "the mask must be the photo's size as it is shown"
                )
            im.load()
            alpha = None
            if "A" in im.getbands() or "transparency" in im.info:
                alpha = np.asarray(im.convert("RGBA").getchannel("A"))
            if alpha is not None and int(alpha.min()) < 255:
                return alpha > 0
            return np.asarray(im.convert("L")) > 0
    except FileNotFoundError:
        raise InputError(f"the repair mask {path} was not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"the repair mask {path.name} could not be read as an image ({exc}); "
                         "save it as a PNG") from None


def fill(bgr: np.ndarray, mask: np.ndarray, grayscale: bool = False) -> np.ndarray:
    """A copy of the BGR photo with the masked pixels filled from around them; every other pixel as it was."""
    holes = mask.astype(np.uint8) * 255
    if grayscale:
        filled = cv2.inpaint(np.ascontiguousarray(bgr[:, :, 0]), holes, INPAINT_RADIUS, INPAINT_METHOD)
        filled = np.repeat(filled[:, :, None], 3, axis=2)
    else:
        filled = cv2.inpaint(bgr, holes, INPAINT_RADIUS, INPAINT_METHOD)
    out = bgr.copy()
    out[mask] = filled[mask]
    return out


def auto_mask(bgr: np.ndarray) -> tuple[np.ndarray, int]:
    """The detected damage, filled as found (no widening: what is marked by mistake costs more the wider it is
    filled; the damage's own edge is step 9 of `infer.scratches`), and how many pixels that is."""
    found = detect_damage(bgr)
    return found, int(found.sum())


def repair_image(image: DecodedImage, settings: RepairSettings,
                 network: "NetworkFill | None" = None) -> tuple[DecodedImage, RepairReport]:
    """The photo with its marked and/or detected damage filled (by `network` where given, else OpenCV); alpha,
    profile and metadata untouched. A mask with nothing marked changes nothing; one marking every pixel is refused
    (InputError, exit 3)."""
    mask = np.zeros((image.height, image.width), bool)
    marked = found = 0
    if settings.mask is not None:
        mask = read_mask(settings.mask, image.width, image.height)
        marked = int(mask.sum())
        if marked == mask.size:
            raise InputError(NOTHING_LEFT)
    if settings.mode is Repair.AUTO:
        detected, found = auto_mask(image.bgr)
        mask |= detected
    filled = int(mask.sum())
    report = RepairReport(settings.describe(), marked, found, filled,
                          network.name if network is not None else INPAINT_METHOD_NAME)
    if filled == 0:
        return image, report
    filler = network.fill if network is not None else fill
    return dataclasses.replace(image, bgr=filler(image.bgr, mask, image.grayscale)), report
