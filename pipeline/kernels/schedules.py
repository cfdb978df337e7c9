"""Hand-written TensorIR schedules for the fused kernels these nets are made of.

After `layout.to_channels_last` every convolution (stem, 1x1 expand/project/shortcut,
depthwise, the SE block's 1x1 convs on a 1x1 map), every pooling and the classifier
are one reduction whose output's innermost axis is the channel axis, with channels
contiguous in the input (NHWC) and in the weights (HWIO). One schedule parametrised by
shape therefore covers them all: a register tile of `width x channels` accumulators
(channels vectorised at the CPU's SIMD width), the reduction loops outside the tile,
the fused epilogue (bias, activation, residual add) computed on the tile while it is hot,
and the outer tiles run in parallel when the kernel is big enough to pay for waking the
thread pool. Kernels without a reduction (SE gating, transposes) are flattened,
vectorised and, when large, parallelised.

These schedules make an untuned subnet fast; MetaSchedule records replace them where
tuning found something faster (`lower.lower_for_target` prefers records, `tune` seeds
the database with these schedules so it only keeps what beats them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
import tvm.tirx
from tvm.s_tir import Schedule
from tvm.target import codegen

log = logging.getLogger(__name__)

#: Accumulator vectors a register tile may hold (x86-64 AVX-512 has 32 vector
#: registers, AArch64 NEON 32; leave room for inputs and weights).
MAX_ACCUMULATORS = 12
#: Below this many multiply-adds (or elements) a kernel runs on one core: waking the
#: thread pool costs a few microseconds, more than such a kernel takes.
PARALLEL_MIN_WORK = 1 << 16
#: Reduction loops up to this extent (kernel windows) are unrolled.
UNROLL_MAX_EXTENT = 7

_REDUCE = 2  # tvm.tirx.IterVar.CommReduce


@dataclass(frozen=True)
class ScheduleParams:
    """Target facts the schedules are parametrised by."""

    lanes: int  # float32 lanes of one SIMD register
    cores: int

    @classmethod
    def for_target(cls, target: tvm.target.Target) -> "ScheduleParams":
        bits = int(codegen.llvm_get_vector_width(target)) if target.kind.name == "llvm" else 128
        cores = int(target.attrs.get("num-cores", 1) or 1)
        return cls(lanes=max(1, bits // 32), cores=cores)


def schedule_primfunc(func: tvm.tirx.PrimFunc, params: ScheduleParams) -> tvm.tirx.PrimFunc | None:
    """The library schedule of one fused kernel, or None when no schedule here fits it."""
    sch = Schedule(tvm.IRModule({"main": func}))
    return sch.mod["main"] if _apply(sch, params) else None


def schedule_trace(func: tvm.tirx.PrimFunc, params: ScheduleParams) -> tvm.s_tir.Trace | None:
    """The library schedule as a replayable trace (to seed a MetaSchedule database)."""
    sch = Schedule(tvm.IRModule({"main": func}))
    scheduled = _apply(sch, params)
    return sch.trace if scheduled else None


def _apply(sch: Schedule, params: ScheduleParams) -> bool:
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if _is_reduction(sch, b)]
        if len(reductions) > 1:
            return False
        if reductions:
            _schedule_reduction(sch, reductions[0], blocks, params)
        else:
            _schedule_injective(sch, blocks, params)
    except tvm.s_tir.ScheduleError as err:
        log.debug("no library schedule: %s", err)
        return False
    return True


def _is_reduction(sch: Schedule, block) -> bool:
    return any(int(iv.iter_type) == _REDUCE for iv in sch.get(block).iter_vars)


def _inline_all_but(sch: Schedule, blocks: list, keep: list) -> list:
    """Inline every block not in `keep` (producers forward, consumers backward).

    Returns the blocks that could not be inlined (they stay as separate loop nests)."""
    kept_srefs = [sch.get_sref(b) for b in keep]
    left = []
    for block in blocks:
        if any(sch.get_sref(block).same_as(k) for k in kept_srefs):
            continue
        try:
            sch.compute_inline(block)
        except tvm.s_tir.ScheduleError:
            try:
                sch.reverse_compute_inline(block)
            except tvm.s_tir.ScheduleError:
                left.append(block)
    return left


def _divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _channel_tile(channels: int, lanes: int) -> int:
    """Channels per register tile: whole SIMD vectors (two when they divide), else the
    largest power of two dividing `channels` (a partial vector beats a scalar loop)."""
    for tile in (2 * lanes, lanes):
        if channels % tile == 0 and channels >= 2 * tile:
            return tile
    tile = 1
    while tile < lanes and channels % (tile * 2) == 0:
        tile *= 2
    return tile


def _schedule_reduction(sch: Schedule, main, blocks: list, params: ScheduleParams) -> None:
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    output = outputs[0] if len(outputs) == 1 else None
    keep = [main] + ([output] if output is not None else [])
    _inline_all_but(sch, blocks, keep)
    if output is not None and sch.get_sref(output).same_as(sch.get_sref(main)):
        output = None

    iter_vars = sch.get(main).iter_vars
    loops = sch.get_loops(main)
    extents = [int(iv.dom.extent) for iv in iter_vars]
    spatial = [lp for lp, iv in zip(loops, iter_vars) if int(iv.iter_type) != _REDUCE]
    reduce = [lp for lp, iv in zip(loops, iter_vars) if int(iv.iter_type) == _REDUCE]
    s_ext = [e for e, iv in zip(extents, iter_vars) if int(iv.iter_type) != _REDUCE]
    r_ext = [e for e, iv in zip(extents, iter_vars) if int(iv.iter_type) == _REDUCE]

    c_tile = _channel_tile(s_ext[-1], params.lanes)
    c_outer, c_inner = sch.split(spatial[-1], [None, c_tile])
    vectors = max(1, c_tile // params.lanes)
    outer = list(spatial[:-1])
    if len(spatial) >= 2:
        w_tile = _divisor_at_most(s_ext[-2], max(1, MAX_ACCUMULATORS // vectors))
        w_outer, w_inner = sch.split(spatial[-2], [None, w_tile])
        outer = list(spatial[:-2]) + [w_outer]
        inner = [w_inner, c_inner]
    else:
        inner = [c_inner]
    sch.reorder(*outer, c_outer, *reduce, *inner)
    for loop, extent in zip(reduce, r_ext):
        if extent <= UNROLL_MAX_EXTENT:
            sch.unroll(loop)
    if len(inner) == 2:
        sch.unroll(inner[0])
    sch.vectorize(c_inner)

    if output is not None:
        sch.reverse_compute_at(output, c_outer, preserve_unit_loops=True)
        out_loops = sch.get_loops(output)
        sch.vectorize(out_loops[-1])
        if len(inner) == 2:
            sch.unroll(out_loops[-2])
    work = 1
    for e in extents:
        work *= e
    if work >= PARALLEL_MIN_WORK and params.cores > 1:
        sch.parallel(sch.fuse(*outer, c_outer) if outer else c_outer)
    if reduce:  # last: a decomposed update block no longer counts as a reduction
        sch.decompose_reduction(main, reduce[0])


def _schedule_injective(sch: Schedule, blocks: list, params: ScheduleParams) -> None:
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    left = _inline_all_but(sch, blocks, outputs)
    for block in left + list(outputs):
        loops = sch.get_loops(block)
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        total = int(sch.get(fused).extent)
        lanes = _divisor_at_most(total, params.lanes)
        outer, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
        if total >= PARALLEL_MIN_WORK and params.cores > 1:
            sch.parallel(outer)
