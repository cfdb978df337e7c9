"""`pipeline search`: the most accurate subnet per latency budget on saved device predictors."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.options import accuracy_trees_option, data_option, supernet_option
from pipeline.search import Budget, EvolutionConfig, evolve, flops_constrained_search, random_search
from pipeline.search.budgets import parse_budgets


@click.command()
@click.option("--device", "devices", multiple=True, required=True,
              help="Device with a fitted predictor (repeatable: a subnet must meet the budget on every one).")
@click.option("--budgets-ms", required=True, help="Latency budgets, e.g. 5,10,20.")
@accuracy_trees_option
@supernet_option
@data_option
@click.option("--method", type=click.Choice(["evolution", "random", "flops"]), default="evolution",
              show_default=True, help="Evolution, random search (same samples) or the FLOPs-constrained baseline.")
@click.option("--evolution-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML with population, parents, mutation_share, mutate_prob, crossover_prob, generations, seed.")
@click.option("--samples", default=5000, show_default=True, help="Random search: subnets drawn.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def search(devices: tuple[str, ...], budgets_ms: str, accuracy_trees: Path | None, supernet: Path | None,
           data: Path | None, method: str, evolution_config: Path | None, samples: int, as_json: bool) -> None:
    """Search the space of the devices' predictors under each budget; print picks and the Pareto front size."""
    from pipeline.build import BuildConfig
    from pipeline.build.accuracy import accuracy_for, load_supernet_for
    from pipeline.predict import load_predictor
    predictors = {d: load_predictor(d) for d in devices}
    spaces = {p.space for p in predictors.values()}  # each predictor carries its space
    if len(spaces) != 1:
        raise click.UsageError(f"the devices' predictors are for different spaces {sorted(s.name for s in spaces)}")
    space = spaces.pop()
    cfg = BuildConfig(supernet=supernet, data=data, accuracy_trees=accuracy_trees)
    net, checkpoint, _ = load_supernet_for(cfg, space) if accuracy_trees is None else (None, None, None)
    accuracy = accuracy_for(cfg, space, net, checkpoint).rank
    budgets = [Budget(tuple((d, ms) for d in devices)) for ms in parse_budgets(budgets_ms)]
    evo = EvolutionConfig.load(evolution_config) if evolution_config else EvolutionConfig()
    if method == "evolution":
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
    click.echo(f"{result.n_evaluated} candidates in {result.seconds:.1f} s; Pareto front of {len(result.front)}")
