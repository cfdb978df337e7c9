"""Scores candidates once: latency on every device and accuracy, memoised by config.

Latency is cheap (a predictor) and is asked first, so infeasible candidates never cost
an accuracy evaluation (which may be a BN-recalibrated supernet run). The evaluator is
also the archive every search method reads its results and Pareto front from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.search.accuracy import AccuracySource
from pipeline.search.latency import LatencyModel
from pipeline.space import SubnetConfig


@dataclass(frozen=True)
class Budget:
    """A latency constraint: for each named device, predicted latency <= limit (ms)."""

    limits: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", tuple((str(d), float(ms)) for d, ms in self.limits))
        if not self.limits:
            raise ConfigError("a budget needs at least one (device, ms) limit")
        for device, limit in self.limits:
            if not limit > 0:
                raise ConfigError(f"budget for {device} must be > 0 ms, got {limit}")

    @classmethod
    def single(cls, device: str, ms: float) -> "Budget":
        return cls(((device, float(ms)),))

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(d for d, _ in self.limits)

    @property
    def label(self) -> str:
        return ",".join(f"{d}<={ms:g}ms" for d, ms in self.limits)

    def to_dict(self) -> dict[str, float]:
        return dict(self.limits)


@dataclass(frozen=True)
class Candidate:
    """One scored subnet."""

    config: SubnetConfig
    accuracy: float
    latency: Mapping[str, float]

    def to_dict(self) -> dict:
        return {"id": self.config.id, "accuracy": round(self.accuracy, 4),
                "latency_ms": {d: round(v, 4) for d, v in self.latency.items()},
                "config": self.config.to_dict()}


class Evaluator:
    """Memoised scoring against one accuracy source and one latency model per device."""

    def __init__(self, accuracy: AccuracySource, latency: Mapping[str, LatencyModel]) -> None:
        if not latency:
            raise ConfigError("the search needs a latency model for at least one device")
        self.accuracy_source = accuracy
        self.devices = tuple(latency)
        self._models = dict(latency)
        self._latency: dict[SubnetConfig, np.ndarray] = {}
        self._configs: list[SubnetConfig] = []
        self._acc: list[float] = []
        self._lat_rows: list[np.ndarray] = []
        self._scored: set[SubnetConfig] = set()

    # ------------------------------------------------------------------ scoring
    def latency(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """(N, devices) predicted latency, each distinct config predicted once."""
        todo = list(dict.fromkeys(c for c in configs if c not in self._latency))
        if todo:
            cols = [np.asarray(self._models[d].predict(todo), dtype=np.float64) for d in self.devices]
            for i, c in enumerate(todo):
                self._latency[c] = np.array([col[i] for col in cols])
        if not configs:
            return np.zeros((0, len(self.devices)))
        return np.stack([self._latency[c] for c in configs])

    def feasible(self, latency: np.ndarray, budget: Budget) -> np.ndarray:
        """Boolean mask of rows of a latency matrix that meet `budget`."""
        ok = np.ones(len(latency), dtype=bool)
        for device, limit in budget.limits:
            if device not in self.devices:
                raise ConfigError(f"budget names device {device!r} but latency models exist for {list(self.devices)}")
            ok &= latency[:, self.devices.index(device)] <= limit
        return ok

    def score(self, configs: Sequence[SubnetConfig]) -> None:
        """Add configs not scored yet to the archive (accuracy evaluated in one batch)."""
        new = list(dict.fromkeys(c for c in configs if c not in self._scored))
        if not new:
            return
        acc = np.asarray(self.accuracy_source.predict(new), dtype=np.float64)
        lat = self.latency(new)
        for c, a, row in zip(new, acc, lat):
            self._configs.append(c)
            self._acc.append(float(a))
            self._lat_rows.append(row)
            self._scored.add(c)

    def is_scored(self, config: SubnetConfig) -> bool:
        return config in self._scored

    # ------------------------------------------------------------------ archive
    @property
    def n_scored(self) -> int:
        return len(self._configs)

    def arrays(self) -> tuple[list[SubnetConfig], np.ndarray, np.ndarray]:
        """Archive as (configs, accuracy (N,), latency (N, devices))."""
        lat = np.stack(self._lat_rows) if self._lat_rows else np.zeros((0, len(self.devices)))
        return self._configs, np.array(self._acc), lat

    def candidate(self, index: int) -> Candidate:
        return Candidate(self._configs[index], self._acc[index],
                         dict(zip(self.devices, map(float, self._lat_rows[index]))))

    def top_feasible(self, budget: Budget, k: int) -> list[int]:
        """Archive indices of the `k` most accurate candidates meeting `budget`."""
        _, acc, lat = self.arrays()
        idx = np.flatnonzero(self.feasible(lat, budget))
        return idx[np.argsort(-acc[idx], kind="stable")[:k]].tolist()

    def best(self, budget: Budget) -> Candidate | None:
        top = self.top_feasible(budget, 1)
        return self.candidate(top[0]) if top else None

    def pareto_front(self) -> list[Candidate]:
        """Non-dominated archive members: no other is at least as accurate and as fast on
        every device and strictly better in one. Sorted by latency on the first device."""
        _, acc, lat = self.arrays()
        return [self.candidate(i) for i in pareto_indices(acc, lat)]


def pareto_indices(accuracy: np.ndarray, latency: np.ndarray) -> list[int]:
    """Indices of the non-dominated points (maximise accuracy, minimise every latency).

    Points are visited by accuracy (descending), latency as tie-break; a point is kept
    when no kept point is at least as good everywhere. Cost O(N x front size).
    """
    latency = latency.reshape(len(accuracy), -1)
    order = np.lexsort((*latency.T[::-1], -accuracy))
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.array(kept)
            dominated = (accuracy[k] >= accuracy[i]) & np.all(latency[k] <= latency[i], axis=1)
            if dominated.any():
                continue
        kept.append(int(i))
    return sorted(kept, key=lambda i: tuple(latency[i]))
