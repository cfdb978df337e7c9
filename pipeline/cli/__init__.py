"""Command-line interface: a few lines per command over the library API.

Each command group lives in its own module here and is registered below.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import click

from pipeline import __version__
from pipeline.cli.options import DEVICE_RULE, SPACE_RULE
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

#: Exit status of a user or device error (one line) and of an internal error (a bug).
USER_ERROR, INTERNAL_ERROR = 2, 1


class _Group(click.Group):
    """`PipelineError` (the user's or the device's fault): one line on stderr, exit 2.

    Anything else is a bug: its traceback goes to stderr under `-v`, otherwise to a file
    named in a short "internal error, please report" line; exit 1.
    """

    def invoke(self, ctx: click.Context):  # noqa: D401 - click hook
        try:
            return super().invoke(ctx)
        except PipelineError as err:
            log.debug("details of the error below", exc_info=True)  # shown under -v only
            click.echo(f"error: {err}", err=True)
            sys.exit(USER_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own usage errors and exits
        except Exception as err:  # noqa: BLE001 - every other exception is a bug to report
            _report_internal_error(err, verbose=bool(ctx.params.get("verbose")))
            sys.exit(INTERNAL_ERROR)


def _report_internal_error(err: Exception, verbose: bool) -> None:
    text = "".join(traceback.format_exception(err))
    summary = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    if verbose:
        click.echo(text, err=True, nl=False)
        click.echo(f"internal error, please report it with the traceback above: {summary}", err=True)
        return
    saved = _save_traceback(text)
    where = f"traceback in {saved}; `pipeline -v ...` shows it here" if saved else \
        "run `pipeline -v ...` to see the traceback"
    click.echo(f"internal error, please report: {summary} ({where})", err=True)


def _save_traceback(text: str) -> Path | None:
    """Write the traceback under `cache_dir()/errors/`; None if even that fails."""
    from pipeline.atomic import write_text
    from pipeline.paths import cache_dir

    try:
        path = cache_dir() / "errors" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        return write_text(path, f"pipeline {__version__}: {' '.join(sys.argv)}\n{text}")
    except OSError:
        return None


@click.group(cls=_Group, help=f"""Edge NAS deployment: supernet -> compiled, measured, searched artifacts per device.

Options mean the same in every command that has them:

--space NAME|FILE is {SPACE_RULE}

--device NAME|FILE is {DEVICE_RULE}

A mistake of yours or a device's is one line on stderr (exit 2); anything else is an
internal error to report (exit 1), whose traceback -v prints.""")
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging; tracebacks of internal errors.")
def main(verbose: bool) -> None:
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
