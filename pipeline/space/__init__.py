"""Search space, subnet configs, named configs and analytic cost counts."""
from pipeline.space.config import ENCODING_SIZE, SubnetConfig, encode_many
from pipeline.space.named import named_configs, resolve_arch
from pipeline.space.space import SearchSpace, StageSpec

__all__ = [
    "ENCODING_SIZE",
    "SearchSpace",
    "StageSpec",
    "SubnetConfig",
    "encode_many",
    "named_configs",
    "resolve_arch",
]
