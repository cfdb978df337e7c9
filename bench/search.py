"""Benchmark (not a test): evolutionary vs random (10x samples) vs FLOPs-constrained search, and NSGA-II.

Full AttentiveNAS space, official ImageNet accuracy predictor (../shared/attentivenas/
acc_predictor_trees.npz), latency of a device (`--device`, x86-host by default): its fitted predictor when one exists
for this space, else the analytic shape model (stated in the output, not a measurement).
Five budgets spread from the fastest subnet to the median random subnet. With `--measure`,
every method's pick (seed 0) at every budget is compiled and measured on the device, so
"within budget" is what the device says, not only what the model predicted; the model is
first scaled to the device's speed now (when the budgets are set), each pick is judged at
that speed through the reference timed beside it, and a pick over its budget gets up to
two more rounds, as the build does: the model refitted on what was measured and the budget
tightened by the pick's optimism (`measure_picks`). Needs the device's predictor fitted
by bench/fullspace_model.py --save, whose store the picks join. Prints a table
and writes bench/results/search.json.

NSGA-II (one run over accuracy and latency, limited to the loosest budget) against one
evolution per budget (the same EvolutionConfig, one budget each): the accuracy each
reaches at every budget, and the hypervolume of NSGA-II's front vs that of the union
of the per-budget runs' fronts. NSGA-II runs twice, with half and with all of the
per-budget runs' total evaluations (goal: within 0.3 points at every budget with half).

    .venv/bin/python bench/search.py [--seeds 2] [--trees PATH] [--measure] [--device arm64-emulated]
"""
from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from machine import describe, machine_info
from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.search import (
    Budget,
    EvolutionConfig,
    TreeForest,
    SearchResult,
    ShapeLatencyModel,
    evolve,
    flops_constrained_search,
    random_search,
)
from pipeline.search.budgets import spread_budgets
from pipeline.search.evaluator import pareto_indices
from pipeline.search.nsga2 import NSGA2Config, nsga2_search, normalised_hypervolume, objective_bounds
from pipeline.space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEVICE = "x86-host"


def latency_model(space: SearchSpace, device: str) -> tuple[object, str]:
    """The device's predictor for this space if fitted, else the analytic shape model."""
    from pipeline.predict import load_predictor

    try:
        predictor = load_predictor(device)
    except PipelineError as err:
        return ShapeLatencyModel(space), f"analytic shape model (no fitted predictor: {err})"
    if predictor.space_name != space.name:
        return ShapeLatencyModel(space), (f"analytic shape model (the {device} predictor is for space "
                                          f"{predictor.space_name!r}, not {space.name!r})")
    return predictor, f"fitted predictor {predictor.kind} r{predictor.info.get('revision')}"


def as_it_runs_now(model, note: str, space: SearchSpace, device: str) -> tuple[object, str]:
    """The model scaled to the device's speed now, as the build searches (`at_conditions`):
    a model fitted on contention-corrected timings predicts the device at its quiet speed,
    while the budgets are set, and the picks judged, at the speed it runs at now."""
    from pipeline.build.loop import at_conditions
    from pipeline.device import load_profile, open_session
    from pipeline.profiling import compile_reference

    profile = load_profile(device)
    with open_session(profile) as session:
        scaled = at_conditions(model, session, compile_reference(space, profile), profile.policy)
    return scaled, f"{note}, x {scaled.scale:.3f} (the reference timed now vs in the model's data)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=str(REPO / ".." / "shared" / "attentivenas" / "acc_predictor_trees.npz"))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--measure", action="store_true", help="compile and measure the picks on the device")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="whose latency predictor (and device) to use")
    args = parser.parse_args()
    device = args.device

    space = SearchSpace.load("attentivenas")
    accuracy = TreeForest.load(args.trees)
    fitted, model_note = latency_model(space, device)
    model = fitted
    if args.measure:
        model, model_note = as_it_runs_now(fitted, model_note, space, device)
    latency = {device: model}
    rng = random.Random(0)
    sample_ms = model.predict([space.sample(rng) for _ in range(2000)])
    fastest = float(model.predict([space.smallest()])[0])
    budgets_ms = spread_budgets(fastest, float(np.median(sample_ms)), 5)
    budgets = [Budget.single(device, ms) for ms in budgets_ms]
    start_machine = machine_info()
    print(f"machine: {describe(start_machine)}\nlatency model: {model_note}\nbudgets (ms): {budgets_ms}")

    multi = nsga2_vs_per_budget(space, accuracy, latency, budgets, args.seeds, args.generations)

    runs = []
    for seed in range(args.seeds):
        evo = search_with("evolution", space, accuracy, latency, budgets_ms, seed, args.generations, 0)
        rnd = search_with("random_10x", space, accuracy, latency, budgets_ms, seed, args.generations,
                          samples=10 * evo.n_evaluated)
        flops = search_with("flops", space, accuracy, latency, budgets_ms, seed, args.generations, 0)
        runs.append({"seed": seed, "evolution": evo, "random_10x": rnd, "flops": flops})

    methods = ("evolution", "random_10x", "flops")
    table = []
    for i, ms in enumerate(budgets_ms):
        row: dict = {"budget_ms": ms}
        for m in methods:
            picks = [r[m].best[i] for r in runs]
            accs = [p.accuracy if p and p.latency[device] <= ms else np.nan for p in picks]
            row[m] = {"accuracy_mean": float(np.nanmean(accs)) if not np.all(np.isnan(accs)) else None,
                      "per_seed": [p.to_dict() if p else None for p in picks],
                      "over_budget": sum(1 for p in picks if p and p.latency[device] > ms),
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

    measured = measure_picks(space, accuracy, fitted, model.scale, runs[0], methods, budgets_ms,
                             args.generations) if args.measure else None

    out = REPO / "bench" / "results" / ("search.json" if device == DEFAULT_DEVICE else f"search_{device}.json")
    write_json(out, {
        "space": space.name, "accuracy_source": "official AttentiveNAS predictor (100 trees)",
        "latency_model": model_note, "device": device, "budgets_ms": budgets_ms, "seeds": args.seeds,
        "evolution_config": EvolutionConfig(generations=args.generations).__dict__,
        "results": table, "speed": speed, "front_size": [len(r["evolution"].front) for r in runs],
        "nsga2_vs_per_budget_evolution": multi, "measured_picks": measured,
        "machine": platform.node(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine_at_start": start_machine, "machine_at_end": machine_info(),
    }, indent=1)
    print(f"wrote {out}")


def search_with(method: str, space: SearchSpace, accuracy, latency: dict, budgets_ms: Sequence[float], seed: int,
                generations: int, samples: int) -> SearchResult:
    """One method's run at `budgets_ms` (random search draws `samples` subnets)."""
    device = next(iter(latency))
    budgets = [Budget.single(device, ms) for ms in budgets_ms]
    cfg = EvolutionConfig(generations=generations, seed=seed)
    if method == "evolution":
        return evolve(space, accuracy, latency, budgets, cfg, progress=False)
    if method == "random_10x":
        return random_search(space, accuracy, latency, budgets, samples=samples, seed=seed)
    return flops_constrained_search(space, accuracy, latency, budgets, cfg, progress=False)


#: Rounds a budget gets on the device, as the build's `max_rounds` (3 by default).
ROUNDS = 3


def model_store(device: str) -> Path:
    """The store the device's full-space predictor was fitted from (bench/fullspace_model.py's
    plan store); the picks are measured into it beside the same reference, as a build measures
    into the device's store, so a refit sees both under one quiet time."""
    from pipeline.paths import cache_dir

    return cache_dir() / "bench" / f"fullspace-plan-{device}.sqlite"


def time_picks(space: SearchSpace, picks: Sequence, device: str) -> dict:
    """Compile and measure `picks` (Candidates) on the device, into `model_store`; returns per
    config (raw median ms, the reference's ms beside it)."""
    from pipeline.device import load_profile
    from pipeline.predict.workflow import load_dataset
    from pipeline.profiling import profile_subnets

    profile = load_profile(device)
    configs = sorted({p.config for p in picks if p is not None}, key=lambda c: c.id)
    profile_subnets(profile, space, configs, model_store(device), source="bench-search")
    data = load_dataset(profile, space, model_store(device), normalise=False)
    return {c: (float(ms), float(ref)) for c, ms, ref in zip(data.configs, data.latency_ms, data.reference_ms)}


def refit(model, space: SearchSpace, device: str, picks: Sequence) -> object:
    """`model` fitted again on its own training subnets plus the measured `picks`, as the
    build refits after a miss: a pick over its budget is a subnet the model under-predicted,
    and the search will pick its neighbours next. A transferred model is transferred again
    from its source device's current predictor."""
    from heldout import fit_on, only
    from pipeline.device import load_profile
    from pipeline.predict import load_predictor
    from pipeline.predict.transfer import fit_transfer
    from pipeline.predict.workflow import load_dataset

    profile = load_profile(device)
    data = load_dataset(profile, space, model_store(device))
    wanted = set(model.info.get("measurement_ids", ())) | {c.id for c in picks}
    train = only(data, [c for c in data.configs if c.id in wanted])
    if len(train) < len(wanted):
        raise PipelineError(f"{model_store(device)} lacks subnets the {device} predictor was fitted on; "
                            f"fit it with bench/fullspace_model.py --save first")
    source = model.info.get("source_device")
    if not source:
        return fit_on(profile, space, train)
    return fit_transfer(load_predictor(source), device, train.encoded, train.latency_ms, train.ids).with_info(
        reference_quiet_ms=train.reference_quiet_ms, num_classes=train.num_classes)


def measure_picks(space: SearchSpace, accuracy, model, scale: float, run: dict, methods: Sequence[str],
                  budgets_ms: Sequence[float], generations: int) -> list[dict]:
    """Each method's pick (seed 0) at each budget measured on the device, then, as the build
    does, up to `ROUNDS` rounds: where a pick measured over its budget, the model is refitted
    on what was measured (the picks included) and the method searches again under the budget
    x that pick's optimism (predicted / measured). Reported per budget and method: every
    round and the final pick (the first within the budget, else none).

    `model`: the unscaled fitted predictor; `scale`: the device's speed when the budgets
    were set (the reference timed then / its quiet time). A pick is judged at that speed:
    its raw time x (the reference's time then / its time beside the pick). This host's own
    speed swings by 1.3-1.6x for minutes at a time (the reference ran 120-148 ms beside the
    picks of one run, 90-95 ms when the budgets were set, nothing else running), so a raw
    timing says more about the minute it was taken in than about the pick; both are kept."""
    from pipeline.build.loop import AtConditions
    from pipeline.compile.keys import measured_id
    from pipeline.device import load_profile
    from pipeline.profiling import reference_config

    device = model.device
    reference_id = measured_id(reference_config(space, load_profile(device)).id, model.info["num_classes"])
    reference_then = scale * model.info["reference_quiet_ms"][reference_id]
    picks = {m: list(run[m].best) for m in methods}
    rounds: dict[str, list[list]] = {m: [[] for _ in budgets_ms] for m in methods}
    measured: dict = {}
    timed: list = []  # every pick measured so far, what a refit learns from
    for round_no in range(1, ROUNDS + 1):
        todo = {m: [i for i, p in enumerate(picks[m]) if p is not None] for m in methods}
        timed += [picks[m][i].config for m in methods for i in todo[m]]
        measured.update(time_picks(space, [picks[m][i] for m in methods for i in todo[m]], device))
        tightened = {m: list(budgets_ms) for m in methods}
        for m in methods:
            for i in todo[m]:
                p, ms = picks[m][i], budgets_ms[i]
                cell = _cell(p, device, *measured[p.config], reference_then, ms)
                rounds[m][i].append(cell)
                tightened[m][i] = ms * min(1.0, cell["predicted_ms"] / cell["measured_ms"])
                picks[m][i] = None if cell["within_budget"] else p
        if round_no == ROUNDS or not any(p is not None for m in methods for p in picks[m]):
            break
        latency = {device: AtConditions(refit(model, space, device, timed), scale)}
        for m in methods:
            if any(p is not None for p in picks[m]):
                again = search_with(m, space, accuracy, latency, tightened[m], 0, generations,
                                    samples=10 * run["evolution"].n_evaluated)
                picks[m] = [q if p is not None else None for p, q in zip(picks[m], again.best)]

    rows = []
    print(f"\npicks measured on {device} (seed 0; top-1 % predicted/measured ms per round, measured at the speed "
          f"the budgets were set at (reference {reference_then:.1f} ms), raw in brackets; until within budget):")
    for i, ms in enumerate(budgets_ms):
        row: dict = {"budget_ms": ms}
        texts = []
        for m in methods:
            tried = rounds[m][i]
            row[m] = {"rounds": tried, "final": next((r for r in tried if r["within_budget"]), None)}
            texts.append(" -> ".join(f"{r['accuracy']:.2f} {r['predicted_ms']:.1f}/{r['measured_ms']:.1f} "
                                     f"({r['raw_ms']:.1f}){'' if r['within_budget'] else ' OVER'}" for r in tried)
                         or "-")
        rows.append(row)
        print(f"{ms:>9} | " + " | ".join(f"{m}: {t}" for m, t in zip(methods, texts)))
    return rows


def _cell(pick, device: str, raw_ms: float, reference_ms: float, reference_then_ms: float, budget_ms: float
          ) -> dict:
    """One measured pick: `measured_ms` at the speed the budgets were set at, and raw."""
    at_start = raw_ms * reference_then_ms / reference_ms
    return {"subnet_id": pick.config.id, "accuracy": pick.accuracy, "predicted_ms": pick.latency[device],
            "measured_ms": at_start, "raw_ms": raw_ms, "reference_ms": reference_ms,
            "within_budget": at_start <= budget_ms, "within_budget_raw": raw_ms <= budget_ms}


def nsga2_vs_per_budget(space: SearchSpace, accuracy, latency: dict, budgets: list[Budget], seeds: int,
                        generations: int) -> dict:
    """One evolution per budget vs NSGA-II at half and at all of their total evaluations."""
    device = next(iter(latency))
    objectives = ("accuracy", f"latency:{device}")
    bounds = objective_bounds(space, accuracy, latency, objectives)
    per_seed = []
    for seed in range(seeds):
        cfg = EvolutionConfig(generations=generations, seed=seed)
        singles = [evolve(space, accuracy, latency, [b], cfg, progress=False) for b in budgets]
        total = sum(r.n_evaluated for r in singles)
        union = [c for r in singles for c in r.front]
        acc = np.array([c.accuracy for c in union])
        lat = np.array([[c.latency[device]] for c in union])
        union_front = [union[i] for i in pareto_indices(acc, lat)]
        row = {"seed": seed, "per_budget": {
            "n_evaluated": [r.n_evaluated for r in singles], "n_total": total,
            "accuracy": [r.best[0].accuracy if r.best[0] else None for r in singles],
            "hypervolume_of_union": normalised_hypervolume(union_front, objectives, bounds),
            "seconds": round(sum(r.seconds for r in singles), 2)}}
        for label, share in (("nsga2_half", 0.5), ("nsga2_same", 1.0)):
            # population x (generations + 1) evaluations at most: size the population to the share
            population = int(share * total / (generations + 1))
            res = nsga2_search(space, accuracy, latency, budgets,
                               NSGA2Config(population=population, generations=generations, seed=seed),
                               progress=False)
            row[label] = {"population": population, "n_evaluated": res.n_evaluated,
                          "accuracy": [c.accuracy if c else None for c in res.best],
                          "hypervolume": res.hypervolume, "front_size": len(res.front),
                          "seconds": round(res.seconds, 2)}
        per_seed.append(row)

    def mean(key: str, sub: str, i: int) -> float | None:
        vals = [r[key][sub][i] for r in per_seed if r[key][sub][i] is not None]
        return float(np.mean(vals)) if vals else None

    print(f"\nNSGA-II vs one evolution per budget (top-1 %, mean of {seeds} seeds)")
    print(f"{'budget ms':>9} | {'per-budget evo':>14} | {'nsga2 half':>10} | {'gap':>5} | {'nsga2 same':>10}")
    budgets_rows = []
    for i, b in enumerate(budgets):
        evo, half, same = (mean(k, "accuracy", i) for k in ("per_budget", "nsga2_half", "nsga2_same"))
        gap = None if evo is None or half is None else evo - half
        budgets_rows.append({"budget_ms": b.to_dict()[device], "per_budget_evolution": evo, "nsga2_half": half,
                             "nsga2_same": same, "gap_half": gap})
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{b.to_dict()[device]:>9} | {fmt(evo):>14} | {fmt(half):>10} | {fmt(gap):>5} | {fmt(same):>10}")
    evals = {k: [r[k]["n_evaluated"] if k != "per_budget" else r[k]["n_total"] for r in per_seed]
             for k in ("per_budget", "nsga2_half", "nsga2_same")}
    hv = {"per_budget_union": [r["per_budget"]["hypervolume_of_union"] for r in per_seed],
          "nsga2_half": [r["nsga2_half"]["hypervolume"] for r in per_seed],
          "nsga2_same": [r["nsga2_same"]["hypervolume"] for r in per_seed]}
    for k, v in evals.items():
        print(f"{k:>14}: evaluations {v}, hypervolume {[round(x, 4) for x in hv[k if k != 'per_budget' else 'per_budget_union']]}")
    gaps = [r["gap_half"] for r in budgets_rows if r["gap_half"] is not None]
    met = bool(gaps) and max(gaps) <= 0.3 and all(
        r["nsga2_half"]["n_evaluated"] <= r["per_budget"]["n_total"] / 2 for r in per_seed)
    print(f"goal (within 0.3 points at every budget with <= half the evaluations): "
          f"{'met' if met else 'NOT met'} (largest gap {max(gaps):.2f})" if gaps else "goal: no comparable budgets")
    return {"budgets": budgets_rows, "evaluations": evals, "hypervolume": hv, "goal_met": met,
            "hypervolume_bounds": bounds, "per_seed": per_seed}


if __name__ == "__main__":
    main()
