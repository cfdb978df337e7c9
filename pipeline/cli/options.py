"""Options shared by several commands, defined once."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.space import SearchSpace, SubnetConfig, resolve_arch

space_option = click.option(
    "--space", "space_name", default="attentivenas", show_default=True,
    help="Built-in space (attentivenas, demo) or a space YAML file.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
supernet_option = click.option(
    "--supernet", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Supernet checkpoint; default: the demo supernet (shipped, or yours from `train --demo`).",
)
data_option = click.option(
    "--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Image folders (train/, val/) to evaluate subnets of --supernet on.",
)
accuracy_trees_option = click.option(
    "--accuracy-trees", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Score accuracy with the official AttentiveNAS predictor arrays (acc_predictor_trees.npz).",
)


def load_arch(arch: str, space_name: str) -> tuple[SearchSpace, SubnetConfig]:
    """Resolve ARCH and validate it against the chosen space."""
    space = SearchSpace.load(space_name)
    return space, space.validate(resolve_arch(arch))
