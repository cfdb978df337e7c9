"""`pipeline profile` and `pipeline predictor fit|eval|transfer`: measure a device, fit and test its predictor."""
from __future__ import annotations

import json

import click

from pipeline.cli.options import json_option

demo_space_option = click.option("--space", "space_name", default="demo", show_default=True,
                                 help="Built-in space (demo, attentivenas) or a space YAML file.")
device_option = click.option("--device", required=True, help="Device profile name (see device_profiles/).")
store_option = click.option("--store", "store_path", default=None, type=click.Path(dir_okay=False),
                            help="Measurement store (default: cache_dir()/measurements.sqlite).")


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


@click.command()
@device_option
@click.option("--subnets", "n_subnets", type=click.IntRange(min=0), default=50, show_default=True,
              help="Size of the sampling plan (the first N of a fixed sequence: raising N only adds).")
@demo_space_option
@click.option("--blocks/--no-blocks", default=False, show_default=True,
              help="Also build and measure every distinct block of the planned subnets (the lookup table).")
@click.option("--all-blocks", is_flag=True, help="Measure every distinct block of the whole space.")
@click.option("--only-blocks", is_flag=True, help="Measure the blocks of the plan but not its subnets.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Compile processes (default: CPUs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--remeasure", is_flag=True,
              help="Instead: time every stored subnet again from its library (no recompiling), beside the reference.")
@store_option
@json_option
def profile(device: str, n_subnets: int, space_name: str, blocks: bool, all_blocks: bool, only_blocks: bool,
            workers: int | None, seed: int, remeasure: bool, store_path: str | None, as_json: bool) -> None:
    """Compile and measure the sampling plan's subnets on DEVICE; resumable (stored ones are skipped)."""
    from pipeline.predict.features import all_blocks as space_blocks, distinct_blocks
    from pipeline.profiling import profile_blocks, profile_subnets, remeasure_stored, sampling_plan
    from pipeline.space import SearchSpace

    space = SearchSpace.load(space_name)
    plan = sampling_plan(space, n_subnets, seed)
    summary = {}
    if remeasure:
        summary["subnets"] = remeasure_stored(device, space, store_path).to_dict()
    elif not only_blocks:
        summary["subnets"] = profile_subnets(device, space, plan, store_path, workers).to_dict()
    if blocks or all_blocks or only_blocks:
        wanted = space_blocks(space) if all_blocks else distinct_blocks(space, plan)
        summary["blocks"] = profile_blocks(device, space, wanted).to_dict()
    if as_json:
        click.echo(json.dumps(summary))
        return
    for what, s in summary.items():
        click.echo(f"{device}: {s['planned']} {what} planned, {s['skipped']} already stored, "
                   f"{s['measured']} measured -> {s['store']}")


@click.group()
def predictor() -> None:
    """Per-device latency predictors: fit from measurements, test on held-out subnets, transfer."""


@predictor.command()
@device_option
@demo_space_option
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="Share of measured subnets held out for the error report (stable by subnet id).")
@click.option("--kind", "kinds", multiple=True,
              help="Restrict the candidates (ridge, trees, lut, lut+ridge, lut+trees, rank); default: all that apply "
                   "but rank (pairwise ranking loss, calibrated to ms).")
@click.option("--max-train", type=click.IntRange(min=2), default=None, help="Use at most this many training subnets.")
@store_option
@json_option
def fit(device: str, space_name: str, test_fraction: float, kinds: tuple[str, ...], max_train: int | None,
        store_path: str | None, as_json: bool) -> None:
    """Fit DEVICE's predictor (kind chosen by cross-validation), report held-out error, save it."""
    from pipeline.predict.workflow import fit_device

    _, result = fit_device(device, space_name, test_fraction, store_path, kinds=kinds or None, max_train=max_train)
    _echo_report(result, as_json)


@predictor.command(name="eval")
@device_option
@store_option
@json_option
def eval_cmd(device: str, store_path: str | None, as_json: bool) -> None:
    """Test DEVICE's saved predictor on every stored measurement it was not fitted on."""
    from pipeline.predict.workflow import evaluate_device

    _echo_report(evaluate_device(device, store_path), as_json)


@predictor.command()
@click.option("--from", "source", required=True, help="Device whose saved predictor is transferred.")
@device_option
@click.option("--k", "ks", default="5,10,20", show_default=True, help="Comma-separated numbers of measurements.")
@click.option("--draws", type=click.IntRange(min=1), default=5, show_default=True,
              help="Random K-subsets averaged per K.")
@store_option
@json_option
def transfer(source: str, device: str, ks: str, draws: int, store_path: str | None, as_json: bool) -> None:
    """Few-shot: SOURCE's predictor + K of DEVICE's measurements vs a from-scratch fit on the same K."""
    from pipeline.predict import load_predictor
    from pipeline.predict.transfer import transfer_study
    from pipeline.predict.workflow import load_dataset

    src = load_predictor(source)
    data = load_dataset(device, src.space_name, store_path)
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
