"""Image metrics for the repair benchmark: CIEDE2000 colour difference and SSIM, in numpy and OpenCV.

scikit-image (whose `deltaE_ciede2000` the issue names) is not installed in this project's environment; this is
the same formula (Sharma, Wu and Dalal, 2005), checked against two rows of their published test data in
`check_ciede2000`."""

from __future__ import annotations

import cv2
import numpy as np


def lab(bgr: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of a BGR uint8 photo, as float64."""
    return cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab).astype(np.float64)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """The CIEDE2000 difference of two L*a*b* arrays (... x 3), kL = kC = kH = 1."""
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dL, dC = L2 - L1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0, dh)
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    L_mean, c_mean_p = (L1 + L2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_mean = np.where(c1p * c2p == 0, h_sum, h_mean)
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_mean_p**7 / (c_mean_p**7 + 25.0**7))
    s_l = 1 + 0.015 * (L_mean - 50) ** 2 / np.sqrt(20 + (L_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean_p
    s_h = 1 + 0.015 * c_mean_p * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dL / s_l) ** 2 + (dC / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dC / s_c) * (dH / s_h))


def check_ciede2000() -> None:
    """Two rows of Sharma et al.'s test data (pairs 1 and 17); AssertionError if the formula drifts."""
    pairs = np.array([[[50.0, 2.6772, -79.7751], [50.0, 0.0, -82.7485]], [[50.0, 2.5, 0.0], [73.0, 25.0, -18.0]]])
    got = ciede2000(pairs[:, 0], pairs[:, 1])
    assert np.allclose(got, [2.0425, 27.1492], atol=1e-4), got


def mean_ciede2000(bgr1: np.ndarray, bgr2: np.ndarray) -> float:
    return float(ciede2000(lab(bgr1), lab(bgr2)).mean())


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of the luminance (Wang et al. 2004: 11 px Gaussian window, sigma 1.5)."""
    x = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(v: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(v, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def psnr_where(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR (RGB, 0-255) over the pixels `where` marks, or the whole photo."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float(diff.mean() if where is None else diff[where].mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
