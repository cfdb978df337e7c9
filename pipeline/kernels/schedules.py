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
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import tvm
import tvm.tirx
from tvm.s_tir import Schedule
from tvm.target import codegen

from pipeline.kernels.prefetch import PanelPrefetch, insert_prefetch, prefetch_every

log = logging.getLogger(__name__)

#: Accumulator vectors a register tile may hold when its input is broadcast (a reduction
#: over input channels: 1x1 and stem convolutions, matmuls), as the 6x16 AVX2 sgemm
#: micro-kernels do.
MAX_ACCUMULATORS = 12
#: Fewest accumulators of a tile whose every multiply-add loads its own input vector
#: (depthwise convolutions, pooling) on a 16-register ISA; see `_load_bound_tile`.
MIN_LOAD_BOUND_ACCUMULATORS = 4
#: Positions of one tile on a 16-register ISA: every position's input is a broadcast
#: register, and LLVM issues them ahead of the FMAs. Measured on Zen 3, 1x1 convolutions
#: with 24-72 output channels (one vector wide): 8 positions 1.2-1.7x faster than 12,
#: while 9 (a 9x9 map's divisor) ran 1.56x faster than the 3 a cap of 8 leaves.
MAX_POSITIONS_16_REGISTERS = 9
#: Channel vectors per tile. 3 only on 16-register ISAs, where it was measured (Zen 3):
#: 3 positions x 3 vectors beat 3 x 2 by 1.2-1.3x on 9x9 maps of 720-1200 channels, and
#: 8 x 1 by 1.25x for 24 output channels.
TILE_VECTORS = {16: (1, 2, 3, 4), 32: (1, 2, 4)}
#: The AVX2 sgemm micro-kernel's tile (positions, vectors), taken on 16-register ISAs even
#: where its positions do not divide the map (the last tile is predicated) when no
#: dividing tile holds as many accumulators and at most this fraction of positions is
#: wasted. Maps of 7 x 7 and 14 x 14 (224 px) have no divisor 6 and got 7 x 1 or 4 x 2;
#: predicated 6 x 2 ran 1.22-1.24x faster at 7 x 7 (10 % waste), 1.07x at 14 x 14 (Zen 3).
PREDICATED_TILE = (6, 2)
PREDICATED_MAX_WASTE = 0.125
#: On 32-register ISAs (AVX-512, NEON), a broadcast tile holds up to this many accumulators
#: in 2 or 3 vectors per position, its positions dividing the map or predicated (at most
#: `PREDICATED_MAX_WASTE`), the most accumulators per useful position winning; see
#: `_wide_register_tile`.
WIDE_MAX_ACCUMULATORS = 14
WIDE_TILE_VECTORS = (2, 3)
WIDE_TILES = True
#: Below this many multiply-adds (or elements) a kernel runs on one core: waking the
#: thread pool costs a few microseconds, more than such a kernel takes.
PARALLEL_MIN_WORK = 1 << 16
#: Reduction loops up to this extent (kernel windows) are unrolled.
UNROLL_MAX_EXTENT = 7
#: Weight rows a matrix-vector kernel (SE convolutions, classifier) adds per pass over its
#: accumulators: fewer accumulator loads and stores, four streams from memory at once.
#: Measured on Zen 3, 1248 x 312 to 1344 x 1984 weights: 15 % faster warm, 18-21 % cold.
GEMV_ROWS = 4
#: On a target of several cores, split a large matrix-vector kernel's reduction between them
#: (`_schedule_split_gemv`). Interleaved A/B on Zen 3, 2 threads: A0 -8 %, A6 -5 %; one
#: thread: unchanged.
SPLIT_GEMV = True
#: Start the accumulators at the bias (`_fuse_bias`): one vector op fewer per output vector,
#: which matters where the reduction is short (16-32 input channels, 3x3 depthwise).
#: Interleaved A/B on the AVX-512 Xeon, one thread: A0 -4 %, A6 -1 %, two random subnets
#: -1 % and -3 %; two threads: 0 to -2 %.
FUSE_BIAS = True
#: Output rows per band of a fused block with its expansion (`_schedule_fused_block`),
#: fewer when the band's expansion rows would exceed `BAND_MAX_BYTES`. Each band
#: recomputes the rows its windows share with the next (1 of 2R + 1 at stride 2, 3x3): 2
#: rows per band ran 8-15 % slower than 4 or 8 (one AVX-512 core, 224 px blocks), which
#: were within the noise of each other; 16 rows and 1 MB: within 1 % of 8 and 512 KB.
BAND_ROWS = 8
BAND_MAX_BYTES = 512 << 10
#: Bytes of depthwise output a fused depthwise + projection kernel computes per band
#: (`_schedule_fused_block`): whole rows, as many as fit (at least one). 16 KB and
#: 256 KB were within the noise of 64 KB in whole nets (-1 to +1 %).
DEPTHWISE_BAND_BYTES = 64 << 10
#: Prefetch the next weight panel in weight-heavy pointwise kernels (`prefetch`). Only the
#: library schedule does: a MetaSchedule trace has no step for it.
PREFETCH_PANELS = True

_REDUCE = 2  # tvm.tirx.IterVar.CommReduce


@dataclass(frozen=True)
class TileShape:
    """What a broadcast register tile is chosen by: the reduction's extents ((1, 1, K) for
    a 1x1 convolution, (3, 3, 3) for the stem), the positions the tile's positions divide
    (H*W for a 1x1 at stride 1, else the map's width) and the output channels."""

    reduction: tuple[int, ...]
    positions: int
    channels: int

    def __str__(self) -> str:
        window = "x".join(str(r) for r in self.reduction[:-1])
        return f"{window} K={self.reduction[-1]} P={self.positions} C={self.channels}"


class TileLookup(Protocol):
    """Measured tiles (`tiles.TileTable`): the tile for a shape, or `default` (the rule's)."""

    def get(self, shape: TileShape, default: tuple[int, int]) -> tuple[int, int]: ...


@dataclass(frozen=True)
class ScheduleParams:
    """Target facts the schedules are parametrised by."""

    lanes: int  # float32 lanes of one SIMD register
    cores: int
    registers: int = 32  # SIMD registers the ISA names (16 on AVX2/SSE, 32 on AVX-512 and NEON)
    tiles: TileLookup | None = field(default=None, compare=False)  # measured tiles of this CPU

    @classmethod
    def for_target(cls, target: tvm.target.Target) -> "ScheduleParams":
        cores = int(target.attrs.get("num-cores", 1) or 1)
        return cls(lanes=simd_lanes(target), cores=cores, registers=simd_registers(target))


def _cpu_features(target: tvm.target.Target) -> set[str]:
    """The CPU features LLVM reports for the target (none for a non-LLVM target)."""
    return set(codegen.llvm_get_cpu_features(target)) if target.kind.name == "llvm" else set()


def simd_lanes(target: tvm.target.Target) -> int:
    """float32 lanes of the target's vector registers, from the CPU features LLVM reports
    for it: 16 with AVX-512, 8 with AVX/AVX2, else 4 (SSE, NEON).

    Not `codegen.llvm_get_vector_width`: it answers 512 bits for every x86 -mcpu, Zen 1
    (AVX2) included, which made every tile twice the register width: LLVM split each
    vector in two and the 12-accumulator tiles spilled AVX2's 16 registers."""
    features = _cpu_features(target)
    if "avx512f" in features:
        return 16
    if "avx" in features:
        return 8
    return 4


def simd_registers(target: tvm.target.Target) -> int:
    """SIMD registers of the target's ISA: 32 with AVX-512 or on AArch64, else 16 (x86
    AVX2/SSE): what a register tile, its weight vectors and its input must fit in."""
    features = _cpu_features(target)
    if "avx512f" in features or "neon" in features or str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return 32
    return 16


#: PrimFunc attribute naming the weight parameters a schedule repacked into channel
#: panels ({parameter index: channels per panel}); the caller passes them packed
#: (`pack_weights`).
PACKED_WEIGHTS_ATTR = "pipeline.packed_weights"


def schedule_primfunc(func: tvm.tirx.PrimFunc, params: ScheduleParams,
                      pack_weights: bool = False) -> tvm.tirx.PrimFunc | None:
    """The library schedule of one fused kernel, or None when no schedule here fits it.

    `pack_weights`: the schedule may read a constant weight parameter in panel layout
    (see `_pack_weight_panels`); the returned function then names it in
    `PACKED_WEIGHTS_ATTR`, and its callers must pass `pack_weights(weight, panel)`."""
    sch = Schedule(tvm.IRModule({"main": func}))
    packed: dict[int, int] = {}
    scheduled, prefetch = _apply(sch, params, packed if pack_weights else None)
    if not scheduled:
        return None
    scheduled = sch.mod["main"]
    if prefetch is not None:
        scheduled = insert_prefetch(scheduled, prefetch)
    return scheduled.with_attr(PACKED_WEIGHTS_ATTR, packed) if packed else scheduled


def pack_weights(weight: np.ndarray, panel: int) -> np.ndarray:
    """`weight` (..., C) as C / panel contiguous panels (C / panel, ..., panel): the layout
    a packed kernel reads (`_pack_weight_panels`)."""
    *lead, channels = weight.shape
    panels = weight.reshape(*lead, channels // panel, panel)
    return np.ascontiguousarray(np.moveaxis(panels, -2, 0))


def schedule_trace(func: tvm.tirx.PrimFunc, params: ScheduleParams) -> tvm.s_tir.Trace | None:
    """The library schedule as a replayable trace (to seed a MetaSchedule database)."""
    sch = Schedule(tvm.IRModule({"main": func}))
    scheduled, _ = _apply(sch, params)
    return sch.trace if scheduled else None


def _apply(sch: Schedule, params: ScheduleParams, packed: dict[int, int] | None = None
           ) -> tuple[bool, PanelPrefetch | None]:
    """Schedule `sch`'s kernel; `packed`, when given, receives the weight parameters the
    schedule repacked (and allows it to). Returns whether a schedule fitted, and the
    weight prefetch the scheduled function should get (`prefetch.insert_prefetch`)."""
    prefetch = None
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if _is_reduction(sch, b)]
        if len(reductions) > 1:
            roles = _block_roles(sch, reductions)
            if roles is None:
                return False, None
            _schedule_fused_block(sch, *roles, params, packed)
        elif reductions:
            prefetch = _schedule_reduction(sch, reductions[0], params, packed)
        else:
            _schedule_injective(sch, blocks, params)
    except tvm.s_tir.ScheduleError as err:
        log.debug("no library schedule: %s", err)
        return False, None
    return True, prefetch


def _is_reduction(sch: Schedule, block) -> bool:
    return any(int(iv.iter_type) == _REDUCE for iv in sch.get(block).iter_vars)


def _inline_all_but(sch: Schedule, blocks: list, keep: list) -> list:
    """Inline every block not in `keep` (producers forward, consumers backward).

    Returns the blocks that could not be inlined (they stay as separate loop nests)."""
    left = []
    for block in blocks:
        if any(_same(sch, block, k) for k in keep):
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
    """Fallback channels per tile when `channels` is no multiple of the SIMD width: the
    largest power of two dividing it (a partial vector beats a scalar loop)."""
    tile = 1
    while tile < lanes and channels % (tile * 2) == 0:
        tile *= 2
    return tile


def register_tile(width: int, channels: int, lanes: int, registers: int = 32, broadcast: bool = True,
                  taps: int = 1, stride: int = 1) -> tuple[int, int]:
    """(positions, channels) of the accumulator tile: as many accumulator vectors as fit
    (FMA latency x pipes needs ~8 independent ones), positions dividing `width` (but see
    `PREDICATED_TILE`) and channels a few vectors (`TILE_VECTORS`) dividing `channels`;
    among equals, the tile that loads fewest vectors per multiply-add step (positions +
    vectors). A 7-wide map thus gets 7 x 1 vector rather than 1 x 2 (2 accumulators, a
    quarter of the FMA rate). More than 4 vectors per position was measured slower: each
    reduction step then streams a weight panel wider than L1 for a single position.

    The tile, its weight vectors and the input register must fit in the ISA's `registers`:
    on AVX2's 16 the 3 positions x 4 vectors this rule chose before (12 + 4 + 1 registers)
    spilled, and 6 x 2 (the sgemm micro-kernel's shape) ran 1.3-2.1x faster on Zen 3 for
    1x1 convolutions of 64-1152 output channels. `broadcast`: the input of one position
    is one broadcast register for every vector (a reduction over input channels); else
    each multiply-add loads its own input vector (depthwise, pooling: `taps` is the
    window's size, `stride` the step between positions)."""
    max_positions = MAX_ACCUMULATORS if registers > 16 else MAX_POSITIONS_16_REGISTERS
    if channels % lanes:
        return _divisor_at_most(width, max_positions), _channel_tile(channels, lanes)
    if not broadcast and registers <= 16:
        return _load_bound_tile(width, channels, lanes, max_positions, taps, stride)
    if broadcast and registers > 16 and lanes == 16 and WIDE_TILES:  # measured on AVX-512 only
        tile = _wide_register_tile(width, channels, lanes)
        if tile is not None:
            return tile
    best = (0, 0, 0, 0)
    for vectors in TILE_VECTORS[16 if registers <= 16 else 32]:
        if channels % (vectors * lanes):
            continue
        fits = (registers - 2 - vectors) // vectors  # accumulators + weights + input + one spare
        positions = _divisor_at_most(width, min(MAX_ACCUMULATORS // vectors, max_positions, fits))
        score = (positions * vectors, -(positions + vectors))
        if score > best[:2]:
            best = (*score, positions, vectors * lanes)
    positions, vectors = PREDICATED_TILE
    if (registers <= 16 and best[0] < positions * vectors and channels % (vectors * lanes) == 0
            and math.ceil(width / positions) * positions <= (1 + PREDICATED_MAX_WASTE) * width):
        return positions, vectors * lanes
    return best[2], best[3]


def _wide_register_tile(width: int, channels: int, lanes: int) -> tuple[int, int] | None:
    """The broadcast tile on a 32-register ISA: 2 or 3 vectors per position and up to
    `WIDE_MAX_ACCUMULATORS` accumulators, positions dividing `width` or predicated, scored
    by accumulators per useful position (a predicated tile's waste counts against it).

    Measured on an AVX-512 Xeon (2 cores), every 1x1 convolution of A0, A6 and a 224 px
    subnet timed alone under every tile of 6-28 accumulators: the general rule (up to 12
    accumulators in 1, 2 or 4 vectors, fewest loads first) chose 3 x 4 or 9 x 1 where
    7 x 2, 9 x 2, 5 x 3 or a predicated 12 x 2 ran 1.1-1.24x faster (9 x 9 and 18 x 18
    maps above all). Whole nets, interleaved A/B: A0 -3 %, A6 -7 %, two random subnets -9
    and -7 %; a cap of 18 or 24 accumulators instead of 14 ran them 3-5 % slower.
    None when neither vector count divides the channels (the general rule then holds)."""
    best = None
    for vectors in WIDE_TILE_VECTORS:
        if channels % (vectors * lanes):
            continue
        for positions in range(WIDE_MAX_ACCUMULATORS // vectors, 0, -1):
            waste = math.ceil(width / positions) * positions / width - 1
            if waste <= PREDICATED_MAX_WASTE:
                score = positions * vectors / (1 + waste)
                if best is None or score > best[0]:
                    best = (score, positions, vectors * lanes)
    return None if best is None else best[1:]


def _load_bound_tile(width: int, channels: int, lanes: int, max_positions: int, taps: int, stride: int
                     ) -> tuple[int, int]:
    """The tile of a depthwise convolution or a pooling on a 16-register ISA. Each
    multiply-add loads its own input vector, and a tap's weight vector is shared by the
    tile's positions, so loads per multiply-add fall with positions and not with vectors:
    as many positions (one vector each) as divide the width, more vectors only to reach
    `MIN_LOAD_BOUND_ACCUMULATORS`. Measured on Zen 3 against the broadcast rule's tiles
    (interleaved): 1152 channels at 6x6, 6 x 1 vs 3 x 4: 1.5x; 1296 at 7x7, 7 x 1 vs 1 x 3:
    1.33x; 240 at 24x24 5x5, 8 x 1 vs 6 x 2: 1.13x.

    Two exceptions, also measured there: a 3x3 window at stride 1 takes 4 positions x 2
    vectors (each position's input a whole 64-byte line): 1.29x over 8-9 x 1 at 64x64 and
    72x72 maps, within 3 % of the best elsewhere; at stride 2 (inputs two positions apart)
    2 positions x 4 vectors: 2.05x over 8 x 1 at 128 -> 64 px, 1.15x at 112 -> 56. Whole
    nets gained less (interleaved A/B: -1 to -2.5 % on A0, A3, A6 and a 256 px subnet,
    +1.7 % on a 224 px one): in the graph these kernels wait on memory more than alone."""
    if stride == 1 and taps <= 9 and width % 4 == 0 and channels % (2 * lanes) == 0:
        return 4, 2 * lanes
    if stride > 1 and width % 2 == 0 and channels % (4 * lanes) == 0:
        return 2, 4 * lanes
    positions = _divisor_at_most(width, max_positions)
    vectors = 1
    while positions * vectors < MIN_LOAD_BOUND_ACCUMULATORS and vectors < 4 and channels % (2 * vectors * lanes) == 0:
        vectors *= 2
    return positions, vectors * lanes


def _operand(sch: Schedule, main, which: int):
    """The reduction's input (`which` 0) or weights (1; None for a pooling, which reads its
    input only): the last two reads, since a bias that `_fuse_bias` starts the accumulators
    at reads first."""
    reads = sch.get(main).reads
    operands = reads[-2:] if len(reads) >= 2 else reads
    return operands[which] if which < len(operands) else None


def _stride(sch: Schedule, main, width: int) -> int:
    """Step between the input positions of neighbouring outputs: the input's width (NHWC,
    unpadded: padding is inlined) over the output's."""
    source = _operand(sch, main, 0).source.shape
    return max(1, round(int(source[2]) / width)) if len(source) == 4 else 1


def _weights_dominate(sch: Schedule, main) -> bool:
    """True when the weight operand is larger than the activation operand (late, narrow
    stages: 7x7 maps, 1000+ channels): then each channel tile's weight panel is loaded
    once and reused over every position, instead of streaming all weights per position."""
    if _operand(sch, main, 1) is None:
        return False
    activations, weights = (math.prod(int(d) for d in _operand(sch, main, i).source.shape) for i in (0, 1))
    return weights > activations


def _pointwise_stride_1(sch: Schedule, main, s_ext: list[int], r_ext: list[int]) -> bool:
    """A 1x1 convolution at stride 1 over an NHWC map: output position p reads input
    position p, so the map is a (H*W, K) x (K, C) matrix product and a register tile may
    take positions across rows."""
    if len(s_ext) != 4 or len(r_ext) != 3 or r_ext[:2] != [1, 1] or s_ext[1] * s_ext[2] == 1:
        return False
    source = [int(d) for d in _operand(sch, main, 0).source.shape]
    return source[:3] == s_ext[:3]


def _flatten_positions(sch: Schedule, main, output, s_ext: list[int]) -> tuple[list, list, list[int]]:
    """One position axis (H*W) for a pointwise kernel, its accumulator buffer laid out
    (N, H*W, C) and its epilogue iterating the same way, so the epilogue still computes
    exactly the register tile it follows. Returns the new spatial and reduction loops and
    spatial extents.

    The tile's positions then need to divide H*W, not the map's width: a 14-wide map
    allowed 2 positions x 4 vectors, 196 positions allow 4 x 2; measured on a 96 -> 576
    channel 1x1 at 14 x 14, one core of this Zen 3: 647 -> 310 us."""
    width = s_ext[2]
    sch.transform_layout(main, ("write", 0), lambda n, h, w, c: (n, h * width + w, c))
    sch.transform_block_layout(main, lambda n, h, w, c, ry, rx, rc: (n, h * width + w, c, ry, rx, rc))
    sch.transform_block_layout(output, lambda n, h, w, c: (n, h * width + w, c))
    loops = sch.get_loops(main)
    return loops[:3], loops[3:], [s_ext[0], s_ext[1] * s_ext[2], s_ext[3]]


def _pack_weight_panels(sch: Schedule, main, panel: int, packed: dict[int, int]) -> int | None:
    """Read the weights (HWIO, a parameter) as contiguous panels of `panel` output channels,
    (C / panel, H, W, I, panel), the layout onnxruntime's MLAS prepacks its GEMM weights in.
    A register tile's weight vectors for successive reduction steps then lie next to each
    other in memory: one sequential stream the prefetcher follows, instead of one short
    row every C floats (a 1296 -> 216 projection reads 96 of every 864 bytes).
    Returns the packed parameter's index, None when the weights stay as they are."""
    func = sch.mod["main"]
    reads = sch.get(main).reads
    weight = reads[-1].source
    index = next((i for i, p in enumerate(func.params) if p.same_as(weight)), None)
    channels = int(weight.shape[-1])
    if index is None or len(weight.shape) != 4 or channels % panel or channels == panel:
        return None
    sch.transform_layout(main, ("read", len(reads) - 1), lambda h, w, i, o: (o // panel, h, w, i, o % panel))
    packed[index] = panel
    return index


def _schedule_split_gemv(sch: Schedule, main, output, spatial: list, reduce: list, c_tile: int, lanes: int,
                         cores: int) -> None:
    """A matrix-vector kernel (SE convolutions, classifier) on `cores` cores: each core
    streams its own contiguous share of the weight rows (the reduction axis) into partial
    sums (`rfactor`), which a last pass adds. Splitting the outputs instead made every
    core read a part of every row, and one core ran 2-4 % slower than unsplit."""
    sch.split(reduce[-1], [cores, None, GEMV_ROWS])
    partial = sch.rfactor(sch.get_loops(main)[len(spatial) + len(reduce) - 1], factor_axis=0)
    loops = sch.get_loops(partial)  # the loops are new: spatial, then reduction (the split last)
    spatial, (*windows, k_cores, k_outer, k_rows) = loops[:len(spatial)], loops[len(spatial):]
    c_outer, c_vectors, c_inner = sch.split(spatial[-1], [None, c_tile // lanes, lanes])
    sch.reorder(k_cores, *windows, k_outer, *spatial[:-1], c_outer, k_rows, c_vectors, c_inner)
    for loop in (*windows, k_rows, c_vectors):
        sch.unroll(loop)
    sch.vectorize(c_inner)
    sch.parallel(k_cores)
    sch.decompose_reduction(partial, windows[0] if windows else k_outer)
    *sums, parts = sch.get_loops(main)  # the pass adding the partial sums: channels innermost
    sch.reorder(parts, sums[-1])
    _, vector = sch.split(sums[-1], [None, lanes])
    sch.vectorize(vector)
    if output is not None:
        out = sch.get_loops(output)
        _, vector = sch.split(sch.fuse(*out) if len(out) > 1 else out[0], [None, lanes])
        sch.vectorize(vector)


def _fuse_bias(sch: Schedule, main) -> None:
    """Start the reduction's accumulators at the bias (`fuse_reduction_epilogue`) when the
    kernel adds one right after it, instead of adding it to every output vector later.
    Not for a matrix-vector kernel: `rfactor` (`_schedule_split_gemv`) needs accumulators
    that start at zero, and a memory-bound kernel has no vector op to save."""
    spatial = [int(iv.dom.extent) for iv in sch.get(main).iter_vars if int(iv.iter_type) != _REDUCE]
    consumers = sch.get_consumers(main)
    if FUSE_BIAS and len(consumers) == 1 and math.prod(spatial[:-1]) > 1:
        try:
            sch.fuse_reduction_epilogue(main, consumers[0])
        except tvm.s_tir.ScheduleError:
            pass


def _schedule_reduction(sch: Schedule, main, params: ScheduleParams,
                        packed: dict[int, int] | None = None) -> PanelPrefetch | None:
    """Schedule a reduction kernel (see the module docstring); returns the weight prefetch
    its scheduled function should get, if any."""
    _fuse_bias(sch, main)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
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

    if output is not None and _pointwise_stride_1(sch, main, s_ext, r_ext):
        spatial, reduce, s_ext = _flatten_positions(sch, main, output, s_ext)
    broadcast = len(r_ext) in (1, 3) and r_ext[-1] > 1  # reduces over input channels
    width = s_ext[-2] if len(spatial) >= 2 else 1
    w_tile, c_tile = register_tile(width, s_ext[-1], params.lanes, params.registers, broadcast,
                                   taps=math.prod(r_ext[:2]), stride=_stride(sch, main, width))
    gemv = math.prod(s_ext[:-1]) == 1 and bool(reduce)
    if params.tiles is not None and broadcast and not gemv:
        w_tile, c_tile = params.tiles.get(TileShape(tuple(r_ext), width, s_ext[-1]), (w_tile, c_tile))
    lanes = min(c_tile, params.lanes)  # vectors stay one register wide; several are unrolled
    if (gemv and SPLIT_GEMV and params.cores > 1 and math.prod(extents) >= PARALLEL_MIN_WORK
            and r_ext[-1] % (params.cores * GEMV_ROWS) == 0):
        _schedule_split_gemv(sch, main, output, spatial, reduce, c_tile, lanes, params.cores)
        return
    packed_at, panels_first, prefetching, rolled = None, False, False, None
    if packed is not None and broadcast and not gemv:
        packed_at = _pack_weight_panels(sch, main, c_tile, packed)
    c_outer, c_vectors, c_inner = sch.split(spatial[-1], [None, c_tile // lanes, lanes])
    outer = list(spatial[:-1])
    if len(spatial) >= 2:
        w_outer, w_inner = sch.split(spatial[-2], [None, w_tile])
        outer = list(spatial[:-2]) + [w_outer]
        unrolled = [w_inner, c_vectors]
    else:
        unrolled = [c_vectors]
    if gemv:  # SE convs, classifier: stream the cold weight matrix row by row, once
        rows = next(r for r in (GEMV_ROWS, 2, 1) if r_ext[-1] % r == 0)
        k_outer, k_rows = sch.split(reduce[-1], [None, rows])
        reduce, r_ext = reduce[:-1] + [k_outer], r_ext[:-1] + [r_ext[-1] // rows]
        order = [*reduce, *outer, c_outer]
        unrolled = [k_rows, *unrolled]
    else:
        panels_first = _weights_dominate(sch, main)
        prefetching = PREFETCH_PANELS and packed_at is not None and panels_first and r_ext[:-1] == [1, 1]
        if prefetching:  # one line per `every` reduction steps, spread over all tiles
            tiles = math.prod(int(sch.get(loop).extent) for loop in outer)
            every = prefetch_every(r_ext[-1], c_tile, tiles)
            prefetch_loop = reduce[-1]
            if every > 1:  # the prefetch goes in the outer part; the inner part stays rolled
                prefetch_loop, rolled = sch.split(reduce[-1], [None, every])  # (unrolled: 4-9 % slower warm)
                reduce = reduce[:-1] + [prefetch_loop, rolled]
                r_ext = r_ext[:-1] + [r_ext[-1] // every, every]
        outer = [c_outer] + outer if panels_first else outer + [c_outer]
        order = [*outer, *reduce]
    sch.reorder(*order, *unrolled, c_inner)
    for loop, extent in zip(reduce, r_ext):
        if extent <= UNROLL_MAX_EXTENT and loop is not rolled:
            sch.unroll(loop)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(c_inner)

    if output is not None:
        if gemv:
            out_loops = sch.get_loops(output)
            fused = sch.fuse(*out_loops) if len(out_loops) > 1 else out_loops[0]
            sch.vectorize(sch.split(fused, [None, lanes])[1])
        else:
            _epilogue_on_tile(sch, output, outer[-1], len(outer), lanes)
    outer_extents = [int(sch.get(loop).extent) for loop in outer]
    if math.prod(extents) >= PARALLEL_MIN_WORK and params.cores > 1 and not gemv:
        outer = [sch.fuse(*outer)] if len(outer) > 1 else outer
        sch.parallel(outer[0])
    if reduce:  # last: a decomposed update block no longer counts as a reduction
        sch.decompose_reduction(main, reduce[0])
    if prefetching:
        return _next_panel_prefetch(sch, packed_at, outer, outer_extents, prefetch_loop)
    return None


def _epilogue_on_tile(sch: Schedule, output, tile_loop, depth: int, lanes: int) -> None:
    """Compute the epilogue block `output` on each register tile, under `tile_loop` (the
    `depth`-th loop from the root), while the tile is hot: its channels vectorised, its
    other loops unrolled."""
    sch.reverse_compute_at(output, tile_loop, preserve_unit_loops=True)
    *rest, last = sch.get_loops(output)[depth:]
    vec_outer, vec_inner = sch.split(last, [None, lanes])
    sch.vectorize(vec_inner)
    for loop in rest + [vec_outer]:
        sch.unroll(loop)


def _same(sch: Schedule, a, b) -> bool:
    return sch.get_sref(a).same_as(sch.get_sref(b))


def _position(sch: Schedule, blocks: list, block) -> int:
    """Where `block` is among `blocks` (in the root block's order)."""
    return next(i for i, b in enumerate(blocks) if _same(sch, b, block))


def _reduce_extents(sch: Schedule, block) -> list[int]:
    return [int(iv.dom.extent) for iv in sch.get(block).iter_vars if int(iv.iter_type) == _REDUCE]


def _block_roles(sch: Schedule, reductions: list) -> tuple | None:
    """(expansion or None, depthwise, projection) of a kernel `fuse` made of an MBConv
    block's depthwise convolution, the 1x1 projection after it and perhaps the 1x1
    expansion before it: 1x1 convolutions reduce over (1, 1, K), depthwise ones over
    (kh, kw, 1). None for any other kernel of several reductions."""
    def kind(block) -> str | None:
        extents = _reduce_extents(sch, block)
        if len(extents) != 3:
            return None
        if extents[:2] == [1, 1]:
            return "1x1"
        return "depthwise" if extents[2] == 1 else None

    kinds = [kind(b) for b in reductions]
    if kinds == ["depthwise", "1x1"]:
        return None, reductions[0], reductions[1]
    if kinds == ["1x1", "depthwise", "1x1"]:
        return tuple(reductions)
    return None


def _schedule_fused_block(sch: Schedule, expand, depthwise, project, params: ScheduleParams,
                          packed: dict[int, int] | None) -> None:
    """Schedule a kernel `fuse` made of a block's depthwise convolution, its projection
    and perhaps its expansion. The projection is tiled as alone, its output rows in bands;
    per band, the convolutions before it compute just the rows the band reads, each into a
    buffer that stays in cache, just before their reader: the depthwise rows of the band
    (a 1x1 reads only its own position: no row twice), then before them the expansion rows
    their windows read (the rows two bands' windows share, in both). Bias and swish go on
    each convolution's tiles; bands run in parallel on several cores, each with its own
    buffers."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    first = _position(sch, blocks, expand if expand is not None else depthwise)
    _inline_all_but(sch, blocks[:first], [])  # input copies; the depthwise's zero padding
    if expand is not None:  # bias into its accumulators, swish on its tiles, padding in the depthwise
        _fuse_bias(sch, expand)
        (e_act,) = sch.get_producers(depthwise)  # the swish's output, or its zero-padded copy
        if list(sch.get(e_act).writes[0].source.shape) != list(sch.get(expand).writes[0].source.shape):
            (padded, (e_act,)) = (e_act, sch.get_producers(e_act))
            sch.compute_inline(padded)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        _inline_all_but(sch, blocks[_position(sch, blocks, expand) + 1:_position(sch, blocks, e_act)], [])
    _fuse_bias(sch, depthwise)
    (act,) = sch.get_producers(project)  # the depthwise's activated output
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    _inline_all_but(sch, blocks[_position(sch, blocks, depthwise) + 1:_position(sch, blocks, project)], [act])
    _fuse_bias(sch, project)
    output = sch.get_output_blocks(sch.get_sblock("root"))[0]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    _inline_all_but(sch, blocks[_position(sch, blocks, project) + 1:], [output])  # the residual add

    n, rows, cols, channels, *reduce = sch.get_loops(project)
    out_rows, width, depth = (int(sch.get(loop).extent) for loop in (rows, cols, channels))
    k = _reduce_extents(sch, project)[-1]
    w_tile, c_tile = register_tile(width, depth, params.lanes, params.registers)
    lanes = min(c_tile, params.lanes)
    if packed is not None:
        _pack_weight_panels(sch, project, c_tile, packed)
    band_loop, row = sch.split(rows, [None, _band_rows(sch, depthwise, expand is not None, out_rows, width)])
    w_outer, w_inner = sch.split(cols, [None, w_tile])
    c_outer, c_vectors, c_inner = sch.split(channels, [None, c_tile // lanes, lanes])
    tiles = [n, band_loop, row, w_outer, c_outer]
    sch.reorder(*tiles, *reduce, w_inner, c_vectors, c_inner)
    for loop in (*reduce[:2], w_inner, c_vectors):
        sch.unroll(loop)
    sch.vectorize(c_inner)
    _epilogue_on_tile(sch, output, c_outer, len(tiles), lanes)

    sch.compute_at(act, band_loop, preserve_unit_loops=True)
    sch.compute_at(depthwise, band_loop, preserve_unit_loops=True)
    kh, kw, _ = _reduce_extents(sch, depthwise)
    d_width = _band_width(sch, depthwise)
    d_tile = register_tile(d_width, k, params.lanes, params.registers, broadcast=False, taps=kh * kw,
                           stride=_stride(sch, depthwise, d_width))
    window = _tile_in_band(sch, depthwise, act, d_tile, params.lanes)
    if expand is not None:
        sch.compute_at(e_act, band_loop, preserve_unit_loops=True)
        sch.compute_at(expand, band_loop, preserve_unit_loops=True)
        e_width = _band_width(sch, expand)
        e_tile, e_c_tile = register_tile(e_width, k, params.lanes, params.registers)
        e_tile = _divisor_at_most(e_width, e_tile)  # a predicated tile here: 1.7x slower (144 px map, 7 of 144)
        e_reduce = _tile_in_band(sch, expand, e_act, (e_tile, e_c_tile), params.lanes)
    if params.cores > 1 and out_rows * width * depth * k >= PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(n, band_loop))
    if expand is not None:  # last: a decomposed update block no longer counts as a reduction
        sch.decompose_reduction(expand, e_reduce)
    sch.decompose_reduction(depthwise, window)
    sch.decompose_reduction(project, reduce[0])


def _band_width(sch: Schedule, conv) -> int:
    """The columns a convolution computed at a band loop computes: its loops end in
    (rows, columns, channels) and its three reduction loops."""
    return int(sch.get(sch.get_loops(conv)[-5]).extent)


def _tile_in_band(sch: Schedule, conv, act, tile: tuple[int, int], max_lanes: int):
    """Register-tile a convolution computed at a band loop (`_schedule_fused_block`) as
    (positions, channels) `tile`, its swish (`act`) on each tile, its short reduction
    loops (windows, not input channels) unrolled. Returns its outermost reduction loop."""
    rows, cols, channels, *reduce = sch.get_loops(conv)[-6:]
    positions, c_tile = tile
    lanes = min(c_tile, max_lanes)
    outer, inner = sch.split(cols, [None, positions])
    c_outer, c_vectors, c_inner = sch.split(channels, [None, c_tile // lanes, lanes])
    sch.reorder(rows, outer, c_outer, *reduce, inner, c_vectors, c_inner)
    for loop in [r for r in reduce if int(sch.get(r).extent) <= UNROLL_MAX_EXTENT] + [inner, c_vectors]:
        sch.unroll(loop)
    sch.vectorize(c_inner)
    depth = next(i for i, loop in enumerate(sch.get_loops(conv)) if _same(sch, loop, c_outer)) + 1
    _epilogue_on_tile(sch, act, c_outer, depth, lanes)
    return reduce[0]


def _band_rows(sch: Schedule, depthwise, expanded: bool, out_rows: int, width: int) -> int:
    """Output rows per band of a fused block (`_schedule_fused_block`). Over a depthwise
    convolution alone, as many rows as keep a band's depthwise output within
    `DEPTHWISE_BAND_BYTES`, dividing the map. Over a recomputed expansion, up to
    `BAND_ROWS`, fewer when the expansion rows of a band would exceed `BAND_MAX_BYTES`:
    each band recomputes the rows its windows share with the next."""
    if not expanded:
        channels = int(sch.get(sch.get_loops(depthwise)[3]).extent)
        return _divisor_at_most(out_rows, max(1, DEPTHWISE_BAND_BYTES // (width * channels * 4)))
    source = [int(d) for d in _operand(sch, depthwise, 0).source.shape]  # the expansion's output
    kh = _reduce_extents(sch, depthwise)[0]
    stride = _stride(sch, depthwise, width)
    row_bytes = source[2] * source[3] * 4
    return max(r for r in range(1, min(BAND_ROWS, out_rows) + 1)
               if r == 1 or ((r - 1) * stride + kh) * row_bytes <= BAND_MAX_BYTES)


def _next_panel_prefetch(sch: Schedule, weight_index: int, outer: list, outer_extents: list[int],
                         reduction) -> PanelPrefetch:
    """The prefetch plan of a kernel whose outer loops run over weight panels first, then
    position tiles (`outer`, perhaps fused into one parallel loop, over `outer_extents`)."""
    func = sch.mod["main"]
    tiles = math.prod(outer_extents[1:])
    index = sch.get(outer[0]).loop_var
    for loop, extent in zip(outer[1:], outer_extents[1:]):
        index = index * extent + sch.get(loop).loop_var
    return PanelPrefetch(func.params[weight_index], sch.get(reduction).loop_var,
                         index // tiles, index % tiles, int(sch.get(reduction).extent))


def _schedule_injective(sch: Schedule, blocks: list, params: ScheduleParams) -> None:
    """Vectorise along the innermost (channel) axis, fuse the rest.

    Splitting the last axis itself, not the fused index, keeps every load a ramp the
    vectoriser recognises: broadcast operands such as an SE gate (indexed by channel
    only) would otherwise be gathered element by element through div/mod."""
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    left = _inline_all_but(sch, blocks, outputs)
    for block in left + list(outputs):
        loops = sch.get_loops(block)
        innermost = int(sch.get(loops[-1]).extent)
        if innermost < params.lanes and _vectorize_along_input(sch, block, loops, params):
            continue
        lanes = _channel_tile(innermost, params.lanes) if innermost % params.lanes else params.lanes
        if lanes == 1 or len(loops) == 1:
            loops = [sch.fuse(*loops)] if len(loops) > 1 else loops
            lanes = _divisor_at_most(int(sch.get(loops[0]).extent), params.lanes)
        total = math.prod(int(sch.get(loop).extent) for loop in loops)
        outer, inner = sch.split(loops[-1], [None, lanes])
        sch.vectorize(inner)
        rest = sch.fuse(*loops[:-1], outer) if len(loops) > 1 else outer
        if total >= PARALLEL_MIN_WORK and params.cores > 1:
            sch.parallel(rest)


def _vectorize_along_input(sch: Schedule, block, loops: list, params: ScheduleParams) -> bool:
    """Vectorise a transpose whose output's innermost axis is shorter than a vector (the
    network's NCHW input to NHWC: 3 channels) along the axis its input is contiguous in,
    the short axis unrolled inside: contiguous loads, strided stores. Vectorising the
    fused index instead gathered every element: 281 us against 27 us for a 288 px image
    on one AVX-512 core. False when no such axis exists."""
    node = sch.get(block)
    axes = [iv.var for iv in node.iter_vars]
    if len(axes) != len(loops):
        return False
    for region in node.reads:
        index = region.region[-1].min
        axis = next((i for i, v in enumerate(axes[:-1]) if v.same_as(index)), None)
        if axis is not None and int(sch.get(loops[axis]).extent) % params.lanes == 0:
            break
    else:
        return False
    total = math.prod(int(sch.get(lp).extent) for lp in loops)
    outer, inner = sch.split(loops[axis], [None, params.lanes])
    rest = [lp for i, lp in enumerate(loops[:-1]) if i != axis]
    sch.reorder(*rest, outer, loops[-1], inner)
    sch.vectorize(inner)
    sch.unroll(loops[-1])
    fused = sch.fuse(*rest, outer)
    if total >= PARALLEL_MIN_WORK and params.cores > 1:
        sch.parallel(fused)
    return True
