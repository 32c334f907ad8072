"""Accuracy and TAR@FAR exactly as insightface computes them: hand-computed cases and its loops, through the CLI too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from factory.cli import main
from factory.evaluate.verification import THRESHOLDS, VAL_THRESHOLDS, tar_at_far, verify_distances


def kfold(n: int) -> list[np.ndarray]:
    """sklearn ``KFold(n_splits=10, shuffle=False)`` test indices."""
    sizes = [n // 10 + (1 if k < n % 10 else 0) for k in range(10)]
    starts = np.cumsum([0, *sizes])
    return [np.arange(starts[k], starts[k + 1]) for k in range(10)]


def insightface_accuracy(dist: np.ndarray, issame: np.ndarray) -> float:
    """``calculate_roc``'s accuracy: thresholds 0..3.99 step 0.01, best on nine folds, scored on the tenth."""
    accs = []
    for test in kfold(len(dist)):
        train = np.setdiff1d(np.arange(len(dist)), test)
        acc_train = [np.mean(np.less(dist[train], t) == issame[train]) for t in np.arange(0, 4, 0.01)]
        best = np.arange(0, 4, 0.01)[int(np.argmax(acc_train))]
        accs.append(np.mean(np.less(dist[test], best) == issame[test]))
    return float(np.mean(accs))


def insightface_val(dist: np.ndarray, issame: np.ndarray, far_target: float) -> tuple[float, float, float]:
    """``calculate_val`` with its own grid (0..3.999 step 0.001); interp1d over the FAR curve is np.interp."""
    thresholds = np.arange(0, 4, 0.001)
    vals, fars = [], []
    for test in kfold(len(dist)):
        train = np.setdiff1d(np.arange(len(dist)), test)
        far_train = np.array(
            [np.sum(np.less(dist[train], t) & ~issame[train]) / np.sum(~issame[train]) for t in thresholds]
        )
        threshold = np.interp(far_target, far_train, thresholds) if far_train.max() >= far_target else 0.0
        accept = np.less(dist[test], threshold)
        vals.append(np.sum(accept & issame[test]) / np.sum(issame[test]))
        fars.append(np.sum(accept & ~issame[test]) / np.sum(~issame[test]))
    return float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars))


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Ten identical folds of four pairs: genuine 1.0030 and 1.3, impostor 1.0057 and 2.5.

    On any nine folds FAR(t) is 0 up to t = 1.0057 and 1/2 above it. On insightface's 0.001 grid the curve steps
    from 0 at 1.005 to 0.5 at 1.006, so FAR 0.1 interpolates to 1.005 + 0.001 * 0.1 / 0.5 = 1.0052: the genuine pair
    at 1.0030 is accepted (TAR 1/2), no impostor is (FAR 0). On the 0.01 grid the step is from 1.00 to 1.01, the
    threshold 1.002, and nothing is accepted (TAR 0).
    """
    fold_dist, fold_same = np.array([1.0030, 1.3, 1.0057, 2.5]), np.array([True, True, False, False])
    return np.tile(fold_dist, 10), np.tile(fold_same, 10)


def test_tar_at_far_hand_computed_on_insightface_grid() -> None:
    dist, issame = hand_case()
    assert tar_at_far(dist, issame, 0.1) == {"tar": 0.5, "tar_std": 0.0, "far": 0.0}
    assert insightface_val(dist, issame, 0.1) == (0.5, 0.0, 0.0)


def test_the_accuracy_grid_would_have_failed_the_hand_case() -> None:
    dist, issame = hand_case()
    assert tar_at_far(dist, issame, 0.1, thresholds=THRESHOLDS)["tar"] == 0.0
    assert len(VAL_THRESHOLDS) == 4000 and VAL_THRESHOLDS[1] == pytest.approx(0.001)


def test_accuracy_hand_computed() -> None:
    """Ten folds of (genuine 0.5, impostor 1.2): every threshold in (0.5, 1.2] separates them; the first maximum
    of the grid, 0.51, is chosen in every fold: accuracy 1. One fold with its genuine at 1.25 scores 1/2."""
    dist = np.tile([0.5, 1.2], 10)
    issame = np.tile([True, False], 10)
    result = verify_distances(dist, issame)
    assert result.accuracy_mean == 1.0 and result.fold_thresholds == (0.51,) * 10
    dist[0] = 1.25
    result = verify_distances(dist, issame)
    assert result.fold_accuracies[0] == 0.5 and result.accuracy_mean == pytest.approx(0.95)


def random_case(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    issame = rng.permutation(np.arange(n) % 2 == 0)  # exactly half impostors
    return np.where(issame, rng.normal(1.0, 0.25, n), rng.normal(1.55, 0.2, n)).clip(0, 3.99), issame


@pytest.mark.parametrize("target", [1e-3, 1e-2])
def test_tar_at_far_equals_insightface_loop_on_6000_pairs(target: float) -> None:
    dist, issame = random_case()
    got = tar_at_far(dist, issame, target)
    assert (got["tar"], got["tar_std"], got["far"]) == pytest.approx(insightface_val(dist, issame, target), abs=1e-12)
    # the coarse grid gives a different figure on the same pairs: the gap users saw against insightface's logs
    coarse = tar_at_far(dist, issame, target, thresholds=THRESHOLDS)["tar"]
    assert abs(coarse - got["tar"]) > 1e-6


def test_factory_eval_embeddings_matches_insightface(tmp_path: Path) -> None:
    """Embeddings whose squared distances are the random case's: the CLI's JSON equals insightface's loops.

    6,000 pairs hold about 3,000 impostors: FAR 1e-3 is supported (rule of 3) and a plain number; FAR 1e-4 is not,
    and its figures come marked, the estimate still insightface's.
    """
    dist, issame = random_case(6000, seed=4)
    # two unit vectors at squared distance d: angle with cos = 1 - d/2
    cos = 1.0 - dist / 2.0
    first = np.tile([1.0, 0.0], (len(dist), 1))
    second = np.stack([cos, np.sqrt(1.0 - cos**2)], axis=1)
    path = tmp_path / "pairs.npz"
    np.savez(path, embeddings=np.stack([first, second], axis=1).reshape(-1, 2), issame=issame)
    out = CliRunner().invoke(main, ["eval", "--embeddings", str(path), "--json", "--bootstrap", "100"])
    assert out.exit_code == 0, out.output
    overall = json.loads(out.output)["overall"]
    assert overall["accuracy_mean"] == pytest.approx(insightface_accuracy(dist, issame), abs=1e-6)
    assert (~issame).sum() >= 3000
    supported = overall["tar_at_far"]["1e-03"]
    assert supported["supported"] is True
    expected = insightface_val(dist, issame, 1e-3)
    assert (supported["tar"], supported["tar_std"], supported["far"]) == pytest.approx(expected, abs=1e-6)
    marked = overall["tar_at_far"]["1e-04"]
    assert marked["supported"] is False and marked["tar"]["unsupported"].startswith("rule of 3")
    expected = insightface_val(dist, issame, 1e-4)
    got = (marked["tar"]["estimate"], marked["tar_std"]["estimate"], marked["far"]["estimate"])
    assert got == pytest.approx(expected, abs=1e-6)
