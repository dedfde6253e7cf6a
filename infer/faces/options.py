"""The face stage's choices as the command line, the front end and the worker name them (standard library only)."""

from __future__ import annotations

from enum import Enum

GFPGAN_FILE = "GFPGANv1.4.pth"
GFPGAN_NAME = "GFPGANv1.4"  # its name in infer/manifest.json, for `sr-models fetch`
FACE_ARCHITECTURE = "GFPGAN"  # spandrel's id for the one face restorer the stage runs
FACE_PURPOSE = "FaceSR"  # spandrel's purpose for face restorers: what the face stage loads, never an upscaler
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
# How far a restored face may replace the plain upscale (0: not at all, 1: entirely). Half by default:
# what people most often hold against face restorers is that the face becomes somebody else's (identity,
# eye colour and age drift, a face "too perfect"); half keeps the person's own features visible under the
# sharpened ones. Set by reasoning, not by looking at results: no real GFPGAN weights were at hand.
DEFAULT_FIDELITY = 0.5
GFPGAN_LICENCE = (
    "GFPGAN is Apache-2.0, except third-party parts under non-commercial licences "
    "(NVIDIA's StyleGAN2 code, DFDNet parts)"
)


class FaceMode(str, Enum):
    OFF = "off"
    ON = "on"


FACE_MODES = tuple(m.value for m in FaceMode)


def parse_fidelity(value: str | float) -> float:
    """A fidelity from 0 to 1; ValueError with the rule otherwise."""
    try:
        fidelity = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the face fidelity must be a number from 0 to 1, not {value!r}") from None
    if not 0.0 <= fidelity <= 1.0:  # also refuses nan
        raise ValueError(f"the face fidelity must be from 0 to 1, not {value!r}")
    return fidelity


def face_flags(faces: str, fidelity: float | None, model: str | None = None) -> list[str]:
    """The worker's options for a job's face settings: `--faces on --face-fidelity F [--face-model PATH]` when
    on, else none."""
    if faces != FaceMode.ON.value:
        return []
    return ["--faces", "on", *([] if fidelity is None else ["--face-fidelity", repr(float(fidelity))]),
            *([] if model is None else ["--face-model", model])]
