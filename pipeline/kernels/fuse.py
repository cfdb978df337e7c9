"""One kernel for an MBConv block's expansion and the depthwise convolution after it.

FuseOps never puts two reductions in one kernel, so a block's 1x1 expansion (+ bias,
swish) writes its whole map to memory and the depthwise convolution (+ bias, swish) reads
it back. Early in a net that map is megabytes (a 288 px net's first expansion writes 144 x
144 x 64 floats, 5.3 MB, with 2 MB of L2 per core): in the graph its lines come back
from L3 or DRAM on both sides, and the stride-2 depthwise, which reads four inputs per
output, waits on memory more than it computes.

`expand_depthwise` groups the pair (`FuseOpsByPattern`, before legalization) when the map
between them is at least `MIN_MAP_BYTES`; FuseTIR then makes one PrimFunc of both, and
`schedules._schedule_expand_depthwise` computes the expansion band by band into a buffer
that stays in L2, each band just before the depthwise rows that read it.

Measured on one AVX-512 core (interleaved; "cold": a 64 MB sweep before every call).
Alone, the pair of library kernels against the fused kernel: 112 x 112 x 16 -> 64 ->
56 x 56 739 -> 585 us warm, 1002 -> 723 us cold; 144 x 144 x 16 -> 64 -> 72 x 72 1008 ->
899 / 1359 -> 1144 us. In the graph (`bench/layers.py`): A3's first pair 677 -> 527 us,
A6's 1050 -> 946 us, but A6's second (72 x 72 x 32 -> 144, stride 2) 623 -> 687 us and
stride-1 pairs (56 x 56 x 32 -> 96) 336 -> 369 us: each band recomputes the expansion
rows its window shares with the next. Hence `FUSE_EXPAND_DEPTHWISE` (off) and `STRIDES`.
"""
from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard

from pipeline.kernels.pad import static_shape

#: Group expansion + depthwise pairs (`expand_depthwise`). Off: the fused kernel gains
#: 100-150 us on a net's first (largest) pair in the graph and loses 60 us on the next
#: (its recomputed halo rows), and whole nets (A0, A3, A6, two random subnets; four
#: interleaved A/B runs, `bench/ab.py --variant on '{"fuse.FUSE_EXPAND_DEPTHWISE": true}'`)
#: moved by -2 to +4 %: no reliable gain yet. Kept for that A/B and for what it needs next:
#: a rolling band that recomputes no rows, written out (TVM's `rolling_buffer` predicates
#: every element of the expansion tile: 1.5-1.9x slower, README).
FUSE_EXPAND_DEPTHWISE = False
#: Depthwise strides fused: at stride 1 each band recomputes 2 of every `BAND_ROWS` + 2
#: expansion rows, and 56 x 56 x 32 -> 96 blocks (224 px) ran 369 us in the graph fused
#: against 336 us for the pair.
STRIDES = (2,)
#: Smallest map between the two convolutions (bytes) for which they are fused: half the
#: L2 of the CPUs measured; below it the map stays in L2 between two kernels anyway.
MIN_MAP_BYTES = 1 << 20
PATTERN_NAME = "expand_depthwise"


def _swish(x: DFPattern) -> DFPattern:
    return is_op("relax.multiply")(x, is_op("relax.sigmoid")(x))


def _pattern() -> relax.transform.FusionPattern:
    expand = is_op("relax.nn.conv2d")(wildcard(), is_const())
    depthwise = is_op("relax.nn.conv2d")(_swish(is_op("relax.add")(expand, is_const())), is_const())
    root = _swish(is_op("relax.add")(depthwise, is_const()))
    return relax.transform.FusionPattern(PATTERN_NAME, root, {"expand": expand, "depthwise": depthwise}, _fusable)


def _fusable(ctx: relax.transform.PatternCheckContext) -> bool:
    """A 1x1 stride-1 expansion feeding a depthwise convolution (NHWC), nothing else
    reading what passes between them, and a map between them of `MIN_MAP_BYTES` or more."""
    expand, depthwise = ctx.annotated_expr["expand"], ctx.annotated_expr["depthwise"]
    a, b = expand.attrs, depthwise.attrs
    if a.data_layout != "NHWC" or b.data_layout != "NHWC" or a.groups != 1:
        return False
    if list(expand.args[1].value.shape[:2]) != [1, 1] or any(int(s) != 1 for s in (*a.strides, *a.dilation)):
        return False
    shape = static_shape(expand)
    strides = {int(s) for s in b.strides}
    if shape is None or b.groups != shape[-1] or any(int(d) != 1 for d in b.dilation) or len(strides) != 1:
        return False
    if strides.pop() not in STRIDES or math.prod(shape) * 4 < MIN_MAP_BYTES:
        return False
    output = ctx.value_to_bound_var[ctx.matched_expr]
    inside = set(ctx.matched_bindings.keys())
    return all(user in inside for var in inside if not var.same_as(output) for user in ctx.var_usages.get(var, []))


@tvm.transform.module_pass(opt_level=0, name="FuseExpandDepthwise")
def expand_depthwise(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Group every fusable expansion + depthwise pair of `mod` (channels-last, not yet
    legalized) into one primitive function; a no-op when `FUSE_EXPAND_DEPTHWISE` is off."""
    if not FUSE_EXPAND_DEPTHWISE:
        return mod
    return relax.transform.FuseOpsByPattern([_pattern()], bind_constants=False)(mod)
