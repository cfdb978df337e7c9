"""Search under latency budgets: accuracy sources, latency models, search methods.

`evolve` (evolutionary), `random_search` and `flops_constrained_search` (the seed's
baseline) share one archive type and result type; accuracy comes from any
`AccuracySource`, latency from any object with `predict(configs) -> ms` per device.
"""
from pipeline.search.accuracy import (
    AccuracySource,
    FittedAccuracyPredictor,
    SupernetAccuracy,
)
from pipeline.search.evaluator import Budget, Candidate, Evaluator, pareto_indices
from pipeline.search.latency import FlopsModel, LatencyModel, ShapeLatencyModel
from pipeline.search.methods import (
    EvolutionConfig,
    SearchResult,
    evolve,
    flops_budgets,
    flops_constrained_search,
    random_search,
)
from pipeline.space.forest import TreeForest

__all__ = [
    "AccuracySource", "Budget", "Candidate", "EvolutionConfig", "Evaluator", "FittedAccuracyPredictor",
    "FlopsModel", "LatencyModel", "TreeForest", "SearchResult", "ShapeLatencyModel",
    "SupernetAccuracy", "evolve", "flops_budgets", "flops_constrained_search", "pareto_indices",
    "random_search",
]
