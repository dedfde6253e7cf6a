"""Face detection with five landmarks (eyes, nose tip, mouth corners): YuNet when its file is installed, else Haar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from infer.errors import ModelError
from infer.faces.options import YUNET_FILE

# GFPGAN's FFHQ template for a 512x512 crop: the image-left eye, the image-right eye, the nose tip, the
# image-left and image-right mouth corners (x, y). YuNet reports its landmarks in this order too.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float32,
)
# Faces whose detected box is smaller than this (pixels of the photo as uploaded) are left alone: below it
# the detectors' landmarks are too coarse to align by, and the Haar cascades are trained at 24x24.
MIN_FACE_PX = 24
# Detection runs on a copy whose longer side is at most this; landmarks are scaled back.
DETECT_MAX_SIDE = 2048
YUNET_SCORE = 0.7


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the image it was found in."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # 5 x 2 float32, FFHQ_TEMPLATE_512's order
    score: float

    @property
    def size(self) -> float:
        return min(self.box[2], self.box[3])

    def scaled(self, factor: float) -> "Face":
        """The same face in an image `factor` times larger (pixel centres map to pixel centres)."""
        shift = (factor - 1.0) / 2.0
        x, y, w, h = self.box
        return Face((x * factor + shift, y * factor + shift, w * factor, h * factor),
                    (self.landmarks * np.float32(factor) + np.float32(shift)).astype(np.float32), self.score)


class Detector(Protocol):
    """Finds faces with five landmarks in a BGR uint8 image; `name` is what the worker reports."""

    name: str

    def detect(self, bgr: np.ndarray) -> list[Face]: ...


def _working_copy(bgr: np.ndarray) -> tuple[np.ndarray, float]:
    """The image at most DETECT_MAX_SIDE a side, and the factor back to the original's pixels."""
    side = max(bgr.shape[:2])
    if side <= DETECT_MAX_SIDE:
        return bgr, 1.0
    shrink = DETECT_MAX_SIDE / side
    size = (max(1, round(bgr.shape[1] * shrink)), max(1, round(bgr.shape[0] * shrink)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), bgr.shape[1] / size[0]


def _in_original(faces: list[Face], factor: float) -> list[Face]:
    return faces if factor == 1.0 else [f.scaled(factor) for f in faces]


class YuNetDetector:
    """OpenCV's YuNet (opencv_zoo, MIT): a small CNN that gives the box and the five landmarks."""

    name = "yunet"

    def __init__(self, path: Path, min_face: int = MIN_FACE_PX):
        self.path = path
        self.min_face = min_face
        try:
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), YUNET_SCORE, 0.3, 5000)
        except cv2.error as err:
            raise ModelError(
                f"the face detector {path} cannot be read ({err.msg.strip() or err}); fetch it again with "
                "`sr-models fetch yunet`, or delete it to use the built-in Haar detector"
            ) from None

    def detect(self, bgr: np.ndarray) -> list[Face]:
        small, factor = _working_copy(bgr)
        self._net.setInputSize((small.shape[1], small.shape[0]))
        _, rows = self._net.detect(np.ascontiguousarray(small))
        faces = []
        for row in rows if rows is not None else ():
            face = Face(tuple(float(v) for v in row[:4]), row[4:14].reshape(5, 2).astype(np.float32), float(row[14]))
            faces.append(face)
        return [f for f in _in_original(faces, factor) if f.size >= self.min_face]


_FACE_CASCADE = "haarcascade_frontalface_default.xml"
_EYE_CASCADE = "haarcascade_eye.xml"


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ModelError(
            f"OpenCV's face detector {path} is missing or unreadable; reinstall the worker "
            f"(`pip install -e '.[worker]'`) or install {YUNET_FILE} with `sr-models fetch yunet`"
        )
    return cascade


def landmarks_from_eyes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Five points from two eye centres: the nose and mouth corners where the template puts them for those eyes
    (the similarity that takes the template's eyes onto these takes its nose and mouth along)."""
    t_left, t_right = FFHQ_TEMPLATE_512[0], FFHQ_TEMPLATE_512[1]
    t_vec, vec = t_right - t_left, right - left
    # The complex ratio vec / t_vec is the similarity's rotation and scale.
    z = complex(vec[0], vec[1]) / complex(t_vec[0], t_vec[1])
    points = []
    for p in FFHQ_TEMPLATE_512:
        d = complex(*(p - t_left)) * z
        points.append((left[0] + d.real, left[1] + d.imag))
    return np.array(points, dtype=np.float32)


# Where the Haar face box has the eyes when the eye cascade finds none (faces under EYES_SHOWN_PX, whose
# eyes are smaller than the cascade's 20x20): the medians of four detections of the astronaut's face
# (as shot, turned, mirrored, small) whose eyes were found, as fractions of the box.
_BOX_EYES = ((0.265, 0.38), (0.715, 0.38))
# A Haar face box at least this wide (pixels of the image detection runs on) has eyes the eye cascade finds;
# a box this large without them is not a face (on a 384x384 crop of the astronaut, a 129 px box on the backdrop).
EYES_SHOWN_PX = 70


class HaarDetector:
    """OpenCV's Haar cascades, shipped inside the OpenCV wheel: a frontal face box, then one eye in each half of
    its upper part; where the eyes are too small to be found, the box alone places them (no rotation then), and a
    box large enough to show eyes without any is dropped."""

    name = "haar"

    def __init__(self, min_face: int = MIN_FACE_PX):
        self.min_face = min_face
        self._faces = _cascade(_FACE_CASCADE)
        self._eyes = _cascade(_EYE_CASCADE)

    def _eye_centres(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        x, y, w, h = box
        top = grey[y + h // 8 : y + (h * 5) // 8, x : x + w]
        eyes = self._eyes.detectMultiScale(top, 1.1, 3, minSize=(max(4, w // 10),) * 2, maxSize=(w // 2,) * 2)
        halves: dict[bool, tuple[int, np.ndarray]] = {}
        for ex, ey, ew, eh in eyes:
            centre = np.array([x + ex + ew / 2.0, y + h // 8 + ey + eh / 2.0], dtype=np.float32)
            right_half = centre[0] >= x + w / 2.0
            if right_half not in halves or ew > halves[right_half][0]:
                halves[right_half] = (int(ew), centre)
        if len(halves) < 2:
            return None
        left, right = halves[False][1], halves[True][1]
        if not 0.3 * w <= float(np.hypot(*(right - left))) <= 0.65 * w:
            return None
        return left, right

    def detect(self, bgr: np.ndarray) -> list[Face]:
        small, factor = _working_copy(bgr)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        least = max(1, int(np.ceil(self.min_face / factor)))
        faces = []
        for box in self._faces.detectMultiScale(grey, 1.1, 5, minSize=(least, least)):
            x, y, w, h = (int(v) for v in box)
            eyes = self._eye_centres(grey, (x, y, w, h))
            if eyes is None:
                if min(w, h) >= EYES_SHOWN_PX:
                    continue
                eyes = tuple(np.array([x + fx * w, y + fy * h], dtype=np.float32) for fx, fy in _BOX_EYES)
            faces.append(Face((float(x), float(y), float(w), float(h)), landmarks_from_eyes(*eyes), 1.0))
        return _in_original(faces, factor)


def open_detector(models_folder: Path, min_face: int = MIN_FACE_PX) -> Detector:
    """YuNet when its file is in the models folder, else the Haar cascades; ModelError (exit 5) when the one
    chosen cannot be read."""
    path = Path(models_folder) / YUNET_FILE
    if path.is_file():
        return YuNetDetector(path, min_face)
    return HaarDetector(min_face)
