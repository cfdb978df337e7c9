"""Benchmark (not a test): evolutionary vs random (10x samples) vs FLOPs-constrained search.

Full AttentiveNAS space, official ImageNet accuracy predictor (../shared/attentivenas/
acc_predictor_trees.npz), latency of the x86-host: its fitted predictor when one exists
for this space, else the analytic shape model (stated in the output, not a measurement).
Five budgets spread from the fastest subnet to the median random subnet. Prints a table
and writes bench/results/search.json.

    .venv/bin/python bench/search.py [--seeds 2] [--trees PATH]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import numpy as np

from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.search import (
    Budget,
    EvolutionConfig,
    TreeForest,
    ShapeLatencyModel,
    evolve,
    flops_constrained_search,
    random_search,
)
from pipeline.search.budgets import spread_budgets
from pipeline.space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
DEVICE = "x86-host"


def latency_model(space: SearchSpace) -> tuple[object, str]:
    """The x86-host predictor for this space if fitted, else the analytic shape model."""
    from pipeline.predict import load_predictor

    try:
        predictor = load_predictor(DEVICE)
    except PipelineError as err:
        return ShapeLatencyModel(space), f"analytic shape model (no fitted predictor: {err})"
    if predictor.space_name != space.name:
        return ShapeLatencyModel(space), (f"analytic shape model (the {DEVICE} predictor is for space "
                                          f"{predictor.space_name!r}, not {space.name!r})")
    return predictor, f"fitted predictor {predictor.kind} r{predictor.info.get('revision')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=str(REPO / ".." / "shared" / "attentivenas" / "acc_predictor_trees.npz"))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=20)
    args = parser.parse_args()

    space = SearchSpace.load("attentivenas")
    accuracy = TreeForest.load(args.trees)
    model, model_note = latency_model(space)
    latency = {DEVICE: model}
    rng = random.Random(0)
    sample_ms = model.predict([space.sample(rng) for _ in range(2000)])
    fastest = float(model.predict([space.smallest()])[0])
    budgets_ms = spread_budgets(fastest, float(np.median(sample_ms)), 5)
    budgets = [Budget.single(DEVICE, ms) for ms in budgets_ms]
    print(f"latency model: {model_note}\nbudgets (ms): {budgets_ms}")

    runs = []
    for seed in range(args.seeds):
        cfg = EvolutionConfig(generations=args.generations, seed=seed)
        evo = evolve(space, accuracy, latency, budgets, cfg)
        rnd = random_search(space, accuracy, latency, budgets, samples=10 * evo.n_evaluated, seed=seed)
        flops = flops_constrained_search(space, accuracy, latency, budgets, cfg)
        runs.append({"seed": seed, "evolution": evo, "random_10x": rnd, "flops": flops})

    methods = ("evolution", "random_10x", "flops")
    table = []
    for i, ms in enumerate(budgets_ms):
        row: dict = {"budget_ms": ms}
        for m in methods:
            picks = [r[m].best[i] for r in runs]
            accs = [p.accuracy if p and p.latency[DEVICE] <= ms else np.nan for p in picks]
            row[m] = {"accuracy_mean": float(np.nanmean(accs)) if not np.all(np.isnan(accs)) else None,
                      "per_seed": [p.to_dict() if p else None for p in picks],
                      "over_budget": sum(1 for p in picks if p and p.latency[DEVICE] > ms),
                      "none_found": sum(1 for p in picks if p is None)}
        table.append(row)
    speed = {m: {"n_evaluated": [r[m].n_evaluated for r in runs], "seconds": [round(r[m].seconds, 2) for r in runs],
                 "candidates_per_second": float(np.mean([r[m].candidates_per_second for r in runs]))}
             for m in methods}

    print(f"\n{'budget ms':>9} | {'evolution':>9} | {'random 10x':>10} | {'FLOPs-constr.':>13}  (top-1 %, mean of "
          f"{args.seeds} seeds; '-' = nothing within budget, '*' = a pick over the ms budget)")
    for row in table:
        cells = []
        for m in methods:
            acc = row[m]["accuracy_mean"]
            mark = "*" * row[m]["over_budget"]
            cells.append(("-" if acc is None else f"{acc:.2f}") + mark)
        print(f"{row['budget_ms']:>9} | {cells[0]:>9} | {cells[1]:>10} | {cells[2]:>13}")
    for m in methods:
        print(f"{m:>10}: {speed[m]['n_evaluated']} candidates, {speed[m]['seconds']} s, "
              f"{speed[m]['candidates_per_second']:.0f} candidates/s")

    out = REPO / "bench" / "results" / "search.json"
    write_json(out, {
        "space": space.name, "accuracy_source": "official AttentiveNAS predictor (100 trees)",
        "latency_model": model_note, "device": DEVICE, "budgets_ms": budgets_ms, "seeds": args.seeds,
        "evolution_config": EvolutionConfig(generations=args.generations).__dict__,
        "results": table, "speed": speed, "front_size": [len(r["evolution"].front) for r in runs],
        "machine": platform.node(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
