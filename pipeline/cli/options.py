"""Options shared by several commands, defined once."""
from __future__ import annotations

import click

from pipeline.space import SearchSpace, SubnetConfig, resolve_arch

space_option = click.option(
    "--space", "space_name", default="attentivenas", show_default=True,
    help="Built-in space (attentivenas, demo) or a space YAML file.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def load_arch(arch: str, space_name: str) -> tuple[SearchSpace, SubnetConfig]:
    """Resolve ARCH and validate it against the chosen space."""
    space = SearchSpace.load(space_name)
    return space, space.validate(resolve_arch(arch))
