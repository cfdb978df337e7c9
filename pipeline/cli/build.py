"""`pipeline build`: the main job (see `pipeline.build`)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.build import BuildConfig, run_build
from pipeline.build.config import SEARCH_METHODS
from pipeline.cli.options import accuracy_trees_option, data_option, device_option, space_option, supernet_option
from pipeline.search.budgets import parse_budgets


@click.command()
@click.option("--target", default="arm64", show_default=True, help="Architecture: arm64 or x86_64.")
@device_option(multiple=True, default=(), note="Device to build for")
@click.option("--budgets-ms", default=None, help="Latency budgets, e.g. 5,10,20; default: 3 at the 20/50/80 %% "
              "quantiles of the latencies the profile measured.")
@supernet_option
@space_option
@data_option
@accuracy_trees_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("build"),
              show_default=True, help="Output folder.")
@click.option("--profile-subnets", default=BuildConfig.profile_subnets, show_default=True, help="Subnets measured to fit the predictor.")
@click.option("--max-rounds", default=BuildConfig.max_rounds, show_default=True, help="Search-measure rounds per budget.")
@click.option("--search", "search", type=click.Choice(SEARCH_METHODS), default=BuildConfig.search, show_default=True,
              help="Per round: an evolutionary search per budget, or one NSGA-II run whose Pareto set serves "
                   "every budget.")
@click.option("--json", "as_json", is_flag=True, help="Print build.json at the end.")
def build(target: str, devices: tuple[str, ...], budgets_ms: str | None, supernet: Path | None,
          space_name: str | None, data: Path | None, accuracy_trees: Path | None, out: Path, profile_subnets: int,
          max_rounds: int, search: str, as_json: bool) -> None:
    """Search, compile, verify and emit the best subnet per device and latency budget."""
    cfg = BuildConfig(target=target, devices=devices, budgets_ms=tuple(parse_budgets(budgets_ms)) if budgets_ms else (),
                      supernet=supernet, space=space_name, data=data, accuracy_trees=accuracy_trees, out=out,
                      profile_subnets=profile_subnets, max_rounds=max_rounds, search=search)
    result = run_build(cfg)
    if as_json:
        click.echo(json.dumps(result.summary, default=str))
        return
    for s in result.summary["stages"]:
        click.echo(f"  {s['name']:<16} {s.get('device') or '':<16} {s['seconds']:>7.1f} s")
    for o in result.outcomes:
        if o.emitted:
            click.echo(f"{o.device} <= {o.budget_ms:g} ms: {o.candidate.config.id} top-1 {o.accuracy:.2f} %, "
                       f"predicted {o.candidate.latency[o.device]:.3f} ms, measured {o.measured_ms:.3f} ms -> {o.folder}")
        else:
            click.echo(f"{o.device} <= {o.budget_ms:g} ms: nothing emitted ({o.reason})")
    click.echo(f"report: {result.out / 'report.md'}  ({result.summary['status']}, "
               f"{result.summary['total_seconds']:.0f} s)")
