"""`pipeline search`: the most accurate subnet per latency budget on saved device predictors."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.options import (accuracy_trees_option, data_option, device_name, device_option, json_option,
                                  supernet_option)
from pipeline.search import Budget, EvolutionConfig, evolve, flops_constrained_search, random_search
from pipeline.search.budgets import parse_budgets


@click.command()
@device_option(multiple=True, note="Device with a fitted predictor, in whose space the search runs (repeated: "
                                   "a subnet must meet the budget on every one)")
@click.option("--budgets-ms", default=None, help="Latency budgets, e.g. 5,10,20 (optional with nsga2).")
@accuracy_trees_option
@supernet_option
@data_option
@click.option("--accuracy", "accuracy_spec", default="supernet", show_default=True,
              help="supernet (evaluated subnets + forest; the official trees with --accuracy-trees) or a "
                   "zero-shot proxy: proxy:naswot, proxy:synflow, proxy:gradnorm, on --supernet's weights "
                   "or, with @init (proxy:naswot@init), at initialisation.")
@click.option("--method", type=click.Choice(["evolution", "random", "flops", "nsga2"]), default="evolution",
              show_default=True, help="Evolution, random search (same samples), the FLOPs-constrained baseline, "
                                      "or NSGA-II (one Pareto set over --objectives serving every budget).")
@click.option("--objectives", default="accuracy,latency", show_default=True,
              help="nsga2: accuracy plus costs among latency (every --device), latency:DEVICE, params, mflops.")
@click.option("--pareto-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="nsga2: write the Pareto set (JSON) here.")
@click.option("--evolution-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML with population, parents, mutation_share, mutate_prob, crossover_prob, generations, seed "
                   "(nsga2 reads population, generations, mutate_prob, crossover_prob, seed).")
@click.option("--samples", default=5000, show_default=True, help="Random search: subnets drawn.")
@json_option
def search(devices: tuple[str, ...], budgets_ms: str | None, accuracy_trees: Path | None, supernet: Path | None,
           data: Path | None, accuracy_spec: str, method: str, objectives: str, pareto_out: Path | None,
           evolution_config: Path | None, samples: int, as_json: bool) -> None:
    """Search the space of the devices' predictors under each budget; print picks and the Pareto front size."""
    from pipeline.build import BuildConfig
    from pipeline.build.accuracy import accuracy_for, data_root_for, load_supernet_for
    from pipeline.predict import load_predictor
    from pipeline.search.nsga2 import NSGA2Config, budget_limits, cost_models, nsga2, parse_objectives
    from pipeline.search.proxies import proxy_accuracy

    if budgets_ms is None and method != "nsga2":
        raise click.UsageError(f"--method {method} needs --budgets-ms (only nsga2 searches without budgets)")
    devices = tuple(device_name(d) for d in devices)
    predictors = {d: load_predictor(d) for d in devices}
    spaces = {p.space for p in predictors.values()}  # each predictor carries its space
    if len(spaces) != 1:
        raise click.UsageError(f"the devices' predictors are for different spaces {sorted(s.name for s in spaces)}")
    space = spaces.pop()
    cfg = BuildConfig(supernet=supernet, data=data, accuracy_trees=accuracy_trees)
    net, checkpoint, _ = load_supernet_for(cfg, space) if accuracy_trees is None else (None, None, None)
    if accuracy_spec == "supernet":
        accuracy = accuracy_for(cfg, space, net, checkpoint).rank
    elif net is None:
        raise click.UsageError("--accuracy proxy:NAME scores subnets of a supernet; drop --accuracy-trees")
    else:
        accuracy = proxy_accuracy(accuracy_spec, net, data_root_for(cfg))
    budgets = [Budget(tuple((d, ms) for d in devices)) for ms in parse_budgets(budgets_ms)] if budgets_ms else []
    evo = EvolutionConfig.load(evolution_config) if evolution_config else EvolutionConfig()
    if method == "nsga2":
        chosen = parse_objectives(objectives, devices)
        costs = cost_models(space, predictors, chosen, net.num_classes if net is not None else 1000)
        pareto = nsga2(space, accuracy, costs, chosen, NSGA2Config(
            population=evo.population, generations=evo.generations, mutate_prob=evo.mutate_prob,
            crossover_prob=evo.crossover_prob, seed=evo.seed), budget_limits(budgets))
        if pareto_out:
            pareto.save(pareto_out)
        result = pareto.search_result(budgets)
    elif method == "evolution":
        result = evolve(space, accuracy, predictors, budgets, evo)
    elif method == "random":
        result = random_search(space, accuracy, predictors, budgets, samples, evo.seed)
    else:
        result = flops_constrained_search(space, accuracy, predictors, budgets, evo)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    for budget, best in zip(result.budgets, result.best):
        if best is None:
            click.echo(f"{budget.label}: nothing predicted within")
        else:
            lat = ", ".join(f"{d} {ms:.3f} ms" for d, ms in best.latency.items())
            click.echo(f"{budget.label}: {best.config.id} accuracy {best.accuracy:.2f} %, {lat}")
    click.echo(f"{result.n_evaluated} candidates in {result.seconds:.1f} s; Pareto front of {len(result.front)}"
               + (f", hypervolume {result.hypervolume:.4f}" if result.hypervolume is not None else "")
               + (f"; written to {pareto_out}" if method == "nsga2" and pareto_out else ""))
