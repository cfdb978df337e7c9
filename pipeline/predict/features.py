"""Vectorised per-subnet features and per-block keys, straight from `encode_many` arrays.

A subnet is a sum of components (stem, the blocks at each (stage, index) position, the
head), and each component's shapes depend on only a handful of the config's choices
(resolution, the in/out widths, kernel, expand ratio of its stage). So every component
kind has a small finite table over those choices, computed ONCE per space with the real
`pipeline.space.arch` code (no second copy of the FLOPs formulas); a batch of encoded
configs is then featurised by mixed-radix indexing into those tables. This is what lets
a predictor score 1e5+ candidates per second.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.errors import ConfigError
from pipeline.space import ENCODING_SIZE, SearchSpace, SubnetConfig
from pipeline.space.arch import BlockSpec, block_specs, head_spec
from pipeline.space.config import NUM_STAGES

BYTES_PER_ELEMENT = 4  # fp32 activations
#: Columns of `encode()`: resolution, width(9), depth(7), kernel(7), expand(7).
COL_RES, COL_WIDTH, COL_DEPTH, COL_KERNEL, COL_EXPAND = 0, 1, 10, 17, 24
#: Per-component numbers kept in the tables.
COMPONENT_STATS = ("flops", "params", "act_bytes")


@dataclass(frozen=True)
class Component:
    """One position of the network whose shapes depend on the config columns `columns`.

    `stats[i]` holds (flops, params, act_bytes) of the i-th combination of the columns'
    choices (mixed radix, first column most significant); `blocks[i]` the BlockSpec when
    the component is an inverted-residual block. `depth_col`/`index` make a block active
    only when `depth[stage] > index`.
    """

    name: str
    stage: int  # -1 stem, 0..6 mb1..mb7, 7 head
    index: int
    columns: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    stats: np.ndarray  # (n_combinations, len(COMPONENT_STATS))
    blocks: tuple[BlockSpec, ...] | None
    depth_col: int | None

    def combination_index(self, batch: "Batch") -> np.ndarray:
        """Row of `stats` for each config of the batch (vectorised mixed radix)."""
        idx = np.zeros(len(batch), dtype=np.int64)
        for col, options in zip(self.columns, self.choices):
            idx = idx * len(options) + batch.positions[:, col]
        return idx

    def active(self, batch: "Batch") -> np.ndarray:
        """Whether this component exists in each config (blocks beyond depth do not)."""
        if self.depth_col is None:
            return np.ones(len(batch), dtype=bool)
        return batch.encoded[:, self.depth_col] > self.index


@dataclass(frozen=True)
class Batch:
    """Encoded configs plus, per column, the position of each value among the sorted choices."""

    encoded: np.ndarray  # (N, 31) float
    positions: np.ndarray  # (N, 31) int

    def __len__(self) -> int:
        return len(self.encoded)


def _block_stats(block: BlockSpec) -> tuple[int, int, int]:
    """FLOPs, params and bytes of the activations a block writes (expand, dw, project)."""
    out_elems = block.out_size**2
    written = block.mid_channels * out_elems + block.out_channels * out_elems
    if block.has_expand:
        written += block.mid_channels * block.in_size**2
    return block.flops(), block.run_params(), written * BYTES_PER_ELEMENT


def _sorted(options: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(options)))


def _block_component(space: SearchSpace, stage: int, index: int) -> Component:
    """Table of the block at (stage, index) over resolution, in/out width, kernel, expand."""
    base = space.largest()
    width_in = COL_WIDTH + stage if index == 0 else COL_WIDTH + stage + 1
    columns = tuple(dict.fromkeys((COL_RES, width_in, COL_WIDTH + stage + 1,
                                   COL_KERNEL + stage, COL_EXPAND + stage)))
    choice_of = _column_choices(space)
    choices = tuple(_sorted(choice_of[c]) for c in columns)
    stats, blocks = [], []
    for combo in itertools.product(*choices):
        vec = base.encode()
        for col, value in zip(columns, combo):
            vec[col] = value
        config = SubnetConfig.decode(vec)
        block = next(b for b in block_specs(space, config) if b.stage == stage and b.index == index)
        stats.append(_block_stats(block))
        blocks.append(block)
    return Component(f"mb{stage + 1}.{index}", stage, index, columns, choices,
                     np.asarray(stats, dtype=np.float64), tuple(blocks), COL_DEPTH + stage)


def _column_choices(space: SearchSpace) -> dict[int, tuple[int, ...]]:
    """Allowed values of each encoded column."""
    ch = space.choices()
    flat = list(ch["resolution"]) + list(ch["width"]) + list(ch["depth"]) + list(ch["kernel_size"]) + list(
        ch["expand_ratio"])
    return dict(enumerate(flat))


def _head_component(space: SearchSpace, stem: bool) -> Component:
    """Stem (resolution, width[0]) or head (resolution, width[7], width[8]) table."""
    columns = (COL_RES, COL_WIDTH) if stem else (COL_RES, COL_WIDTH + 7, COL_WIDTH + 8)
    choice_of = _column_choices(space)
    choices = tuple(_sorted(choice_of[c]) for c in columns)
    base = space.largest()
    stats = []
    for combo in itertools.product(*choices):
        vec = base.encode()
        for col, value in zip(columns, combo):
            vec[col] = value
        head = head_spec(space, SubnetConfig.decode(vec))
        if stem:
            stats.append((head.stem_flops(), head.stem_params(),
                          head.stem_channels * head.stem_out_size**2 * BYTES_PER_ELEMENT))
        else:
            written = head.final_expand_channels * (head.final_size**2 + 1) + head.feature_channels + head.num_classes
            stats.append((head.head_flops(), head.head_params(), written * BYTES_PER_ELEMENT))
    return Component("stem" if stem else "head", -1 if stem else NUM_STAGES, 0, columns, choices,
                     np.asarray(stats, dtype=np.float64), None, None)


@dataclass(frozen=True)
class SpaceTables:
    """Every component table of one space; build with `space_tables(space)`."""

    space: SearchSpace
    components: tuple[Component, ...]
    #: (31, max value + 1): position of a value among its column's sorted choices, -1 if not allowed.
    position_table: np.ndarray

    def index(self, configs) -> Batch:
        """Validate and index a batch (configs, an encoded array, or an existing Batch) in one gather."""
        if isinstance(configs, Batch):
            return configs
        encoded = as_encoded(configs)
        values = encoded.astype(np.int64)
        top = self.position_table.shape[1] - 1
        inside = (values == encoded) & (values >= 0) & (values <= top)
        positions = self.position_table[np.arange(ENCODING_SIZE), np.clip(values, 0, top)]
        bad = ~inside | (positions < 0)
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            allowed = list(np.flatnonzero(self.position_table[col] >= 0))
            raise ConfigError(f"encoded column {col} holds {encoded[row, col]:g}, not one of {allowed}: "
                              "validate configs against the space the predictor was fitted for")
        return Batch(encoded, positions)

    @property
    def blocks(self) -> tuple[Component, ...]:
        return tuple(c for c in self.components if c.blocks is not None)

    def feature_names(self) -> list[str]:
        """Names of the columns `subnet_features` returns, in order."""
        names = ["resolution", "total_mflops", "total_mparams", "total_act_mb", "n_blocks",
                 "stem_mflops", "head_mflops"]
        for s in range(NUM_STAGES):
            names += [f"mb{s + 1}_mflops", f"mb{s + 1}_mparams", f"mb{s + 1}_act_mb", f"mb{s + 1}_depth"]
        return names

    def subnet_features(self, configs) -> np.ndarray:
        """(N, F) features: resolution, totals, stem/head FLOPs, per-stage FLOPs/params/activations/depth.

        FLOPs in MFLOPs, params in M, activations in MB so columns have similar scales.
        """
        batch = self.index(configs)
        encoded = batch.encoded
        scale = np.array([1e-6, 1e-6, 1e-6])
        n = len(encoded)
        per_stage = np.zeros((n, NUM_STAGES, 3))
        stem = head = np.zeros((n, 3))
        for comp in self.components:
            vals = comp.stats[comp.combination_index(batch)] * scale
            if comp.stage < 0:
                stem = vals
            elif comp.stage >= NUM_STAGES:
                head = vals
            else:
                per_stage[:, comp.stage] += vals * comp.active(batch)[:, None]
        depth = encoded[:, COL_DEPTH:COL_DEPTH + NUM_STAGES]
        totals = per_stage.sum(axis=1) + stem + head
        stage_cols = np.concatenate([per_stage, depth[:, :, None]], axis=2).reshape(n, -1)
        return np.column_stack([encoded[:, COL_RES], totals, depth.sum(axis=1), stem[:, 0], head[:, 0],
                                stage_cols])


@lru_cache(maxsize=8)
def space_tables(space: SearchSpace) -> SpaceTables:
    """Component tables of `space` (built once per process per space; about 1 s for the full space)."""
    comps = [_head_component(space, stem=True)]
    for s, stage in enumerate(space.stages):
        comps += [_block_component(space, s, i) for i in range(max(stage.depths))]
    comps.append(_head_component(space, stem=False))
    choice_of = _column_choices(space)
    table = np.full((ENCODING_SIZE, max(max(v) for v in choice_of.values()) + 1), -1, dtype=np.int64)
    for col, options in choice_of.items():
        for pos, value in enumerate(_sorted(options)):
            table[col, value] = pos
    return SpaceTables(space, tuple(comps), table)


def as_encoded(configs_or_array) -> np.ndarray:
    """Accept a list of SubnetConfig or an (N, 31) array; return a float (N, 31) array."""
    if isinstance(configs_or_array, np.ndarray):
        arr = np.atleast_2d(configs_or_array).astype(np.float64, copy=False)
    else:
        rows = [c.encode() for c in configs_or_array]
        arr = np.stack(rows) if rows else np.zeros((0, ENCODING_SIZE))
    if arr.shape[1] != ENCODING_SIZE:
        raise ConfigError(f"encoded configs need {ENCODING_SIZE} columns, got {arr.shape[1]}")
    return arr


def distinct_blocks(space: SearchSpace, configs) -> list[BlockSpec]:
    """The distinct blocks (by `BlockSpec.key`) used by `configs`, in first-seen order."""
    seen: dict[tuple, BlockSpec] = {}
    for config in configs:
        for block in block_specs(space, config):
            seen.setdefault(block.key, block)
    return list(seen.values())


def all_blocks(space: SearchSpace) -> list[BlockSpec]:
    """Every distinct block the space can produce (the full lookup-table domain)."""
    seen: dict[tuple, BlockSpec] = {}
    for comp in space_tables(space).blocks:
        for block in comp.blocks:
            seen.setdefault(block.key, block)
    return list(seen.values())
