"""Measured register tiles: a device's fastest tile for the 1x1 and stem convolutions of
a space, timed on the device, and carried to the shapes that were not timed.

The library's tile rule (`schedules.register_tile`) is one formula for every shape. Timed
alone on an AVX-512 Xeon, the best of ~30 tiles beat it by up to 1.24x on some kernels
and matched it on others; which tile wins depends on the shape and the CPU. Tuning all
~1,100 kernels of the AttentiveNAS space with MetaSchedule costs device-days, and its
records cannot read prepacked weights. Instead `tune_tiles` times every candidate tile of
a few representative shapes (the heaviest by FLOPs over the space, skipping shapes close
to one already chosen) through the same measuring path as subnets (local, RPC, tracker,
SSH), writing each shape's result as it comes (a rerun resumes). `TileTable.get` then
gives any shape the tile of its nearest timed neighbour with the same reduction window
(positions, channels and reduction length each within a factor of `NEAR`), when that tile
fits the shape; otherwise the rule's tile stands.

The table states the CPU it was measured on (`database.TunedOn`) and applies only there,
like the tuning database: `kernels/<device>/tiles.json`.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.atomic import write_text
from pipeline.kernels.database import TunedOn, device_kernel_dir
from pipeline.kernels.schedules import PREDICATED_MAX_WASTE, ScheduleParams, TileShape, schedule_primfunc
from pipeline.paths import kernels_dir

log = logging.getLogger(__name__)

TILES_FILE = "tiles.json"
#: A timed shape lends its tile to shapes whose positions, channels and reduction length
#: are each within this factor of its own.
NEAR = 2.0
#: Shapes are chosen for timing heaviest first, skipping any within this factor (on every
#: axis) of one already chosen: it would teach little its neighbour does not.
SPREAD = 1.5
#: A timed tile replaces the rule's only when it was at least this much faster: within the
#: timing noise of a shared machine (a few %) the rule's tile is kept.
MIN_GAIN = 1.03
#: Accumulators of a candidate tile.
MIN_ACCUMULATORS, MAX_ACCUMULATORS = 4, 28


def _distance(a: TileShape, b: TileShape) -> float:
    """Largest log-ratio over positions, channels and reduction length; inf when the
    reduction windows differ (a stem and a 1x1 never share tiles)."""
    if a.reduction[:-1] != b.reduction[:-1]:
        return math.inf
    return max(abs(math.log(x / y)) for x, y in ((a.positions, b.positions), (a.channels, b.channels),
                                                    (a.reduction[-1], b.reduction[-1])))


def fits(tile: tuple[int, int], shape: TileShape, lanes: int) -> bool:
    """True when `tile` is a valid tile of `shape`: whole vectors dividing the channels,
    positions dividing the width or predicated with at most `PREDICATED_MAX_WASTE`."""
    positions, channels = tile
    if channels % lanes or shape.channels % channels:
        return False
    return math.ceil(shape.positions / positions) * positions <= (1 + PREDICATED_MAX_WASTE) * shape.positions


def candidates(shape: TileShape, params: ScheduleParams) -> list[tuple[int, int]]:
    """Every tile worth timing for `shape`: 1-4 vectors, 4-28 accumulators, fitting the
    register file with the weight vectors and one input register."""
    out = []
    for vectors in (1, 2, 3, 4):
        for positions in range(1, MAX_ACCUMULATORS + 1):
            tile = (positions, vectors * params.lanes)
            accumulators = positions * vectors
            if (MIN_ACCUMULATORS <= accumulators <= MAX_ACCUMULATORS and accumulators + vectors + 1 < params.registers
                    and positions <= shape.positions and fits(tile, shape, params.lanes)):
                out.append(tile)
    return out


@dataclass
class TileTable:
    """Timed shapes and their fastest tiles, for one device and CPU."""

    tuned_on: TunedOn
    lanes: int
    entries: dict[TileShape, dict] = field(default_factory=dict)

    def get(self, shape: TileShape, default: tuple[int, int]) -> tuple[int, int]:
        """The tile of the nearest timed shape that fits `shape` (its fastest, or its rule's
        when the fastest won by less than `MIN_GAIN`), else `default`."""
        near = sorted(((d, s) for s in self.entries if (d := _distance(shape, s)) <= math.log(NEAR)),
                      key=lambda pair: pair[0])  # equally near: the first timed (heavier) wins
        for _, timed in near:
            entry = self.entries[timed]
            tile = tuple(entry["tile"] if entry["rule_us"] >= MIN_GAIN * entry["us"] else entry["rule_tile"])
            if fits(tile, shape, self.lanes):
                return tile
        return default

    def to_json(self) -> str:
        return json.dumps({
            "tuned_on": self.tuned_on.to_dict(),
            "lanes": self.lanes,
            "shapes": [{"reduction": list(s.reduction), "positions": s.positions, "channels": s.channels, **e}
                       for s, e in self.entries.items()]}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TileTable":
        raw = json.loads(text)
        table = cls(TunedOn.from_dict(raw["tuned_on"]), int(raw["lanes"]))
        for row in raw["shapes"]:
            shape = TileShape(tuple(row.pop("reduction")), int(row.pop("positions")), int(row.pop("channels")))
            table.entries[shape] = row
        return table


def tiles_path(device_name: str) -> Path:
    """Where `device_name`'s tile table is read from (beside its tuning database)."""
    return device_kernel_dir(device_name) / TILES_FILE


def load_tiles(device_name: str, target) -> tuple[TileTable | None, str]:
    """The device's tile table when it was measured on `target`'s CPU, and a line saying
    what was applied (for the compile log and the manifest's kernel coverage)."""
    path = tiles_path(device_name)
    if not path.is_file():
        return None, "no measured tiles"
    try:
        table = TileTable.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as err:
        return None, f"measured tiles not applied: {path} is not a tile table ({err}); retune with `pipeline kernels tiles`"
    here = TunedOn.of(target)
    if table.tuned_on != here:
        return None, (f"measured tiles not applied: timed on {table.tuned_on.describe()}, this target is "
                      f"{here.describe()} (retime with `pipeline kernels tiles --device {device_name}`)")
    return table, f"{len(table.entries)} measured tile shapes ({table.tuned_on.describe()})"


class _Recorder:
    """A tile lookup that keeps the rule's tile and remembers each shape asked for with it."""

    def __init__(self) -> None:
        self.asked: dict[TileShape, tuple[int, int]] = {}

    def get(self, shape: TileShape, default: tuple[int, int]) -> tuple[int, int]:
        self.asked[shape] = default
        return default


@dataclass(frozen=True)
class _Forced:
    """A tile lookup that answers one tile (to time it)."""

    tile: tuple[int, int]

    def get(self, shape: TileShape, default: tuple[int, int]) -> tuple[int, int]:
        return self.tile


def tile_shape(func, params: ScheduleParams) -> tuple[TileShape, tuple[int, int]] | None:
    """The tile shape a kernel's schedule asks for and the rule's tile (None: the kernel
    has no broadcast register tile: depthwise, pooling, matrix-vector, elementwise)."""
    recorder = _Recorder()
    schedule_primfunc(func, replace(params, tiles=recorder))
    return next(iter(recorder.asked.items()), None)


def representative_shapes(funcs: Iterable[tuple[object, float]], params: ScheduleParams, count: int
                          ) -> list[tuple[TileShape, object, tuple[int, int], float]]:
    """(shape, kernel, rule tile, weight) of up to `count` shapes to time: the heaviest
    (FLOPs x calls over the subnets) first, skipping shapes within `SPREAD` of one chosen."""
    weights: dict[TileShape, list] = {}
    for func, weight in funcs:
        found = tile_shape(func, params)
        if found is None:
            continue
        shape, rule = found
        entry = weights.setdefault(shape, [func, rule, 0.0])
        entry[2] += weight
    chosen: list = []
    for shape, (func, rule, weight) in sorted(weights.items(), key=lambda kv: -kv[1][2]):
        if len(chosen) >= count:
            break
        if all(_distance(shape, c[0]) > math.log(SPREAD) for c in chosen):
            chosen.append((shape, func, rule, weight))
    return chosen


def time_tiles(func, shape: TileShape, tiles: list[tuple[int, int]], params: ScheduleParams, profile,
               progress: bool = False) -> dict[tuple[int, int], float]:
    """Microseconds of `func` scheduled with each tile, timed on the profile's device in
    the order given; a tile given twice keeps its faster time (`tune_tiles` times the
    rule's tile first and last: the first job of a batch ran up to 1.5x slow here)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from pipeline.device import RecordKey, export_library
    from pipeline.measure import MeasureJob, measure_batch

    target = profile.tvm_target()
    policy = replace(profile.policy, warmup=1, number=5, repeat=5, min_repeat_ms=10, remeasure=0)
    rng = np.random.default_rng(0)
    jobs, by_key = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, tile in enumerate(tiles):
            scheduled = schedule_primfunc(func, replace(params, tiles=_Forced(tile)), pack_weights=True)
            if scheduled is None:
                continue
            lib = tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)
            path = export_library(lib, Path(tmp) / f"tile{i}.so", profile)
            inputs = {f"arg{j}": rng.random([int(d) for d in a.shape]).astype(a.dtype)
                      for j, a in enumerate(ms.arg_info.ArgInfo.from_prim_func(scheduled))}
            key = RecordKey(profile.name, f"tile-{shape}-{tile}-{i}", str(target), tvm.__version__, "tile")
            jobs.append(MeasureJob(key, {}, path, inputs, policy, vm=False))
            by_key[key] = tile
        out = {}
        for result in measure_batch(profile, jobs, progress=progress, desc=f"tiles of {shape}"):
            if result.measurement is not None:
                tile, us = by_key[result.job.key], float(np.median(result.measurement.repeats_ms)) * 1e3
                out[tile] = min(us, out.get(tile, us))
    return out


def tune_tiles(funcs: Iterable[tuple[object, float]], profile, shapes: int, progress: bool = True
               ) -> tuple[TileTable, list[dict]]:
    """Time every candidate tile of up to `shapes` representative shapes of `funcs`
    ((kernel, weight) pairs) on the profile's device; each shape's result is written to
    `kernels_dir()/<device>/tiles.json` as soon as it is timed, and shapes already in the
    table (timed on this CPU) are not timed again. Returns the table and one row per
    shape timed now."""
    from pipeline.progress import progress_bar

    target = profile.tvm_target()
    params = ScheduleParams.for_target(target)
    here = TunedOn.of(target)
    existing, _ = load_tiles(profile.name, target)
    table = existing if existing is not None else TileTable(here, params.lanes)
    dest = kernels_dir() / profile.name / TILES_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    todo = [c for c in representative_shapes(funcs, params, shapes) if c[0] not in table.entries]
    rows = []
    for shape, func, rule, weight in progress_bar(todo, desc=f"time tiles on {profile.name}", unit="shape",
                                                  disable=not progress):
        start = time.perf_counter()
        timed = time_tiles(func, shape, [rule, *[t for t in candidates(shape, params) if t != rule], rule],
                           params, profile)
        if rule not in timed:
            log.warning("%s: the rule's tile could not be timed; shape skipped", shape)
            continue
        best = min(timed, key=timed.get)
        table.entries[shape] = {"tile": list(best), "us": timed[best], "rule_tile": list(rule), "rule_us": timed[rule],
                                "candidates": len(timed), "weight": weight, "seconds": time.perf_counter() - start}
        write_text(dest, table.to_json())  # as it comes: an interrupted run keeps what it timed
        rows.append({"shape": str(shape), **table.entries[shape]})
        log.info("%s: rule %s %.1f us, best %s %.1f us (%.2fx) of %d tiles", shape, rule, timed[rule], best,
                 timed[best], timed[rule] / timed[best], len(timed))
    return table, rows


def _subnet_kernels(job: tuple) -> list[tuple[str, float]]:
    """(kernel as TVM JSON, FLOPs x calls) of one subnet's fused kernels (a worker's job)."""
    import tvm

    from pipeline.kernels.kinds import kernel_kind
    from pipeline.kernels.lower import fuse_for_device, kernel_calls
    from pipeline.kernels.plan import subnet_module

    space, config, target_json, num_classes = job
    target = tvm.target.Target(json.loads(target_json))
    fused, funcs, _ = fuse_for_device(subnet_module(space, config, num_classes), target, None,
                                      ScheduleParams.for_target(target))
    calls = kernel_calls(fused)
    return [(tvm.ir.save_json(func), kernel_kind(func)[1] * calls.get(name, 1)) for name, func in funcs.items()]


def space_kernels(space, configs, target, num_classes: int, progress: bool = True,
                  workers: int | None = None) -> list[tuple[object, float]]:
    """(kernel, FLOPs x calls) of every fused kernel of the `configs` subnets, as a compile
    for `target` lowers them (channel-padded, unscheduled). Lowered by `workers` processes
    (default: one per CPU this process may use): for the full space's 150 covering subnets
    this is most of a tiling run. The workers are spawned: a script calling this needs an
    `if __name__ == "__main__":` guard."""
    import multiprocessing
    import os

    import tvm

    from pipeline.progress import progress_bar

    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(space, config, str(target), num_classes) for config in configs]  # a target prints as JSON
    out: list[tuple[object, float]] = []
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for kernels in progress_bar(pool.imap(_subnet_kernels, jobs), total=len(jobs), desc="lower subnets",
                                    unit="subnet", disable=not progress):
            out += [(tvm.ir.load_json(text), weight) for text, weight in kernels]
    return out
