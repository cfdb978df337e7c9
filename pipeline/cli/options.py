"""Options shared by several commands, defined once, so each means the same everywhere.

`--space` and `--device` follow one rule each (`SPACE_RULE`, `DEVICE_RULE`, also printed
by `pipeline --help`): the same values are accepted and the default is found the same
way in every command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from pipeline.errors import ConfigError
from pipeline.space import SearchSpace, SubnetConfig, named_configs, resolve_arch

#: The space when nothing the command is given fixes one: the built-in demo supernet's.
DEFAULT_SPACE = "demo"
#: The device when none is named: this machine.
DEFAULT_DEVICE = "x86-host"

SPACE_RULE = (f"a built-in space (demo, attentivenas) or a space YAML file. Default: the space of what the "
              f"command works on (a supernet checkpoint, a training recipe and a fitted predictor record theirs; "
              f"A0..A6 are AttentiveNAS configs), else {DEFAULT_SPACE} (the built-in demo supernet's).")
DEVICE_RULE = (f"a device profile, by name (`pipeline device list`) or as a YAML file; repeatable where "
               f"a command serves several devices. Default: {DEFAULT_DEVICE} (this machine), except in `build` "
               f"(the devices of its --target this machine reaches without set-up) and `measurements export` "
               f"(every device).")

space_option = click.option("--space", "space_name", default=None, metavar="NAME|FILE",
                            help=f"Search space: {SPACE_RULE}")


def device_option(multiple: bool = False, default: str | tuple[str, ...] | None = DEFAULT_DEVICE,
                  note: str = "") -> Callable:
    """`--device` (value: profile name or file, as `load_profile` takes it); `note` says
    what the device is for in this command."""
    if multiple and isinstance(default, str):
        default = (default,)
    return click.option("--device", "devices" if multiple else "device", multiple=multiple, default=default,
                        metavar="NAME|FILE", show_default=bool(default),
                        help=f"{note or 'The device'}: {DEVICE_RULE}")


def device_name(device: str) -> str:
    """The device's name, for state kept by name (predictors, measurements): a profile
    file is read for its `name`; a name stays as it is (what is kept under it decides)."""
    if not Path(device).is_file():
        return device
    from pipeline.device import load_profile

    return load_profile(device).name


def resolve_space(space_name: str | None, arch: str | None = None) -> SearchSpace:
    """`--space` by the rule: given, else the space ARCH belongs to (A0..A6), else the default."""
    if space_name:
        return SearchSpace.load(space_name)
    if arch is not None and arch.lower() in named_configs():
        return SearchSpace.load("attentivenas")
    return SearchSpace.load(DEFAULT_SPACE)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
store_option = click.option("--store", "store_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                            help="Measurement store (default: cache_dir()/measurements.sqlite).")
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


def load_arch(arch: str, space_name: str | None) -> tuple[SearchSpace, SubnetConfig]:
    """Resolve ARCH and validate it against `--space` (by the rule when not given)."""
    space = resolve_space(space_name, arch)
    config = resolve_arch(arch)
    try:
        return space, space.validate(config)
    except ConfigError as err:
        if space_name:
            raise
        raise ConfigError(f"{err} (space {space.name} by default; pass --space NAME|FILE for another)") from None
