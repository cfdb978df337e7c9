"""`pipeline measurements export`: the measurement store as CSV or JSON."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import device_name, device_option, store_option
from pipeline.device.store import EXPORT_FORMATS, MeasurementStore


@click.group()
def measurements() -> None:
    """The SQLite store of device measurements."""


@measurements.command()
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@device_option(default=None, note="Only this device's measurements")
@store_option
def export(fmt: str, output: Path, device: str | None, store_path: Path | None) -> None:
    """Write every stored measurement (one row each, raw repeats included)."""
    with MeasurementStore(store_path) as store:
        n = store.export(output, fmt, device=device_name(device) if device else None)
    click.echo(f"wrote {n} measurement(s) to {output}")
