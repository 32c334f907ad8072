"""Export parity: an exported artifact must embed fixed inputs like its reference (cosine per sample).

Every conversion (torch → ONNX, ONNX → OpenVINO, FP32 → INT8) is checked by running both sides on the same inputs
and comparing the embeddings row by row; :func:`require_parity` turns a miss into an error with the likely fix.
Compression drift is measured the same way on held-out faces of every group (:func:`drift_by_group`): a quantized
model may keep the mean cosine and still move one group's faces more than another's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
    cosine, diff = row_agreement(reference, candidate, inputs, batch_size=len(inputs))
    return ParityResult(
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
        max_abs_diff=float(diff.max()),
        n=len(cosine),
    )


def row_agreement(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and max absolute difference of the two sides' outputs, per input row, in float64.

    Args:
        reference: the trusted side.
        candidate: the artifact under test.
        inputs: a batch both accept.
        batch_size: rows per call, so a large drift set never has to be one runtime batch.

    Raises:
        ParityError: the two sides return outputs of different shapes.
    """
    cosines, diffs = [], []
    for start in range(0, len(inputs), max(1, batch_size)):
        batch = inputs[start : start + batch_size]
        ref = np.asarray(reference(batch), dtype=np.float64)
        cand = np.asarray(candidate(batch), dtype=np.float64)
        if ref.shape != cand.shape:
            raise ParityError(f"reference returned shape {ref.shape} but candidate returned {cand.shape}")
        ref, cand = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
        cosines.append(row_cosines(ref, cand))
        diffs.append(np.abs(ref - cand).max(axis=1))
    if not cosines:
        raise ParityError("no inputs to compare: parity needs at least one")
    return np.concatenate(cosines), np.concatenate(diffs)


def row_cosines(a: np.ndarray, b: np.ndarray, both_zero: float = 0.0) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (rows flattened), in float64.

    A zero row has no direction: its cosine is 0 (a failure) instead of NaN, or ``both_zero`` where both rows are
    zero (a layer output that is all zeros before and after has not moved).
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(norm_a * norm_b, 1e-12)
    return np.where((norm_a == 0) & (norm_b == 0), both_zero, cosine)


def cosine_statistics(cosine: np.ndarray, abs_diff: np.ndarray) -> dict[str, float | int]:
    """Summary of per-row agreement: the :class:`ParityResult` fields plus the 1st percentile of the cosine.

    The 1st percentile (linear interpolation) says how the worst faces fare without hanging on one outlier as the
    minimum does.
    """
    return {
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "p1_cosine": float(np.percentile(cosine, 1)),
        "max_abs_diff": float(abs_diff.max()),
        "n": int(len(cosine)),
    }


def drift_by_group(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    batch_size: int = 64,
) -> dict[str, Any]:
    """Embedding drift of ``candidate`` from ``reference`` over all inputs and per demographic group.

    Args:
        reference: the parent artifact's runner.
        candidate: the compressed artifact's runner.
        inputs: held-out faces, preprocessed for both.
        groups: group index of every input row (into ``group_names``); every group needs at least one row.
        group_names: group names.
        batch_size: rows per runtime call.

    Returns:
        :func:`cosine_statistics` over all rows (the :class:`ParityResult` keys at the top level, so readers of a
        plain parity record read this one too) and ``groups``: the same statistics per group.
    """
    groups = np.asarray(groups)
    if groups.shape != (len(inputs),):
        raise ValueError(f"{len(inputs)} inputs but groups has shape {groups.shape}")
    empty = [name for g, name in enumerate(group_names) if not (groups == g).any()]
    if empty:
        raise ValueError(f"no drift faces for group(s) {', '.join(empty)}: every group needs at least one")
    cosine, diff = row_agreement(reference, candidate, inputs, batch_size)
    per_group = {name: cosine_statistics(cosine[groups == g], diff[groups == g]) for g, name in enumerate(group_names)}
    return {**cosine_statistics(cosine, diff), "groups": per_group}


def format_group_drift(parity: dict[str, Any]) -> list[str]:
    """Markdown sub-bullets of a parity record's per-group drift, lowest mean cosine first; none without groups.

    For the release report's "Parity and drift" section, under the artifact's own line.
    """
    groups = parity.get("groups") or {}
    ranked = sorted(groups.items(), key=lambda item: item[1]["mean_cosine"])
    return [
        f"  - {name} ({s['n']} faces): mean cosine {s['mean_cosine']:.6f}, 1st percentile {s['p1_cosine']:.6f}, "
        f"min {s['min_cosine']:.6f}, max |diff| {s['max_abs_diff']:.3g}"
        for name, s in ranked
    ]


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
