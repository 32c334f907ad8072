"""Export parity: an exported artifact must embed fixed inputs like its reference (cosine per sample).

Every conversion (torch → ONNX, ONNX → OpenVINO, FP32 → INT8) is checked by running both sides on the same inputs
and comparing the embeddings row by row; :func:`require_parity` turns a miss into an error with the likely fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from factory.runtime.contract import ModelContract
from factory.runtime.preprocess import to_model_input_numpy


@dataclass(frozen=True)
class ParityResult:
    """Agreement between a reference and a candidate on ``n`` inputs (cosine per row, max absolute difference)."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for reports and manifests."""
        return asdict(self)


class ParityError(RuntimeError):
    """An exported or compressed artifact disagrees with its reference beyond the allowed tolerance."""


def check_parity(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
) -> ParityResult:
    """Run both callables on ``inputs`` and compare their outputs row by row.

    Args:
        reference: the trusted side (usually the torch model's runner).
        candidate: the artifact under test.
        inputs: a batch both accept (normalised float32 for runners, uint8 for :func:`embed_uint8` wrappers).

    Returns:
        The cosine (min and mean over rows) and the max absolute difference, computed in float64.

    """
    ref = np.asarray(reference(inputs), dtype=np.float64)
    cand = np.asarray(candidate(inputs), dtype=np.float64)
    if ref.shape != cand.shape:
        raise ParityError(f"reference returned shape {ref.shape} but candidate returned {cand.shape}")
    ref, cand = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
    # A zero embedding has no direction; the epsilon makes its cosine 0 (a failure) instead of NaN.
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = (ref * cand).sum(axis=1) / np.maximum(norms, 1e-12)
    return ParityResult(
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
        max_abs_diff=float(np.abs(ref - cand).max()),
        n=len(ref),
    )


def require_parity(result: ParityResult, min_cosine: float, what: str) -> ParityResult:
    """Return ``result`` if its minimum cosine reaches ``min_cosine``, else raise :class:`ParityError`.

    Args:
        result: from :func:`check_parity`.
        min_cosine: the lowest acceptable per-sample cosine.
        what: names the comparison in the message, e.g. ``"onnx_fp32 vs torch"``.

    """
    if not np.isfinite(result.min_cosine) or result.min_cosine < min_cosine:
        raise ParityError(
            f"{what}: min cosine {result.min_cosine:.6f} < required {min_cosine} "
            f"(mean {result.mean_cosine:.6f}, max |diff| {result.max_abs_diff:.3g}, n={result.n}). "
            "Likely causes: the model was exported in training mode (BatchNorm/Dropout), an op the runtime "
            "implements differently, or reduced run-time precision (OpenVINO runs bf16 unless the runner uses "
            "precision='f32'). Re-export from the checkpoint and compare per layer; lower the threshold in the "
            "recipe only if the drop is understood and accepted."
        )
    return result


def fixed_inputs(contract: ModelContract, n: int = 8, seed: int = 0) -> np.ndarray:
    """Deterministic normalised float32 inputs ``n×3×H×W`` for parity checks.

    Images are smooth random colour fields plus mild pixel noise (closer to photos than white noise, so activation
    ranges resemble real ones), quantised to uint8 and preprocessed by ``contract`` like any real image.
    """
    height, width = contract.input_size
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0.0, 255.0, size=(n, 3, 8, 8)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).numpy()
    noisy = smooth + rng.normal(0.0, 12.0, size=smooth.shape).astype(np.float32)
    images = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return to_model_input_numpy(images, contract)
