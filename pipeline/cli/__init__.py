"""Command-line interface: a few lines per command over the library API.

Each command group lives in its own module here and is registered below.
"""
from __future__ import annotations

import logging
import sys

import click

from pipeline import __version__
from pipeline.errors import PipelineError


class _Group(click.Group):
    """Turns `PipelineError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):  # noqa: D401 - click hook
        try:
            return super().invoke(ctx)
        except PipelineError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Edge NAS deployment: supernet -> compiled, measured, searched artifacts per device."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


from pipeline.cli import info as _info  # noqa: E402

main.add_command(_info.info)

from pipeline.cli import compile as _compile  # noqa: E402

main.add_command(_compile.compile_cmd)

from pipeline.cli import train as _train  # noqa: E402

main.add_command(_train.train)
main.add_command(_train.evaluate)

from pipeline.cli import device as _device  # noqa: E402
from pipeline.cli import measurements as _measurements  # noqa: E402

main.add_command(_device.device)
main.add_command(_measurements.measurements)

from pipeline.cli import predictor as _predictor  # noqa: E402

main.add_command(_predictor.profile)
main.add_command(_predictor.predictor)

from pipeline.cli import build as _build  # noqa: E402

main.add_command(_build.build)

from pipeline.cli import kernels as _kernels  # noqa: E402

main.add_command(_kernels.kernels)

from pipeline.cli import search as _search  # noqa: E402

main.add_command(_search.search)
