"""Which torch module a subnet is compiled from.

With a supernet, its extracted static subnet (the weights the app wants). Without one,
a seeded random-weight subnet: good for latency work and for checking that the compiled
code is right, never for predictions (its manifest says `random-init`).
"""
from __future__ import annotations

from typing import Any

import torch

from pipeline.errors import CheckpointError
from pipeline.space import SearchSpace, SubnetConfig

#: Seed of the weights of subnets compiled without a supernet (latency work, tests).
RANDOM_INIT_SEED = 0


def static_module(space: SearchSpace, config: SubnetConfig, supernet: Any, num_classes: int) -> torch.nn.Module:
    """The subnet's static module: from the supernet's weights, or seeded random weights.

    Random weights get perturbed BatchNorm statistics and affine terms: a fresh subnet
    has zero-initialised residual BN gammas, which would make most of the graph dead and
    the on-device check blind to errors in it.
    """
    if supernet is not None:
        return supernet.extract(config).eval()
    from pipeline.model import build_static

    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_INIT_SEED)
        module = build_static(space, config, num_classes)
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.1)
                bn.running_mean.normal_(0.0, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return module.eval()


def check_supernet_space(space: SearchSpace, supernet: Any, checkpoint: str | None) -> None:
    """Refuse a supernet built for another space (its weights would not fit the config)."""
    theirs = supernet.space
    if theirs.structure() != space.structure():
        what = f"checkpoint {checkpoint}" if checkpoint else "the supernet"
        raise CheckpointError(f"{what} was built for space {theirs.name!r}, not {space.name!r}; "
                              f"pass --space {theirs.name} (or the space file it was trained with)")

