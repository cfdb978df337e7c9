"""Built-in named configs (AttentiveNAS-A0..A6) and resolving an ARCH argument.

An ARCH is what a user types: a built-in name (`a0`..`a6`, any case) or a path to a
YAML/JSON file holding one config.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.errors import ConfigError
from pipeline.paths import DATA_DIR
from pipeline.space.config import SubnetConfig


@lru_cache(maxsize=1)
def named_configs() -> dict[str, SubnetConfig]:
    """The published A0..A6 configs of the full AttentiveNAS space, by lower-case name."""
    raw = yaml.safe_load((DATA_DIR / "attentivenas_pareto.yaml").read_text())["pareto_models"]
    return {name.lower(): SubnetConfig.from_dict(cfg) for name, cfg in raw.items()}


def resolve_arch(arch: str) -> SubnetConfig:
    """A built-in name or a config file -> SubnetConfig (not yet validated against a space)."""
    named = named_configs()
    if arch.lower() in named:
        return named[arch.lower()]
    if Path(arch).is_file():
        return SubnetConfig.from_file(arch)
    raise ConfigError(
        f"ARCH {arch!r} is neither a built-in config ({', '.join(named)}) nor a YAML/JSON file"
    )
