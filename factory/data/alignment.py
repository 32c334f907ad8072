"""5-point face alignment to the arcface 112×112 template: a similarity transform, then one bilinear warp."""

from __future__ import annotations

import numpy as np
from PIL import Image

from factory.runtime.contract import ARCFACE_TEMPLATE


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 similarity (rotation, uniform scale, translation) mapping ``src`` points onto ``dst`` in least squares.

    Umeyama's closed form, as insightface's ``estimate_norm`` (skimage ``SimilarityTransform``) computes it.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching N×2 point sets (N >= 2), got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp an ``H×W×3`` uint8 image so its 5 landmarks (eyes, nose, mouth corners; x, y) land on the template."""
    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    template = np.asarray(ARCFACE_TEMPLATE) * (size / 112.0)
    matrix = similarity_transform(landmarks, template)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # PIL maps output pixels back to input pixels
    warped = Image.fromarray(np.ascontiguousarray(image)).transform(
        (size, size), Image.Transform.AFFINE, data=tuple(inverse.ravel()), resample=Image.Resampling.BILINEAR
    )
    return np.asarray(warped)
