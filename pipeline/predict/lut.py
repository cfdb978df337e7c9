"""Per-block latency lookup table (OFA-style), summed over a subnet's active blocks.

Entries are the latencies of single-block modules measured on the device, keyed by
`BlockSpec.key` (stage, in/out channels, kernel, expand, stride, input size, SE). The
table is laid onto the space's component tables (`pipeline.predict.features`), so a
batch of encoded configs is summed with one gather per block position. Blocks of the
space that were never measured get an estimate from a ridge model over the block's
FLOPs, parameters and activation bytes fitted on the measured ones; `coverage` says how
much of a batch's latency sum rests on measured entries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from pipeline.errors import ConfigError
from pipeline.predict.features import SpaceTables
from pipeline.predict.models import LinearModel, fit_ridge
from pipeline.space.arch import BlockSpec

#: Below this many measured blocks the unmeasured ones get the mean entry instead of a fit.
MIN_ENTRIES_FOR_FALLBACK = 3


def _block_row(stats: np.ndarray, block: BlockSpec) -> np.ndarray:
    """Fallback features of a block: MFLOPs, M params, MB written, kernel, stride, SE, expand."""
    return np.concatenate([stats * np.array([1e-6, 1e-6, 1e-6]),
                           [block.kernel_size, block.stride, float(block.use_se), block.expand_ratio]])


@dataclass(frozen=True)
class BlockLatencyTable:
    """Measured block latencies (ms) laid onto a space; build with `BlockLatencyTable.build`."""

    entries: Mapping[tuple, float]
    tables: SpaceTables
    fallback: LinearModel | None
    per_position_ms: tuple[np.ndarray, ...] = field(repr=False)  # one array per block component
    per_position_measured: tuple[np.ndarray, ...] = field(repr=False)

    @classmethod
    def build(cls, tables: SpaceTables, entries: Mapping[tuple, float]) -> "BlockLatencyTable":
        """Lay `entries` (BlockSpec.key -> ms) onto `tables` and fit the fallback for the rest."""
        if not entries:
            raise ConfigError("the block lookup table is empty; measure blocks first "
                              "(`pipeline profile --device NAME --measure blocks`)")
        entries = {tuple(k): float(v) for k, v in entries.items()}
        rows, targets, seen = [], [], set()
        for comp in tables.blocks:
            for stats, block in zip(comp.stats, comp.blocks):
                if block.key in entries and block.key not in seen:
                    seen.add(block.key)
                    rows.append(_block_row(stats, block))
                    targets.append(entries[block.key])
        fallback = None
        if len(rows) >= MIN_ENTRIES_FOR_FALLBACK:
            y = np.asarray(targets)
            fallback = fit_ridge(np.stack(rows), y, weight=1.0 / np.maximum(y, 1e-6) ** 2)
        ms, measured = [], []
        for comp in tables.blocks:
            known = np.array([b.key in entries for b in comp.blocks])
            values = np.array([entries.get(b.key, np.nan) for b in comp.blocks])
            if not known.all():
                if fallback is None:
                    values = np.where(known, values, np.nanmean(list(entries.values())))
                else:
                    estimate = fallback.predict(np.stack([_block_row(s, b) for s, b in zip(comp.stats, comp.blocks)]))
                    values = np.where(known, values, np.maximum(estimate, 0.0))
            ms.append(values)
            measured.append(known)
        return cls(entries, tables, fallback, tuple(ms), tuple(measured))

    def block_sum(self, configs) -> np.ndarray:
        """Sum of the table's latencies over each config's active blocks (ms)."""
        batch = self.tables.index(configs)
        total = np.zeros(len(batch))
        for comp, ms in zip(self.tables.blocks, self.per_position_ms):
            total += ms[comp.combination_index(batch)] * comp.active(batch)
        return total

    def coverage(self, configs) -> np.ndarray:
        """Share of each config's block-latency sum that comes from measured entries."""
        batch = self.tables.index(configs)
        measured_sum = np.zeros(len(batch))
        for comp, ms, known in zip(self.tables.blocks, self.per_position_ms, self.per_position_measured):
            idx = comp.combination_index(batch)
            measured_sum += ms[idx] * known[idx] * comp.active(batch)
        return measured_sum / np.maximum(self.block_sum(batch), 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [[list(k), v] for k, v in self.entries.items()]}

    @classmethod
    def from_dict(cls, tables: SpaceTables, raw: Mapping[str, Any]) -> "BlockLatencyTable":
        return cls.build(tables, entries_from_list(raw["entries"]))


def entries_from_list(rows: Iterable) -> dict[tuple, float]:
    """[[key-list, ms], ...] (the JSON form) -> {key-tuple: ms}."""
    return {tuple(_plain(k)): float(v) for k, v in rows}


def _plain(key: Iterable) -> list:
    """JSON turns the SE flag into true/false and ints stay ints; keep the key hashable and equal."""
    return [bool(x) if isinstance(x, bool) else int(x) for x in key]
