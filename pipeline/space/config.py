"""A subnet config: the five choices that pick one subnet out of the supernet.

Same fields and meaning as AttentiveNAS' configs (and its A0..A6 YAML): `resolution`,
`width` (first_conv, mb1..mb7, last_conv), and per stage `depth`, `kernel_size`,
`expand_ratio`. Immutable and hashable so it can key caches and stores; its `id` is a
stable content hash that stays the same across processes and versions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from pipeline.errors import ConfigError

NUM_STAGES = 7
NUM_WIDTHS = NUM_STAGES + 2
FIELDS = ("resolution", "width", "depth", "kernel_size", "expand_ratio")
#: Length of the official accuracy predictor's input vector.
ENCODING_SIZE = 1 + NUM_WIDTHS + 3 * NUM_STAGES


@dataclass(frozen=True)
class SubnetConfig:
    """One subnet. Validate against a space with `SearchSpace.validate`."""

    resolution: int
    width: tuple[int, ...]
    depth: tuple[int, ...]
    kernel_size: tuple[int, ...]
    expand_ratio: tuple[int, ...]

    def __post_init__(self) -> None:
        lengths = {"width": NUM_WIDTHS, "depth": NUM_STAGES, "kernel_size": NUM_STAGES,
                   "expand_ratio": NUM_STAGES}
        for field, n in lengths.items():
            value = getattr(self, field)
            if len(value) != n:
                raise ConfigError(f"{field} must have {n} entries, got {len(value)}: {list(value)}")

    # ---------------------------------------------------------- (de)serialising
    @classmethod
    def from_dict(cls, raw: Any) -> "SubnetConfig":
        """From a mapping with the five fields (extra keys such as `model` are ignored)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a subnet config must be a mapping with keys {list(FIELDS)}, got {type(raw).__name__}")
        missing = [f for f in FIELDS if f not in raw]
        if missing:
            raise ConfigError(f"subnet config lacks {missing}; it needs {list(FIELDS)}")

        def as_ints(field: str) -> tuple[int, ...]:
            value = raw[field]
            if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
                raise ConfigError(f"{field} must be a list of integers, got {value!r}")
            return tuple(int(v) for v in value)

        if not _is_int(raw["resolution"]):
            raise ConfigError(f"resolution must be an integer, got {raw['resolution']!r}")
        return cls(
            resolution=int(raw["resolution"]),
            width=as_ints("width"),
            depth=as_ints("depth"),
            kernel_size=as_ints("kernel_size"),
            expand_ratio=as_ints("expand_ratio"),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "SubnetConfig":
        """From a YAML or JSON file holding one config."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())  # JSON is YAML
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read subnet config {path}: {err}") from err
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @property
    def id(self) -> str:
        """Stable 12-hex-digit content hash, e.g. for file names and store keys."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    # ----------------------------------------------------------------- encoding
    def encode(self) -> np.ndarray:
        """The official predictor's 31 numbers: resolution, width(9), depth, kernel, expand."""
        return np.array(
            [self.resolution, *self.width, *self.depth, *self.kernel_size, *self.expand_ratio],
            dtype=np.float64,
        )

    @classmethod
    def decode(cls, vector: Iterable[float]) -> "SubnetConfig":
        """Inverse of `encode`."""
        v = [int(round(x)) for x in vector]
        if len(v) != ENCODING_SIZE:
            raise ConfigError(f"an encoded config has {ENCODING_SIZE} numbers, got {len(v)}")
        s = NUM_STAGES
        return cls(v[0], tuple(v[1:10]), tuple(v[10:10 + s]), tuple(v[10 + s:10 + 2 * s]), tuple(v[10 + 2 * s:]))


def encode_many(configs: Iterable[SubnetConfig]) -> np.ndarray:
    """Stack encodings into an (N, 31) array for vectorised predictors."""
    rows = [c.encode() for c in configs]
    return np.stack(rows) if rows else np.zeros((0, ENCODING_SIZE))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, float) and value.is_integer()
    )
