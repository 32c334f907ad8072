"""The insightface verification protocol (``../shared/REFERENCE.md`` §3), vectorised.

Every FR paper's LFW/RFW number comes from this exact procedure, so it is reproduced to the last detail: flip
embeddings are added and then L2-normalised; the distance is the squared L2 of unit vectors (0..4); the threshold grid
is ``np.arange(0, 4, 0.01)``; a pair is predicted "same" when its distance is strictly below the threshold; the pairs
are split into 10 contiguous, unshuffled folds (sklearn ``KFold(shuffle=False)`` sizes); each fold is scored at the
threshold that is best on the other nine (the first maximum on ties); the result is the mean and the population std
of the 10 fold accuracies. TAR@FAR (insightface's ``calculate_val``) uses its own grid, ten times finer:
``np.arange(0, 4, 0.001)``.

Instead of looping over 400 thresholds per fold, the number of correct predictions at every threshold comes from two
``searchsorted`` calls on the fold's sorted genuine and impostor distances: identical counts, O(n log n).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from factory.runtime.embedding import l2_normalize

THRESHOLDS = np.arange(0, 4, 0.01)
# insightface's ``calculate_val`` searches a grid ten times finer than the accuracy grid: on the 0.01 grid TAR@FAR
# differs from insightface's logs in the fourth digit.
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
N_FOLDS = 10


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance of unit vectors for pairs laid out as rows ``2k`` and ``2k+1`` (the ``.bin`` layout)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) % 2:
        raise ValueError(f"expected 2N×D pair embeddings (rows 2k, 2k+1 form pair k), got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values")
    unit = l2_normalize(embeddings)
    return np.square(unit[0::2] - unit[1::2]).sum(axis=1)


def fold_slices(n: int, n_folds: int = N_FOLDS) -> list[slice]:
    """Contiguous folds with sklearn ``KFold(shuffle=False)`` sizes: the first ``n % n_folds`` are one larger."""
    if n < n_folds:
        raise ValueError(f"{n} pairs cannot be split into {n_folds} folds")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]


def correct_counts(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Correct predictions (``dist < t`` ⇔ same) at every threshold ``t``, without a threshold loop."""
    genuine = np.sort(dist[issame])
    impostor = np.sort(dist[~issame])
    true_accepts = np.searchsorted(genuine, thresholds, side="left")  # genuine with dist < t
    true_rejects = len(impostor) - np.searchsorted(impostor, thresholds, side="left")  # impostor with dist >= t
    return true_accepts + true_rejects


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of the 10-fold protocol.

    Attributes:
        accuracy_mean: mean of the fold accuracies (what papers report as "accuracy").
        accuracy_std: population std of the fold accuracies (insightface's ``np.std``).
        fold_accuracies: accuracy of each held-out fold.
        fold_thresholds: the distance threshold chosen for each fold on the other nine.
        pairs: number of pairs; genuine: number of genuine pairs.
    """

    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    pairs: int
    genuine: int

    @property
    def threshold_mean(self) -> float:
        """Mean chosen threshold (squared-L2 distance) over folds."""
        return float(np.mean(self.fold_thresholds))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields plus ``threshold_mean``."""
        return {**asdict(self), "threshold_mean": self.threshold_mean}


def verify_distances(dist: np.ndarray, issame: np.ndarray, n_folds: int = N_FOLDS) -> VerificationResult:
    """The 10-fold protocol on precomputed pair distances (file order decides the folds)."""
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if dist.shape != issame.shape or dist.ndim != 1:
        raise ValueError(f"{dist.shape[0] if dist.ndim else 0} distances but {issame.shape} issame labels")
    folds = fold_slices(len(dist), n_folds)
    per_fold = np.stack([correct_counts(dist[f], issame[f]) for f in folds])  # folds × thresholds
    total = per_fold.sum(axis=0)
    accuracies, thresholds = [], []
    for k, fold in enumerate(folds):
        n_test = fold.stop - fold.start
        train_accuracy = (total - per_fold[k]) / (len(dist) - n_test)
        best = int(np.argmax(train_accuracy))  # first maximum, as np.argmax in insightface
        accuracies.append(float(per_fold[k, best] / n_test))
        thresholds.append(float(THRESHOLDS[best]))
    return VerificationResult(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=tuple(accuracies),
        fold_thresholds=tuple(thresholds),
        pairs=len(dist),
        genuine=int(issame.sum()),
    )


def correct_decisions(dist: np.ndarray, issame: np.ndarray, result: VerificationResult) -> np.ndarray:
    """Whether the protocol got each pair right: scored at its fold's chosen threshold (``dist < t`` ⇔ same)."""
    dist, issame = np.asarray(dist, np.float64), np.asarray(issame, bool)
    correct = np.empty(len(dist), bool)
    folds = fold_slices(len(dist), len(result.fold_thresholds))
    for fold, threshold in zip(folds, result.fold_thresholds, strict=True):
        correct[fold] = (dist[fold] < threshold) == issame[fold]
    return correct


def verify_pairs(embeddings: np.ndarray, issame: np.ndarray, n_folds: int = N_FOLDS) -> VerificationResult:
    """The 10-fold protocol on pair embeddings (rows ``2k``, ``2k+1`` = pair ``k``); normalises them first."""
    issame = np.asarray(issame, dtype=bool)
    if len(embeddings) != 2 * len(issame):
        raise ValueError(f"{len(embeddings)} embedding rows for {len(issame)} pairs (expected {2 * len(issame)})")
    return verify_distances(pair_distances(embeddings), issame, n_folds)


def tar_at_far(
    dist: np.ndarray,
    issame: np.ndarray,
    far_target: float,
    n_folds: int = N_FOLDS,
    thresholds: np.ndarray = VAL_THRESHOLDS,
) -> dict[str, float]:
    """Insightface's per-fold TAR@FAR (``calculate_val``), with ``np.interp`` as the working interpolation.

    On the other nine folds the distance threshold reaching ``far_target`` is interpolated over the FAR curve on
    ``thresholds`` (insightface's 0.001 grid; threshold 0 when the target is never reached); the held-out fold is
    scored there.

    Returns:
        ``{"tar": mean, "tar_std": population std, "far": mean}`` over folds.
    """
    dist, issame = np.asarray(dist, np.float64), np.asarray(issame, bool)
    folds = fold_slices(len(dist), n_folds)
    tars, fars = [], []
    for fold in folds:
        train = np.ones(len(dist), bool)
        train[fold] = False
        impostor = np.sort(dist[train & ~issame])
        far_curve = np.searchsorted(impostor, thresholds, side="left") / max(len(impostor), 1)
        threshold = float(np.interp(far_target, far_curve, thresholds)) if far_curve.max() >= far_target else 0.0
        test_d, test_same = dist[fold], issame[fold]
        accepted = test_d < threshold
        tars.append(float(accepted[test_same].mean()) if test_same.any() else float("nan"))
        fars.append(float(accepted[~test_same].mean()) if (~test_same).any() else float("nan"))
    return {"tar": float(np.mean(tars)), "tar_std": float(np.std(tars)), "far": float(np.mean(fars))}


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over all pairs at every distinct similarity score (sklearn's ``drop_intermediate=False``).

    Returns ``(fmr, tmr, thresholds)`` with thresholds decreasing; a pair is accepted when ``score >= threshold``.
    The first point is ``(0, 0)`` at ``+inf``.
    """
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_same = scores[order], issame[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]  # last index of each distinct score
    tp = np.cumsum(sorted_same)[last]
    fp = np.cumsum(~sorted_same)[last]
    tmr = np.r_[0.0, tp / max(issame.sum(), 1)]
    fmr = np.r_[0.0, fp / max((~issame).sum(), 1)]
    return fmr, tmr, np.r_[np.inf, sorted_scores[last]]
