"""Accuracy sources: what the search maximises, all behind `predict(configs) -> top-1 %`.

Three sources, from most to least faithful and from slowest to fastest:
- `SupernetAccuracy`: BN-recalibrated evaluation of the subnet taken from a trained
  supernet (seconds per subnet); results are appended to a JSON-lines file as they come,
  so an interrupted search loses nothing and a re-run is free.
- `FittedAccuracyPredictor`: a random forest fitted on subnets evaluated that way (the
  AttentiveNAS recipe: evaluate a few hundred, search with the predictor).
- `OfficialAccuracyPredictor`: the published AttentiveNAS ImageNet predictor (100-tree
  forest) read from the converted tree arrays and evaluated vectorised in numpy, for the
  full space. The project reads that format; it does not ship the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.space import ENCODING_SIZE, SubnetConfig, encode_many

log = logging.getLogger(__name__)


class AccuracySource(Protocol):
    """Anything that scores subnets by (predicted) top-1 accuracy in percent."""

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """One top-1 % per config, in order."""


class OfficialAccuracyPredictor:
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
    def load(cls, path: str | Path) -> "OfficialAccuracyPredictor":
        """Read `acc_predictor_trees.npz` (format in the AttentiveNAS reference README)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"official accuracy predictor {path} not found; pass the path of "
                "acc_predictor_trees.npz (converted AttentiveNAS predictor)"
            )
        with np.load(path) as arrays:
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
    def from_trees(cls, trees: Sequence[dict[str, np.ndarray]]) -> "OfficialAccuracyPredictor":
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


class FittedAccuracyPredictor:
    """A random forest on the 31-number encoding, fitted on evaluated subnets."""

    def __init__(self, n_estimators: int = 200, seed: int = 0) -> None:
        from sklearn.ensemble import RandomForestRegressor

        self._model = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=2,
                                            random_state=seed, n_jobs=1)
        self.n_train = 0

    def fit(self, configs: Sequence[SubnetConfig], accuracies: Sequence[float]) -> "FittedAccuracyPredictor":
        if len(configs) < 5:
            raise ConfigError(f"an accuracy predictor needs at least 5 evaluated subnets, got {len(configs)}")
        self._model.fit(encode_many(configs), np.asarray(accuracies, dtype=np.float64))
        self.n_train = len(configs)
        return self

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        if not self.n_train:
            raise ConfigError("the accuracy predictor is not fitted yet; call fit() first")
        return self._model.predict(encode_many(configs)) if configs else np.zeros(0)


#: `evaluate(configs) -> top-1 % per config`; in practice a closure over
#: `pipeline.train.evaluate(supernet, configs, data)`.
EvaluateFn = Callable[[Sequence[SubnetConfig]], Sequence[float]]


class SupernetAccuracy:
    """BN-recalibrated supernet evaluation, memoised in a JSON-lines file by config id."""

    def __init__(self, evaluate: EvaluateFn, cache_path: str | Path | None = None,
                 batch_size: int = 8) -> None:
        self._evaluate, self._batch = evaluate, batch_size
        self._path = Path(cache_path) if cache_path else None
        self._known: dict[str, float] = {}
        if self._path and self._path.is_file():
            for line in self._path.read_text().splitlines():
                record = _parse_line(line)
                if record:
                    self._known[record["id"]] = float(record["top1"])

    @property
    def evaluated(self) -> dict[str, float]:
        """Top-1 by config id of everything evaluated so far (this run and before)."""
        return dict(self._known)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        todo = list({c.id: c for c in configs if c.id not in self._known}.values())
        for start in range(0, len(todo), self._batch):
            chunk = todo[start:start + self._batch]
            scores = list(self._evaluate(chunk))
            for config, top1 in zip(chunk, scores):
                self._known[config.id] = float(top1)
                self._append({"id": config.id, "top1": float(top1), "config": config.to_dict()})
        return np.array([self._known[c.id] for c in configs], dtype=np.float64)

    def _append(self, record: dict[str, Any]) -> None:
        if self._path:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def _parse_line(line: str) -> dict[str, Any] | None:
    """One cached record, or None for a line torn by a kill mid-write."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "id" in record and "top1" in record else None
