"""Accuracy sources: what the search maximises, all behind `predict(configs) -> top-1 %`.

Three sources, from most to least faithful and from slowest to fastest:
- `SupernetAccuracy`: BN-recalibrated evaluation of the subnet taken from a trained
  supernet (seconds per subnet); results are appended to a JSON-lines file as they come,
  so an interrupted search loses nothing and a re-run is free.
- `FittedAccuracyPredictor`: a random forest fitted on subnets evaluated that way (the
  AttentiveNAS recipe: evaluate a few hundred, search with the predictor).
- `TreeForest` (`pipeline.space.forest`): the published AttentiveNAS ImageNet predictor
  (100-tree forest) read from the converted tree arrays and evaluated vectorised in numpy,
  for the full space. The project reads that format; it does not ship the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.space import SubnetConfig, encode_many

log = logging.getLogger(__name__)


class AccuracySource(Protocol):
    """Anything that scores subnets by (predicted) top-1 accuracy in percent, or by a
    score ordered like it (the zero-shot proxies of `pipeline.search.proxies`)."""

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """One top-1 % per config, in order."""


#: `FittedAccuracyPredictor` losses: a regression forest, or boosted trees trained to rank.
ACCURACY_LOSSES = ("regression", "pairwise")


class FittedAccuracyPredictor:
    """A model on the 31-number encoding, fitted on evaluated subnets.

    `loss="regression"`: a random forest on top-1 (the AttentiveNAS recipe).
    `loss="pairwise"`: gradient-boosted trees with xgboost's `rank:pairwise` objective
    (ReNAS: a search consumes the order, so train for the order), their scores mapped
    to top-1 % by one least-squares line on the training set, which keeps the order.
    """

    def __init__(self, n_estimators: int = 200, seed: int = 0, loss: str = "regression") -> None:
        if loss not in ACCURACY_LOSSES:
            raise ConfigError(f"accuracy predictor loss {loss!r} is unknown; use one of {ACCURACY_LOSSES}")
        self.loss, self.seed, self.n_estimators = loss, seed, n_estimators
        if loss == "regression":
            from sklearn.ensemble import RandomForestRegressor

            self._model = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=2,
                                                random_state=seed, n_jobs=1)
        else:
            from xgboost import XGBRanker

            # "mean" pairs, each subnet against every other (set in `fit`) as ReNAS compares all
            # pairs of a batch: xgboost's default "topk" compares only the top of the list and
            # ranked held-out subnets at tau 0.57, not 0.93; 32 random others per subnet gave
            # 0.665 where every pair gives 0.673 (demo space, 100 subnets, 10 x 5-fold)
            self._model = XGBRanker(objective="rank:pairwise", lambdarank_pair_method="mean",
                                    n_estimators=n_estimators, max_depth=3,
                                    learning_rate=0.05, subsample=0.8, random_state=seed, n_jobs=1)
        self._line = (1.0, 0.0)
        self.n_train = 0

    def fit(self, configs: Sequence[SubnetConfig], accuracies: Sequence[float]) -> "FittedAccuracyPredictor":
        if len(configs) < 5:
            raise ConfigError(f"an accuracy predictor needs at least 5 evaluated subnets, got {len(configs)}")
        x, y = encode_many(configs), np.asarray(accuracies, dtype=np.float64)
        if self.loss == "regression":
            self._model.fit(x, y)
        else:  # one query group: every pair of training subnets is compared
            self._model.set_params(lambdarank_num_pair_per_sample=max(1, len(y) - 1))
            self._model.fit(x, y, qid=np.zeros(len(y), dtype=np.int64))
            score = self._model.predict(x)
            slope, intercept = np.polyfit(score, y, 1) if np.ptp(score) > 0 else (0.0, float(y.mean()))
            self._line = (float(slope), float(intercept))
        self.n_train = len(configs)
        return self

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        if not self.n_train:
            raise ConfigError("the accuracy predictor is not fitted yet; call fit() first")
        if not configs:
            return np.zeros(0)
        raw = self._model.predict(encode_many(configs))
        return raw if self.loss == "regression" else self._line[0] * raw + self._line[1]


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
        self._configs: dict[str, SubnetConfig] = {}
        if self._path and self._path.is_file():
            for line in self._path.read_text().splitlines():
                record = _parse_line(line)
                if record:
                    self._known[record["id"]] = float(record["top1"])
                    if "config" in record:
                        self._configs[record["id"]] = SubnetConfig.from_dict(record["config"])

    @property
    def evaluated(self) -> dict[str, float]:
        """Top-1 by config id of everything evaluated so far (this run and before)."""
        return dict(self._known)

    def samples(self) -> tuple[list[SubnetConfig], np.ndarray]:
        """Every evaluated config (this run and before) with its top-1: what a ranker is fitted on."""
        configs = list(self._configs.values())
        return configs, np.array([self._known[c.id] for c in configs], dtype=np.float64)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        todo = list({c.id: c for c in configs if c.id not in self._known}.values())
        for start in range(0, len(todo), self._batch):
            chunk = todo[start:start + self._batch]
            scores = list(self._evaluate(chunk))
            for config, top1 in zip(chunk, scores):
                self._known[config.id], self._configs[config.id] = float(top1), config
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
