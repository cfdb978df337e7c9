"""Ranking-trained models: fitted to order subnets correctly rather than to regress values.

A search only compares candidates, so what it needs from a predictor is the order
(ReNAS, Xu et al. 2021: a pairwise loss beats a regression loss at the same data).
`fit_pairwise_linear` minimises a pairwise logistic loss on feature differences,
log(1 + exp(-sign(y_i - y_j) w.(x_i - x_j))), over sampled pairs; its score is then mapped
to the target's units by one weighted affine fit, which keeps the order and lets
budgets still be checked in milliseconds. The result is a plain `LinearModel`, so it
saves and predicts like the ridge kind.
"""
from __future__ import annotations

import numpy as np

from pipeline.predict.models import LinearModel

#: Pairs sampled for the pairwise loss (all pairs when there are fewer).
MAX_PAIRS = 20_000


def sample_pairs(y: np.ndarray, max_pairs: int = MAX_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with y[i] != y[j]: all of them, or `max_pairs` drawn at random."""
    n = len(y)
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i, j = rng.integers(0, n, size=(2, max_pairs))
    keep = y[i] != y[j]
    return i[keep], j[keep]


def fit_pairwise_linear(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None,
                        seed: int = 0) -> LinearModel:
    """Linear score from a pairwise logistic loss, calibrated to y (see module doc).

    `weight` (e.g. 1/y^2, relative error) weights only the calibration: the order comes
    from the pairs alone.
    """
    from sklearn.linear_model import LogisticRegressionCV

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    i, j = sample_pairs(y, seed=seed)
    if not len(i):  # every target equal: nothing to order, predict the constant
        return LinearModel(mean, scale, np.zeros(x.shape[1]), float(y.mean()))
    # both orientations of every pair, so the classes balance and no intercept is needed
    diff = np.vstack([z[i] - z[j], z[j] - z[i]])
    label = np.concatenate([y[i] > y[j], y[j] > y[i]])
    clf = LogisticRegressionCV(Cs=8, cv=3, fit_intercept=False, max_iter=2000, random_state=seed,
                               l1_ratios=(0.0,), scoring="neg_log_loss", use_legacy_attributes=False)
    clf.fit(diff, label)
    direction = clf.coef_[0]
    score = z @ direction
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
    design = np.column_stack([score, np.ones_like(score)]) * np.sqrt(w)[:, None]
    (a, b), *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
    return LinearModel(mean, scale, direction * a, float(b))
