"""NSGA-II over the space: one search returns the Pareto set over accuracy and several costs.

The per-budget evolution (`methods.evolve`) must be rerun for every device and budget;
NSGA-II (Deb et al. 2002, as NATv2/OFAv2 use it over Once-for-All supernets) keeps a
population spread along the whole trade-off between accuracy, latency on each device,
parameters and MFLOPs, so every (device, budget) pair is then served from the one set
(`ParetoResult.serve`) without another search.

Objectives are names: `accuracy` (maximised), `latency:DEVICE` (ms on a device with a
latency model), `params` (millions), `mflops`. Costs are columns of the shared
`Evaluator` archive (devices by name, plus `params`/`mflops`), so candidates, budgets
and the Pareto front work as in the other methods. Offspring come from the space's own
crossover and mutation; children outside the optional `limits` (the loosest budget per
device) are redrawn on predicted latency before costing an accuracy evaluation.

Hypervolume is reported in a normalised objective space: each objective is mapped to
[0, 1] between its values at the space's largest and smallest subnets (the two ends of
every trade-off), with the reference point at 1.1 on every axis.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.atomic import write_json
from pipeline.errors import ConfigError
from pipeline.progress import progress_bar
from pipeline.search.accuracy import AccuracySource
from pipeline.search.evaluator import Budget, Candidate, Evaluator, pareto_indices
from pipeline.search.latency import FlopsModel, LatencyModel, ParamsModel
from pipeline.search.methods import SearchResult, _draw
from pipeline.search.pareto import crowding_distance, hypervolume, non_dominated_sort
from pipeline.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)

ACCURACY, PARAMS, MFLOPS = "accuracy", "params", "mflops"
LATENCY_PREFIX = "latency:"
#: Reference point of the normalised hypervolume, just beyond the worst end on every axis.
HV_REFERENCE = 1.1


@dataclass(frozen=True)
class NSGA2Config:
    """Knobs of NSGA-II: population, generations, the variation operators' rates."""

    population: int = 100
    generations: int = 20
    mutate_prob: float = 0.1
    crossover_prob: float = 0.5
    seed: int = 0
    #: rounds of redrawing before a generation settles for fewer feasible children
    max_draw_rounds: int = 20

    def __post_init__(self) -> None:
        if self.population < 4 or self.generations < 0 or not 0 < self.mutate_prob <= 1 \
                or not 0 < self.crossover_prob < 1 or self.max_draw_rounds < 1:
            raise ConfigError(f"NSGA-II settings out of range ({self}); need population >= 4, generations >= 0, "
                              "0 < mutate_prob <= 1, 0 < crossover_prob < 1, max_draw_rounds >= 1")


def parse_objectives(text: str, devices: Sequence[str]) -> tuple[str, ...]:
    """'accuracy,latency,params' -> ('accuracy', 'latency:<each device>', 'params').

    `latency` alone means every device; `latency:NAME` one of them. Accuracy is always
    an objective (a front over costs alone is just the smallest subnet).
    """
    out: list[str] = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        if word == "latency":
            out += [LATENCY_PREFIX + d for d in devices]
        elif word.startswith(LATENCY_PREFIX):
            if word[len(LATENCY_PREFIX):] not in devices:
                raise ConfigError(f"objective {word!r} names a device without a latency model; "
                                  f"pass it with --device (have {list(devices)})")
            out.append(word)
        elif word in (ACCURACY, PARAMS, MFLOPS):
            out.append(word)
        else:
            raise ConfigError(f"unknown objective {word!r}; use accuracy, latency, latency:DEVICE, params, mflops")
    out = list(dict.fromkeys(out))
    if ACCURACY not in out:
        raise ConfigError(f"objectives {out} lack accuracy; add it (e.g. --objectives accuracy,latency)")
    if len(out) < 2:
        raise ConfigError("NSGA-II needs accuracy and at least one cost (latency, params or mflops)")
    return tuple(out)


def column(objective: str) -> str:
    """The Evaluator column a cost objective reads (a device name, `params` or `mflops`)."""
    return objective[len(LATENCY_PREFIX):] if objective.startswith(LATENCY_PREFIX) else objective


def cost_models(space: SearchSpace, latency: Mapping[str, LatencyModel], objectives: Sequence[str],
                num_classes: int = 1000) -> dict[str, LatencyModel]:
    """Evaluator columns: every device's latency model, plus params/mflops when they are objectives."""
    clash = {PARAMS, MFLOPS} & set(latency)
    if clash:
        raise ConfigError(f"device name(s) {sorted(clash)} clash with the objectives params/mflops; rename the device")
    models = dict(latency)
    if PARAMS in objectives:
        models[PARAMS] = ParamsModel(space, num_classes)
    if MFLOPS in objectives:
        models[MFLOPS] = FlopsModel(space)
    return models


def objective_matrix(accuracy: np.ndarray, costs: np.ndarray, columns: Sequence[str],
                     objectives: Sequence[str]) -> np.ndarray:
    """(N, objectives) matrix to minimise: -accuracy, then each cost in objective order."""
    cols = [-np.asarray(accuracy, dtype=np.float64) if o == ACCURACY else costs[:, list(columns).index(column(o))]
            for o in objectives]
    return np.column_stack(cols) if cols else np.zeros((len(accuracy), 0))


def candidates_matrix(candidates: Sequence[Candidate], objectives: Sequence[str]) -> np.ndarray:
    """The objective matrix of scored candidates (their latency dict holds every cost column)."""
    return np.array([[-c.accuracy if o == ACCURACY else c.latency[column(o)] for o in objectives]
                     for c in candidates], dtype=np.float64).reshape(len(candidates), len(objectives))


Bounds = dict[str, tuple[float, float]]


def objective_bounds(space: SearchSpace, accuracy: AccuracySource, costs: Mapping[str, LatencyModel],
                     objectives: Sequence[str]) -> Bounds:
    """Per objective (best, worst) in minimised units, from the smallest and largest subnets.

    Costs one accuracy evaluation of each (memoised by the supernet source); not counted
    in a search's `n_evaluated` unless the search scores them itself.
    """
    ends = [space.smallest(), space.largest()]
    acc = np.asarray(accuracy.predict(ends), dtype=np.float64)
    cols = list(costs)
    lat = np.column_stack([np.asarray(costs[c].predict(ends), dtype=np.float64) for c in cols])
    f = objective_matrix(acc, lat, cols, objectives)
    bounds = {}
    for j, o in enumerate(objectives):
        lo, hi = float(f[:, j].min()), float(f[:, j].max())
        bounds[o] = (lo, hi if hi > lo else lo + 1.0)
    return bounds


def normalised_hypervolume(candidates: Sequence[Candidate], objectives: Sequence[str], bounds: Bounds) -> float:
    """Hypervolume of the candidates in the [0, 1]-normalised objective space (see module doc)."""
    if not candidates:
        return 0.0
    f = candidates_matrix(candidates, objectives)
    lo = np.array([bounds[o][0] for o in objectives])
    hi = np.array([bounds[o][1] for o in objectives])
    return hypervolume((f - lo) / (hi - lo), np.full(len(objectives), HV_REFERENCE))


@dataclass(frozen=True)
class ParetoResult:
    """The non-dominated candidates over `objectives` among everything NSGA-II scored."""

    objectives: tuple[str, ...]
    front: tuple[Candidate, ...]
    n_evaluated: int
    seconds: float
    hypervolume: float
    bounds: Bounds

    def best(self, budget: Budget) -> Candidate | None:
        """The most accurate front member meeting `budget`.

        Exact when every budget device is a latency objective: a subnet that dominates
        the best feasible one is feasible and at least as accurate, so one of the best
        is always on the front.
        """
        missing = [d for d in budget.devices if LATENCY_PREFIX + d not in self.objectives and d not in self.objectives]
        if missing:
            raise ConfigError(f"budget on {missing}: the Pareto set was searched without latency on "
                              f"{missing} as an objective; add latency:{missing[0]} to the objectives")
        limits = budget.to_dict()
        within = [c for c in self.front if all(c.latency[d] <= ms for d, ms in limits.items())]
        return max(within, key=lambda c: c.accuracy, default=None)

    def serve(self, budgets: Sequence[Budget]) -> tuple[Candidate | None, ...]:
        """One pick per budget (None when nothing on the front meets it)."""
        return tuple(self.best(b) for b in budgets)

    def search_result(self, budgets: Sequence[Budget]) -> SearchResult:
        """The set seen through `budgets`: one pick per budget, as the other methods return."""
        return SearchResult("nsga2", tuple(budgets), self.serve(budgets), self.front, self.n_evaluated,
                            self.seconds, self.hypervolume)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "pipeline.pareto-set", "objectives": list(self.objectives),
                "n_evaluated": self.n_evaluated, "seconds": round(self.seconds, 3),
                "hypervolume": self.hypervolume, "bounds": {k: list(v) for k, v in self.bounds.items()},
                "front": [c.to_dict() for c in self.front]}

    def save(self, path: str | Path) -> Path:
        """Write the set as JSON (atomically: a reader never sees half a file)."""
        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "ParetoResult":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read Pareto set {path}: {err}; rerun `pipeline search --method nsga2 "
                              "--pareto-out FILE`") from err
        if not isinstance(raw, dict) or raw.get("format") != "pipeline.pareto-set":
            raise ConfigError(f"{path} is not a Pareto set written by `pipeline search --method nsga2`")
        front = tuple(Candidate(SubnetConfig.from_dict(c["config"]), float(c["accuracy"]),
                                {k: float(v) for k, v in c["latency_ms"].items()}) for c in raw["front"])
        return cls(tuple(raw["objectives"]), front, int(raw["n_evaluated"]), float(raw["seconds"]),
                   float(raw["hypervolume"]), {k: (float(a), float(b)) for k, (a, b) in raw["bounds"].items()})


def _select(f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NSGA-II environmental selection: whole fronts while they fit, the last one by
    crowding distance. Returns the kept rows and their front rank and crowding."""
    keep, rank, crowd = [], [], []
    for r, front in enumerate(non_dominated_sort(f)):
        dist = crowding_distance(f[front])
        room = n - len(keep)
        if room <= 0:
            break
        order = np.argsort(-dist, kind="stable")[:room]
        keep += front[order].tolist()
        rank += [r] * len(order)
        crowd += dist[order].tolist()
    return np.array(keep), np.array(rank), np.array(crowd)


def nsga2(space: SearchSpace, accuracy: AccuracySource, costs: Mapping[str, LatencyModel],
          objectives: Sequence[str], config: NSGA2Config = NSGA2Config(), limits: Budget | None = None,
          evaluator: Evaluator | None = None, progress: bool = True) -> ParetoResult:
    """The Pareto set over `objectives` (see `parse_objectives`, `cost_models`).

    `limits` bounds the region searched (e.g. each device's loosest budget): children
    outside it are redrawn before their accuracy is evaluated.
    """
    start = time.perf_counter()
    ev = evaluator or Evaluator(accuracy, costs)
    objectives = tuple(objectives)
    missing = [column(o) for o in objectives if o != ACCURACY and column(o) not in ev.devices]
    if missing:
        raise ConfigError(f"objectives need cost models for {missing}; have {list(ev.devices)}")
    rng = random.Random(config.seed)

    def objective_rows(rows: np.ndarray) -> np.ndarray:
        _, acc, lat = ev.arrays()
        return objective_matrix(acc[rows], lat[rows], ev.devices, objectives)

    def add(configs: list[SubnetConfig]) -> np.ndarray:
        before = ev.n_scored
        ev.score(configs)
        return np.arange(before, ev.n_scored)

    seed_rows = add([space.smallest()])  # the cheap end of every trade-off
    initial = np.concatenate([seed_rows, add(_draw(ev, lambda: space.sample(rng), config.population - 1,
                                                   limits, config.max_draw_rounds, set()))])
    kept, rank, crowd = _select(objective_rows(initial), config.population)
    population = initial[kept]

    def tournament(pool: Sequence[SubnetConfig]) -> SubnetConfig:
        i, j = rng.sample(range(len(pool)), 2) if len(pool) > 1 else (0, 0)
        better = i if (rank[i], -crowd[i]) <= (rank[j], -crowd[j]) else j
        return pool[better]

    for _ in progress_bar(range(config.generations), desc="nsga2", unit="gen", disable=not progress):
        configs = ev.arrays()[0]
        pool = [configs[k] for k in population]

        def child(pool: Sequence[SubnetConfig] = pool) -> SubnetConfig:
            mixed = space.crossover(tournament(pool), tournament(pool), rng, config.crossover_prob)
            return space.mutate(mixed, config.mutate_prob, rng)

        kids = add(_draw(ev, child, config.population, limits, config.max_draw_rounds, set()))
        combined = np.concatenate([population, kids])
        kept, rank, crowd = _select(objective_rows(combined), config.population)
        population = combined[kept]

    _, acc, lat = ev.arrays()
    cols = [ev.devices.index(column(o)) for o in objectives if o != ACCURACY]
    inside = ev.feasible(lat, limits) if limits else np.ones(len(acc), dtype=bool)
    rows = np.flatnonzero(inside)
    front = tuple(ev.candidate(int(rows[i])) for i in pareto_indices(acc[rows], lat[rows][:, cols]))
    bounds = objective_bounds(space, accuracy, costs, objectives)
    result = ParetoResult(objectives, front, ev.n_scored, time.perf_counter() - start,
                          normalised_hypervolume(front, objectives, bounds), bounds)
    log.info("nsga2: %d candidates scored in %.1f s, front of %d, hypervolume %.4f", result.n_evaluated,
             result.seconds, len(front), result.hypervolume)
    return result


def nsga2_search(space: SearchSpace, accuracy: AccuracySource, latency: Mapping[str, LatencyModel],
                 budgets: Sequence[Budget], config: NSGA2Config = NSGA2Config(),
                 progress: bool = True) -> SearchResult:
    """`evolve`'s contract from one NSGA-II run: the best subnet per budget, for every
    device and budget at once (objectives: accuracy and latency on each budget device;
    region: each device's loosest budget). What `pipeline build` calls instead of one
    evolution per budget."""
    limits = budget_limits(budgets)
    if limits is None:
        raise ConfigError("nsga2_search needs at least one budget")
    devices = limits.devices
    objectives = (ACCURACY, *(LATENCY_PREFIX + d for d in devices))
    return nsga2(space, accuracy, {d: latency[d] for d in devices}, objectives, config, limits,
                 progress=progress).search_result(budgets)


def budget_limits(budgets: Sequence[Budget]) -> Budget | None:
    """The loosest limit per device over `budgets` (None without budgets): the region
    NSGA-II needs to cover to serve all of them."""
    devices = list(dict.fromkeys(d for b in budgets for d in b.devices))
    if not devices:
        return None
    return Budget(tuple((d, max(b.to_dict()[d] for b in budgets if d in b.devices)) for d in devices))
