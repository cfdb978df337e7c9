"""A regression forest stored as plain arrays, evaluated vectorised over candidates.

The official AttentiveNAS ImageNet accuracy predictor ships (converted) in this layout:
for tree `i`, `tree{i:03d}_left/right` (child ids, -1 at a leaf), `_feature`,
`_threshold` (go left when `x[feature] <= threshold`) and `_value`; the prediction is
the mean leaf value over trees, for the 31-number `SubnetConfig.encode()` input. Both the
attentive sampler (training) and the search (accuracy source) read it through this class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.space.config import ENCODING_SIZE, SubnetConfig, encode_many


class TreeForest:
    """The official AttentiveNAS forest, all trees walked at once over all candidates.

    The trees are packed into flat node arrays (tree `t`'s node `n` at `offset[t] + n`);
    a leaf points to itself, so `depth` steps of `node = child(node, x)` land every
    (candidate, tree) pair on its leaf with no per-tree Python loop.
    """

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                 right: np.ndarray, value: np.ndarray, roots: np.ndarray, depth: int) -> None:
        self._feature, self._threshold = feature, threshold
        self._left, self._right, self._value = left, right, value
        self._roots, self._depth = roots, depth

    @classmethod
    def load(cls, path: str | Path) -> "TreeForest":
        """Read `acc_predictor_trees.npz` (format in the AttentiveNAS reference README)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"official accuracy predictor {path} not found; pass the path of "
                "acc_predictor_trees.npz (converted AttentiveNAS predictor)"
            )
        try:
            arrays = np.load(path)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read tree arrays from {path}: {err}; pass a forest .npz file") from err
        with arrays:
            names = sorted({k.split("_")[0] for k in arrays.files if k.startswith("tree")})
            if not names:
                raise ConfigError(f"{path} holds no tree arrays (expected keys treeNNN_left, ...)")
            try:
                trees = [{part: arrays[f"{name}_{part}"] for part in
                          ("feature", "threshold", "left", "right", "value")} for name in names]
            except KeyError as err:
                raise ConfigError(f"{path} lacks array {err}; is it the converted predictor?") from err
        return cls.from_trees(trees)

    @classmethod
    def from_trees(cls, trees: Sequence[dict[str, np.ndarray]]) -> "TreeForest":
        """Pack per-tree arrays (scikit-learn layout: child -1 at a leaf) into flat arrays."""
        sizes = np.array([len(t["left"]) for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        feature, threshold, left, right, value = [], [], [], [], []
        depth = 0
        for off, tree in zip(offsets, trees):
            nodes = np.arange(len(tree["left"]))
            leaf = tree["left"] < 0
            feature.append(np.where(leaf, 0, tree["feature"]).astype(np.int64))
            threshold.append(np.asarray(tree["threshold"], dtype=np.float64))
            left.append(np.where(leaf, nodes, tree["left"]) + off)
            right.append(np.where(leaf, nodes, tree["right"]) + off)
            value.append(np.asarray(tree["value"], dtype=np.float64).reshape(-1))
            depth = max(depth, _tree_depth(tree["left"], tree["right"]))
        if max(int(np.max(f)) for f in feature) >= ENCODING_SIZE:
            raise ConfigError(f"predictor tests a feature beyond the {ENCODING_SIZE}-number encoding")
        return cls(np.concatenate(feature), np.concatenate(threshold), np.concatenate(left),
                   np.concatenate(right), np.concatenate(value), offsets.astype(np.int64), depth)

    @property
    def num_trees(self) -> int:
        return len(self._roots)

    def predict_encoded(self, x: np.ndarray) -> np.ndarray:
        """Forest mean for an (N, 31) array of encoded configs."""
        x = np.asarray(x, dtype=np.float64)
        node = np.broadcast_to(self._roots, (len(x), self.num_trees)).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self._depth):
            go_left = x[rows, self._feature[node]] <= self._threshold[node]
            node = np.where(go_left, self._left[node], self._right[node])
        return self._value[node].mean(axis=1)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self.predict_encoded(encode_many(configs))


def _tree_depth(left: np.ndarray, right: np.ndarray) -> int:
    """Number of edges on the longest root-to-leaf path."""
    depth, frontier = 0, np.array([0])
    while True:
        frontier = frontier[left[frontier] >= 0]
        if not len(frontier):
            return depth
        frontier = np.concatenate([left[frontier], right[frontier]])
        depth += 1
