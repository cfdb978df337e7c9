"""`pipeline info ARCH`: cost of one subnet from its config alone."""
from __future__ import annotations

import json

import click

from pipeline.cli.options import json_option, load_arch, space_option
from pipeline.space.arch import count_flops, count_params


@click.command()
@click.argument("arch")
@space_option
@json_option
def info(arch: str, space_name: str | None, as_json: bool) -> None:
    """Resolution, MFLOPs and M params of ARCH (a0..a6 or a config file)."""
    space, config = load_arch(arch, space_name)
    summary = {
        "id": config.id,
        "resolution": config.resolution,
        "mflops": round(count_flops(space, config) / 1e6, 3),
        "mparams": round(count_params(space, config) / 1e6, 3),
        "space": space.name,
        "config": config.to_dict(),
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{arch} ({config.id}) in space {space.name}: resolution {summary['resolution']}, "
                   f"{summary['mflops']:.1f} MFLOPs, {summary['mparams']:.2f} M params")
