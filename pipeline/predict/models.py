"""Regressors that save to plain JSON and predict with vectorised numpy.

sklearn fits them (RidgeCV, GradientBoostingRegressor); what is kept is only arrays
(coefficients, tree nodes), so a saved predictor does not depend on the sklearn
version that fitted it, loads in milliseconds and predicts a batch without Python loops
over candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import RidgeCV

RIDGE_ALPHAS = tuple(np.logspace(-4, 3, 15))


@dataclass(frozen=True)
class LinearModel:
    """y = ((x - mean) / scale) @ coef + intercept; fitted with relative-error weights."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {"type": "linear", "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": float(self.intercept)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LinearModel":
        return cls(np.asarray(raw["mean"]), np.asarray(raw["scale"]), np.asarray(raw["coef"]),
                   float(raw["intercept"]))


def fit_ridge(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> LinearModel:
    """Ridge with its penalty chosen by efficient leave-one-out CV over `RIDGE_ALPHAS`.

    `weight` (e.g. 1/y^2) makes the squared error relative, which is what MAPE and the
    +-10% goal measure.
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit((x - mean) / scale, y, sample_weight=weight)
    return LinearModel(mean, scale, np.asarray(model.coef_, dtype=np.float64), float(model.intercept_))


@dataclass(frozen=True)
class TreeEnsemble:
    """A boosted sum of regression trees as padded node arrays (one row per tree).

    A sample goes left when x[feature] <= threshold; leaves point at themselves, so
    `max_depth` rounds of fancy indexing walk a tree for every sample at once.
    """

    init: float
    learning_rate: float
    feature: np.ndarray  # (T, nodes) int, 0 at leaves
    threshold: np.ndarray  # (T, nodes)
    left: np.ndarray  # (T, nodes) int
    right: np.ndarray  # (T, nodes) int
    value: np.ndarray  # (T, nodes)
    max_depth: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        # sklearn compares float32 features with float64 thresholds; do the same.
        n = len(x)
        columns = np.ascontiguousarray(x.astype(np.float32).astype(np.float64).T).ravel()
        sample = np.arange(n, dtype=np.intp)
        total = np.zeros(n)
        # One tree at a time, vectorised over samples: the arrays stay in cache, which
        # is several times faster than walking all trees at once.
        for feature, threshold, left, right, value in zip(self.feature, self.threshold, self.left,
                                                          self.right, self.value):
            node = np.zeros(n, dtype=np.intp)
            for _ in range(self.max_depth):
                go_left = columns[feature[node] * n + sample] <= threshold[node]
                node = np.where(go_left, left[node], right[node])
            total += value[node]
        return self.init + self.learning_rate * total

    def to_dict(self) -> dict[str, Any]:
        return {"type": "trees", "init": self.init, "learning_rate": self.learning_rate,
                "max_depth": self.max_depth,
                **{k: getattr(self, k).tolist() for k in ("feature", "threshold", "left", "right", "value")}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TreeEnsemble":
        return cls(float(raw["init"]), float(raw["learning_rate"]),
                   np.asarray(raw["feature"], dtype=np.int64), np.asarray(raw["threshold"]),
                   np.asarray(raw["left"], dtype=np.int64), np.asarray(raw["right"], dtype=np.int64),
                   np.asarray(raw["value"]), int(raw["max_depth"]))


def fit_trees(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, n_trees: int = 200,
              max_depth: int = 3, learning_rate: float = 0.05, seed: int = 0) -> TreeEnsemble:
    """Gradient boosting (squared loss, subsampled) exported to arrays."""
    gbr = GradientBoostingRegressor(n_estimators=n_trees, max_depth=max_depth, learning_rate=learning_rate,
                                    subsample=0.8, min_samples_leaf=2, random_state=seed)
    gbr.fit(x, y, sample_weight=weight)
    trees = [est.tree_ for est in gbr.estimators_[:, 0]]
    width = max(t.node_count for t in trees)

    def padded(attr: str, dtype) -> np.ndarray:
        out = np.zeros((len(trees), width), dtype=dtype)
        for i, t in enumerate(trees):
            out[i, :t.node_count] = getattr(t, attr) if attr != "value" else t.value[:, 0, 0]
        return out

    left, right = padded("children_left", np.int64), padded("children_right", np.int64)
    own = np.broadcast_to(np.arange(width), left.shape)
    leaf = left < 0
    left, right = np.where(leaf, own, left), np.where(leaf, own, right)
    feature = np.where(leaf, 0, padded("feature", np.int64))
    init = float(np.asarray(gbr.init_.constant_).ravel()[0])
    return TreeEnsemble(init, learning_rate, feature, padded("threshold", np.float64), left, right,
                        padded("value", np.float64), max_depth)


def model_from_dict(raw: dict[str, Any]) -> LinearModel | TreeEnsemble:
    """Inverse of `to_dict` for either model type."""
    kinds = {"linear": LinearModel, "trees": TreeEnsemble}
    return kinds[raw["type"]].from_dict(raw)
