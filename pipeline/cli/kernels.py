"""`pipeline kernels plan|tune`: a space's distinct kernels and their tuning per device."""
from __future__ import annotations

import json

import click

from pipeline.cli.options import device_option, json_option, resolve_space, space_option

random_option = click.option("--random", "n_random", default=8, show_default=True,
                             help="Random subnets added to the covering set (they count how often tasks recur).")
classes_option = click.option("--num-classes", type=int, default=None,
                              help="Classifier size (default: 10 for the demo space, else 1000).")


def _plan(space_name: str | None, device: str, n_random: int, num_classes: int | None):
    from pipeline.device import load_profile
    from pipeline.kernels.plan import plan

    profile = load_profile(device)
    return profile, plan(resolve_space(space_name), profile.name, profile.tvm_target(), num_classes, n_random)


@click.group()
def kernels() -> None:
    """Kernel workloads of a search space and their per-device tuning database."""


@kernels.command("plan")
@device_option(note="Device whose target the tasks are lowered for")
@space_option
@random_option
@classes_option
@click.option("--top", default=15, show_default=True, help="Tasks to list, by FLOPs weight.")
@json_option
def plan_cmd(device: str, space_name: str | None, n_random: int, num_classes: int | None, top: int,
             as_json: bool) -> None:
    """Distinct tuning tasks over a space for a device (deduplicated by workload)."""
    _, result = _plan(space_name, device, n_random, num_classes)
    tasks = sorted(result.tasks, key=lambda t: -t.weighted_flops)
    if as_json:
        click.echo(json.dumps({**result.summary(), "task_list": [t.to_dict() for t in tasks]}))
        return
    s = result.summary()
    click.echo(f"{s['tasks']} distinct tasks over {s['subnets']} subnets of space {s['space']} "
               f"({s['kernel_calls']} kernel calls, {s['gflops']} GFLOP) for {s['device']}")
    click.echo(f"{'task':<58} {'MFLOP':>8} {'calls':>6} {'subnets':>8}")
    for t in tasks[:top]:
        click.echo(f"{t.name[:58]:<58} {t.flops / 1e6:8.3f} {t.occurrences:6d} {len(t.subnets):8d}")


@kernels.command("tune")
@device_option(note="Device to tune on")
@space_option
@random_option
@classes_option
@click.option("--trials", default=32, show_default=True, help="MetaSchedule trials per task.")
@click.option("--total-trials", type=int, default=None, help="Trials over the whole run (default: trials x tasks).")
@click.option("--max-tasks", type=int, default=None, help="Tune only the heaviest N tasks (by FLOPs weight).")
def tune_cmd(device: str, space_name: str | None, n_random: int, num_classes: int | None, trials: int,
             total_trials: int | None, max_tasks: int | None) -> None:
    """Tune a space's tasks on the device into kernels/<device>/ (resumable: rerun to continue)."""
    from pipeline.kernels.database import device_kernel_dir
    from pipeline.kernels.tune import TuneBudget, tune

    profile, result = _plan(space_name, device, n_random, num_classes)
    outcomes = tune(result, profile, TuneBudget(trials, total_trials, max_tasks=max_tasks))
    tuned = [o for o in outcomes if o.best_us is not None]
    click.echo(f"{len(tuned)}/{len(outcomes)} tasks have records in {device_kernel_dir(profile.name)}")


@kernels.command("tiles")
@device_option(note="Device to time the tiles on")
@space_option
@click.option("--random", "n_random", default=4, show_default=True,
              help="Random subnets added to the smallest, largest and A0-like covering set whose kernels are weighed.")
@classes_option
@click.option("--shapes", default=40, show_default=True,
              help="Representative 1x1/stem shapes to time (heaviest first; others take the nearest one's tile).")
@json_option
def tiles_cmd(device: str, space_name: str | None, n_random: int, num_classes: int | None, shapes: int,
              as_json: bool) -> None:
    """Time every candidate register tile of a space's representative shapes on the device
    into kernels/<device>/tiles.json (resumable: shapes already timed on this CPU are kept)."""
    import time

    from pipeline.device import load_profile
    from pipeline.kernels.plan import plan_configs
    from pipeline.kernels.tiles import space_kernels, tune_tiles

    profile = load_profile(device)
    space = resolve_space(space_name)
    classes = num_classes or (10 if space.name == "demo" else 1000)
    start = time.perf_counter()
    funcs = space_kernels(space, plan_configs(space, n_random), profile.tvm_target(), classes)
    table, rows = tune_tiles(funcs, profile, shapes)
    wall = time.perf_counter() - start
    summary = {"device": profile.name, "tuned_on": table.tuned_on.describe(), "shapes_in_table": len(table.entries),
               "timed_now": len(rows), "tile_seconds": sum(r["seconds"] for r in rows), "wall_seconds": wall}
    if as_json:
        click.echo(json.dumps({**summary, "rows": rows}))
        return
    click.echo(f"{'shape':<34} {'rule tile':>10} {'us':>8} {'best tile':>10} {'us':>8} {'gain':>6} {'tiles':>6}")
    for r in rows:
        click.echo(f"{r['shape']:<34} {str(tuple(r['rule_tile'])):>10} {r['rule_us']:8.1f} {str(tuple(r['tile'])):>10} "
                   f"{r['us']:8.1f} {r['rule_us'] / r['us']:6.2f} {r['candidates']:6d}")
    click.echo(f"{len(rows)} shapes timed now ({summary['tile_seconds']:.0f} s of timing, {wall:.0f} s wall); "
               f"{len(table.entries)} in the table, timed on {summary['tuned_on']}")
