"""`pipeline profile` and `pipeline predictor fit|eval|transfer`: measure a device, fit and test its predictor."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.options import (device_name, device_option, json_option, resolve_space,
                                  space_option, store_option)

#: What `profile --measure` can measure: the plan's subnets, the distinct blocks of the
#: plan's subnets (the lookup table), or every distinct block of the space.
MEASURE_CHOICES = ("subnets", "blocks", "space-blocks")


def _echo_report(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
        return
    tau = result["kendall_tau"]
    click.echo(f"{result['device']}: {result['kind']} fitted on {result['n_train']} subnets, "
               f"tested on {result['n_test']} held-out")
    if result["n_test"]:
        click.echo(f"  RMSE {result['rmse_ms']:.3f} ms, MAPE {100 * result['mape']:.2f}%, "
                   f"within ±5% {100 * result['within_5pct']:.0f}%, within ±10% {100 * result['within_10pct']:.0f}%, "
                   f"Kendall tau {'n/a' if tau is None else f'{tau:.3f}'}")
    if result.get("plot"):
        click.echo(f"  plot: {result['plot']}")
    if result.get("predictor_file"):
        click.echo(f"  saved: {result['predictor_file']}")


def _measure_choices(ctx: click.Context, param: click.Parameter, value: str) -> frozenset[str]:
    wanted = frozenset(v.strip() for v in value.split(",") if v.strip())
    if not wanted or not wanted <= set(MEASURE_CHOICES):
        raise click.BadParameter(f"{value!r}: give one or more of {', '.join(MEASURE_CHOICES)}, comma-separated")
    if {"blocks", "space-blocks"} <= wanted:
        raise click.BadParameter("blocks and space-blocks overlap; space-blocks already holds the plan's blocks")
    return wanted


@click.command()
@device_option(note="Device to measure on")
@click.option("--subnets", "n_subnets", type=click.IntRange(min=0), default=50, show_default=True,
              help="Size of the sampling plan (the first N of a fixed sequence: raising N only adds).")
@space_option
@click.option("--measure", default="subnets", show_default=True, callback=_measure_choices, metavar="WHAT[,WHAT]",
              help="What to build and measure: subnets (the plan's), blocks (every distinct block of the plan's "
                   "subnets: the lookup table), space-blocks (every distinct block of the space); e.g. "
                   "subnets,blocks.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Compile processes (default: CPUs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--remeasure", is_flag=True,
              help="Instead: time every stored subnet again from its library (no recompiling), beside the reference.")
@store_option
@json_option
def profile(device: str, n_subnets: int, space_name: str | None, measure: frozenset[str], workers: int | None,
            seed: int, remeasure: bool, store_path: Path | None, as_json: bool) -> None:
    """Compile and measure the sampling plan's subnets (and/or blocks) on the device; resumable."""
    from pipeline.device import load_profile
    from pipeline.predict.features import all_blocks, distinct_blocks
    from pipeline.profiling import profile_blocks, profile_subnets, remeasure_stored, sampling_plan

    device_profile, space = load_profile(device), resolve_space(space_name)
    plan = sampling_plan(space, n_subnets, seed)
    summary = {}
    if remeasure:
        summary["subnets"] = remeasure_stored(device_profile, space, store_path).to_dict()
    elif "subnets" in measure:
        summary["subnets"] = profile_subnets(device_profile, space, plan, store_path, workers).to_dict()
    if measure & {"blocks", "space-blocks"}:
        wanted = all_blocks(space) if "space-blocks" in measure else distinct_blocks(space, plan)
        summary["blocks"] = profile_blocks(device_profile, space, wanted).to_dict()
    if as_json:
        click.echo(json.dumps(summary))
        return
    for what, s in summary.items():
        by_server = (" (" + ", ".join(f"{n} on {w}" for w, n in sorted(s["servers"].items())) + ")"
                     if len(s["servers"]) > 1 else "")
        click.echo(f"{device_name(device)}: {s['planned']} {what} planned, {s['skipped']} already stored, "
                   f"{s['measured']} measured{by_server} -> {s['store']}")


@click.group()
def predictor() -> None:
    """Per-device latency predictors: fit from measurements, test on held-out subnets, transfer."""


@predictor.command()
@device_option(note="Device whose measurements are fitted")
@space_option
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="Share of measured subnets held out for the error report (stable by subnet id).")
@click.option("--kind", "kinds", multiple=True,
              help="Restrict the candidates (ridge, trees, lut, lut+ridge, lut+trees, rank); default: all that apply "
                   "but rank (pairwise ranking loss, calibrated to ms).")
@click.option("--max-train", type=click.IntRange(min=2), default=None, help="Use at most this many training subnets.")
@store_option
@json_option
def fit(device: str, space_name: str | None, test_fraction: float, kinds: tuple[str, ...], max_train: int | None,
        store_path: Path | None, as_json: bool) -> None:
    """Fit the device's predictor (kind chosen by cross-validation), report held-out error, save it."""
    from pipeline.device import load_profile
    from pipeline.predict.workflow import fit_device

    _, result = fit_device(load_profile(device), resolve_space(space_name), test_fraction, store_path,
                           kinds=kinds or None, max_train=max_train)
    _echo_report(result, as_json)


@predictor.command(name="eval")
@device_option(note="Device whose saved predictor is tested (in its own space)")
@store_option
@json_option
def eval_cmd(device: str, store_path: Path | None, as_json: bool) -> None:
    """Test the device's saved predictor on every stored measurement it was not fitted on."""
    from pipeline.device import load_profile
    from pipeline.predict.workflow import evaluate_device

    _echo_report(evaluate_device(load_profile(device), store_path), as_json)


@predictor.command()
@click.option("--from", "source", required=True, metavar="NAME|FILE",
              help="Device whose saved predictor is transferred (named as for --device).")
@device_option(note="Device the predictor is transferred to")
@click.option("--k", "ks", default="5,10,20", show_default=True, help="Comma-separated numbers of measurements.")
@click.option("--draws", type=click.IntRange(min=1), default=5, show_default=True,
              help="Random K-subsets averaged per K.")
@store_option
@json_option
def transfer(source: str, device: str, ks: str, draws: int, store_path: Path | None, as_json: bool) -> None:
    """Few-shot: SOURCE's predictor + K of the device's measurements vs a from-scratch fit on the same K."""
    from pipeline.device import load_profile
    from pipeline.predict import load_predictor
    from pipeline.predict.transfer import transfer_study
    from pipeline.predict.workflow import load_dataset

    target = load_profile(device)
    source, device = device_name(source), target.name
    src = load_predictor(source)
    data = load_dataset(target, src.space, store_path)
    try:
        k_values = [int(k) for k in ks.split(",") if k.strip()]
    except ValueError:
        raise click.BadParameter(f"--k must be comma-separated integers, got {ks!r}") from None
    result = transfer_study(src, device, data.encoded, data.latency_ms, k_values, draws)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{source} -> {device}: {result['n_measured']} measured subnets, {draws} draws per K")
    for k, row in result["by_k"].items():
        if "skipped" in row:
            click.echo(f"  K={k}: {row['skipped']}")
            continue
        for name in ("transfer", "scratch"):
            m = row[name]
            click.echo(f"  K={k:>3} {name:<8} MAPE {100 * m['mape']:.2f}%  within ±10% {100 * m['within_10pct']:.0f}%  "
                       f"tau {m['kendall_tau'] if m['kendall_tau'] is None else round(m['kendall_tau'], 3)}")
