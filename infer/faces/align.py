"""Alignment to GFPGAN's 512x512 template: the similarity from five landmarks, the crop, and the feathered paste."""

from __future__ import annotations

import cv2
import numpy as np

from infer.faces.detect import FFHQ_TEMPLATE_512

CROP = 512
# The paste mask, in template pixels: zero for the outer MARGIN, rising smoothly over FEATHER to one, so
# the crop's warped edge never shows and the restored face fades into the photo around it.
MARGIN = 8
FEATHER = 48


def face_matrix(landmarks: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) taking a face's landmarks onto the template."""
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(landmarks, dtype=np.float32).reshape(-1, 1, 2), FFHQ_TEMPLATE_512.reshape(-1, 1, 2),
        method=cv2.LMEDS,
    )
    if matrix is None:
        raise ValueError("the landmarks do not define a similarity")
    return matrix.astype(np.float64)


def crop_face(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The aligned 512x512 crop; outside the photo it mirrors the photo's edge."""
    return cv2.warpAffine(image, matrix, (CROP, CROP), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101)


def _feather_mask() -> np.ndarray:
    ramp = np.clip((np.arange(CROP, dtype=np.float32) + 0.5 - MARGIN) / FEATHER, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no kink where the ramp meets the flat parts
    edge = np.minimum(ramp, ramp[::-1])
    return np.minimum.outer(edge, edge)


_MASK = _feather_mask()


def paste_face(image: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> None:
    """Warps `face` (the 512x512 crop, changed) back by the inverse of `matrix` and blends it into `image` in
    place through the feathered mask; only the face's bounding box is touched."""
    back = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [CROP, 0, 1], [0, CROP, 1], [CROP, CROP, 1]], dtype=np.float64) @ back.T
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v))) for v in corners.min(axis=0))
    x1, y1 = min(width, int(np.ceil(corners[:, 0].max())) + 1), min(height, int(np.ceil(corners[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    mask, source = _MASK, face
    # Shrinking by warpAffine samples without averaging (aliasing): blur the face first. sigma is 0.3 of
    # sqrt(1/shrink^2 - 1), under the usual half: on a class photo of 40-pixel faces (tests/test_faces.py)
    # half blurred the photo's own round trip by 4.3 grey levels, 0.3 by 2.3 (measured).
    shrink = float(np.sqrt(abs(np.linalg.det(back[:, :2]))))
    if shrink < 0.9:
        sigma = 0.3 * float(np.sqrt(1.0 / shrink**2 - 1.0))
        source = cv2.GaussianBlur(face, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    back = back.copy()
    back[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(source, back, size, flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(mask, back, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    weight = np.clip(weight, 0.0, 1.0)[:, :, None]
    region = image[y0:y1, x0:x1]
    mixed = region.astype(np.float32) + weight * (warped.astype(np.float32) - region.astype(np.float32))
    region[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def blend(crop: np.ndarray, restored: np.ndarray, fidelity: float) -> np.ndarray:
    """fidelity 0: the plain crop; 1: the restorer's output; between, the mix of the two."""
    if fidelity >= 1.0:
        return restored
    mixed = crop.astype(np.float32) + np.float32(fidelity) * (restored.astype(np.float32) - crop.astype(np.float32))
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
