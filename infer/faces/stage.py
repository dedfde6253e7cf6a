"""The face stage of one photo: detect in the photo, then restore, blend and paste each face into the upscaled photo."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from infer.faces.align import blend, crop_face, face_matrix, paste_face
from infer.faces.detect import MIN_FACE_PX, Detector, Face, open_detector
from infer.faces.options import DEFAULT_FIDELITY
from infer.faces.restorers import GFPGANRestorer, Restorer, check_face_file


@dataclass(frozen=True)
class FaceSettings:
    """Whether and how far a run restores faces."""

    enabled: bool = False
    fidelity: float = DEFAULT_FIDELITY
    model: Path | None = None  # the GFPGAN file
    models_folder: Path | None = None  # where the detector's file is looked for
    min_face: int = MIN_FACE_PX
    device: str = "auto"


@dataclass
class FaceReport:
    """What the face stage did to one photo, for the `done` event."""

    detector: str
    found: int = 0
    restored: int = 0
    fidelity: float = DEFAULT_FIDELITY
    restorer: str | None = None
    device: str | None = None
    precision: str | None = None
    batch: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detector": self.detector, "found": self.found, "restored": self.restored,
                               "fidelity": self.fidelity}
        if self.restorer is not None:
            out.update(restorer=self.restorer, device=self.device, precision=self.precision, batch=self.batch)
        return out


def restore_faces(upscaled: np.ndarray, faces: list[Face], scale: int, restorer: Restorer, fidelity: float,
                  batch: int = 1) -> int:
    """Restores `faces` (found in the photo before it was upscaled `scale` times) in `upscaled`, in place,
    `batch` at a time; returns how many were pasted."""
    matrices = [face_matrix(face.scaled(scale).landmarks) for face in faces]
    step = max(1, batch)
    for first in range(0, len(matrices), step):
        group = matrices[first : first + step]
        crops = np.stack([crop_face(upscaled, m) for m in group])
        restored = restorer.restore(crops)
        for crop, out, matrix in zip(crops, restored, group):
            paste_face(upscaled, blend(crop, out, fidelity), matrix)
    return len(matrices)


class FaceStage:
    """A run's face stage: the detector is opened once and the restorer loaded at the first photo with a face,
    then kept for the run's other photos."""

    def __init__(self, settings: FaceSettings, restorer_factory: Callable[[], Restorer] | None = None):
        self.settings = settings
        self._factory = restorer_factory or self._gfpgan
        self._detector: Detector | None = None
        self._restorer: Restorer | None = None

    def _gfpgan(self) -> Restorer:
        assert self.settings.model is not None
        return GFPGANRestorer(self.settings.model, self.settings.device)

    def check(self) -> None:
        """What can refuse the run before any photo is read: the detector's and the restorer's files."""
        if self.settings.model is not None:
            check_face_file(self.settings.model)
        self.detector  # noqa: B018  (opening it is the check)

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = open_detector(self.settings.models_folder or Path("."), self.settings.min_face)
        return self._detector

    def detect(self, bgr: np.ndarray) -> tuple[list[Face], FaceReport]:
        t = time.perf_counter()
        faces = self.detector.detect(bgr)
        report = FaceReport(self.detector.name, found=len(faces), fidelity=self.settings.fidelity)
        report.seconds["face_detect"] = round(time.perf_counter() - t, 4)
        return faces, report

    def restore(self, upscaled: np.ndarray, faces: list[Face], scale: int, report: FaceReport) -> None:
        """Restores the faces `detect` found into the upscaled photo, in place; fidelity 0 changes nothing."""
        if not faces or self.settings.fidelity <= 0.0:
            return
        if self._restorer is None:
            t = time.perf_counter()
            self._restorer = self._factory()
            report.seconds["face_load"] = round(time.perf_counter() - t, 4)
        restorer = self._restorer
        t = time.perf_counter()
        report.batch = restorer.batch_size()
        report.restored = restore_faces(upscaled, faces, scale, restorer, self.settings.fidelity, report.batch)
        report.seconds["faces"] = round(time.perf_counter() - t, 4)
        report.restorer, report.device, report.precision = restorer.name, restorer.device, restorer.precision

    def close(self) -> None:
        if self._restorer is not None:
            self._restorer.close()
            self._restorer = None
