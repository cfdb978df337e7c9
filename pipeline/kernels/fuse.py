"""One kernel for the convolutions of an MBConv block, where the maps between them are big.

FuseOps never puts two reductions in one kernel, so each convolution of a block writes
its whole map to memory and the next reads it back. Early in a net those maps are
megabytes (a 288 px net's 72 x 72 blocks pass 72 x 72 x 96 floats, 2 MB, from the
depthwise convolution to the projection, with 2 MB of L2 per core): in the graph their
lines come back from L3 or DRAM. `fuse_convolutions` groups such convolutions
(`FuseOpsByPattern`, before legalization); FuseTIR then makes one PrimFunc of each group,
and `schedules._schedule_fused_block` runs the projection in bands of rows, each band's
inputs computed just before it into buffers that stay in cache.

Depthwise + projection (`FUSE_DEPTHWISE_PROJECT`, on): a depthwise convolution (+ bias,
swish) that only its block's 1x1 projection (+ bias, residual add) reads, when its output
map is `DEPTHWISE_PROJECT_MIN_MAP_BYTES` or more; SE blocks keep theirs apart (the SE
pool reads it too). A 1x1 projection reads only its own position, so no row is computed
twice. In A6's graph (one AVX-512 core, `bench/layers.py`) the 144 x 144 block took
220 us against 374 for the pair, the 72 x 72 stride-1 blocks 400 against 562, the
stride-2 one 487 against 565.

Whole blocks (`FUSE_BLOCKS`, on): the expansion (+ bias, swish) before such a pair too,
at a depthwise stride of `STRIDES`, when the expanded map is `MIN_MAP_BYTES` or more: the
largest maps of a net (a 288 px net's first expansion writes 144 x 144 x 64 floats,
5.3 MB), which the stride-2 depthwise read back from L3 at 2x its time alone (A3: 145 us
alone, 284 in the graph). Each band computes the expansion rows its windows read, its
swish on the expansion's register tiles; the rows two bands' windows share (1 in 2R + 1
at stride 2, 3x3) are computed in both. In the graph (`bench/layers.py`, one core) A6's
first block took 918 us against 1091 for the expansion and the fused pair after it
(975 with the swish in a pass of its own over each band's padded rows), A3's 593 us.
"""
from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard

from pipeline.kernels.pad import static_shape

#: Fuse whole blocks (expansion, depthwise, projection). Interleaved whole-net A/B against
#: the fused pairs alone (one AVX-512 core, 8 rounds, three runs): A0 -1.5 to -4 %, A3
#: -1.5 to -3 %, A6 0 to -1 %, three random subnets -1 to +1 %; two threads -2 to +1.5 %.
#: When the swish went in a separate pass over each band's padded rows instead of on the
#: expansion's tiles, whole nets moved by -2 to +3 %.
FUSE_BLOCKS = True
#: Depthwise strides of fused blocks: at stride 1 each band recomputes 2 of every
#: `BAND_ROWS` + 2 expansion rows, and 56 x 56 x 32 -> 96 blocks (224 px) ran 369 us in the
#: graph fused against 336 us apart.
STRIDES = (2,)
#: Smallest expanded map (bytes) of a fused block: half the L2 of the CPUs measured; below
#: it the map stays in L2 between two kernels anyway. 3 MB: as 1 MB (within 1 %).
MIN_MAP_BYTES = 1 << 20
BLOCK = "block"
#: Group depthwise + projection pairs. Interleaved whole-net A/B against the pair of
#: library kernels (one AVX-512 core, 7 rounds, three runs): A6 -2 to -3 %, a 256 px
#: subnet -2 %, A3 and a 224 px subnet 0 to -1 %, A0 -2 to +3 % (its maps mostly fit
#: L2 anyway).
FUSE_DEPTHWISE_PROJECT = True
#: Smallest depthwise output (bytes) fused with its projection. 256 KB instead: within
#: the noise (-1 to +2 %).
DEPTHWISE_PROJECT_MIN_MAP_BYTES = 1 << 20
DEPTHWISE_PROJECT = "depthwise_project"


def _swish(x: DFPattern) -> DFPattern:
    return is_op("relax.multiply")(x, is_op("relax.sigmoid")(x))


def _conv_act(x: DFPattern) -> tuple[DFPattern, DFPattern]:
    """(the convolution, its output + bias + swish) of a constant-weight convolution of `x`."""
    conv = is_op("relax.nn.conv2d")(x, is_const())
    return conv, _swish(is_op("relax.add")(conv, is_const()))


def _depthwise_project(x: DFPattern) -> tuple[DFPattern, DFPattern, DFPattern]:
    """(depthwise, projection, root) of a depthwise convolution of `x` + bias + swish, the
    1x1 projection + bias after it, and the block's residual add (every block of these
    spaces has one: identity or shortcut), the root."""
    depthwise, activated = _conv_act(x)
    project = is_op("relax.nn.conv2d")(activated, is_const())
    return depthwise, project, is_op("relax.add")(is_op("relax.add")(project, is_const()), wildcard())


def _block_pattern() -> relax.transform.FusionPattern:
    """An expansion + bias + swish, then a depthwise + projection pair."""
    expand, expanded = _conv_act(wildcard())
    depthwise, project, root = _depthwise_project(expanded)
    return relax.transform.FusionPattern(BLOCK, root, {"expand": expand, "depthwise": depthwise, "project": project},
                                         _fuses_block)


def _pointwise(conv: relax.Call) -> bool:
    """A 1x1 stride-1 dense convolution, channels last."""
    a = conv.attrs
    return (a.data_layout == "NHWC" and a.groups == 1 and list(conv.args[1].value.shape[:2]) == [1, 1]
            and all(int(s) == 1 for s in (*a.strides, *a.dilation)))


def _depthwise_stride(conv: relax.Call, channels: int) -> int | None:
    """The stride of a channels-last depthwise convolution over `channels` channels (the
    same along both axes, no dilation), None for any other convolution."""
    b = conv.attrs
    strides = {int(s) for s in b.strides}
    if b.data_layout != "NHWC" or b.groups != channels or any(int(d) != 1 for d in b.dilation) or len(strides) != 1:
        return None
    return strides.pop()


def _private(ctx: relax.transform.PatternCheckContext) -> bool:
    """Nothing outside the matched group reads a value the group computes, but its output."""
    output = ctx.value_to_bound_var[ctx.matched_expr]
    inside = set(ctx.matched_bindings.keys())
    return all(user in inside for var in inside if not var.same_as(output) for user in ctx.var_usages.get(var, []))


def _fuses_block(ctx: relax.transform.PatternCheckContext) -> bool:
    """A 1x1 stride-1 expansion feeding a depthwise convolution at a stride of `STRIDES`
    whose only reader is its 1x1 projection (NHWC), nothing outside reading what passes
    between them, and an expanded map of `MIN_MAP_BYTES` or more."""
    expand, depthwise = ctx.annotated_expr["expand"], ctx.annotated_expr["depthwise"]
    shape = static_shape(expand)
    if not _pointwise(expand) or shape is None or _depthwise_stride(depthwise, shape[-1]) not in STRIDES:
        return False
    return _pointwise(ctx.annotated_expr["project"]) and math.prod(shape) * 4 >= MIN_MAP_BYTES and _private(ctx)


def _depthwise_project_pattern() -> relax.transform.FusionPattern:
    depthwise, project, root = _depthwise_project(wildcard())
    return relax.transform.FusionPattern(DEPTHWISE_PROJECT, root, {"depthwise": depthwise, "project": project},
                                         _projects_depthwise)


def _projects_depthwise(ctx: relax.transform.PatternCheckContext) -> bool:
    """A depthwise convolution (+ bias, swish) read only by a 1x1 projection, channels
    last, its output map `DEPTHWISE_PROJECT_MIN_MAP_BYTES` or more."""
    depthwise, project = ctx.annotated_expr["depthwise"], ctx.annotated_expr["project"]
    shape = static_shape(depthwise)
    if shape is None or not _pointwise(project) or _depthwise_stride(depthwise, shape[-1]) is None:
        return False
    return math.prod(shape) * 4 >= DEPTHWISE_PROJECT_MIN_MAP_BYTES and _private(ctx)


@tvm.transform.module_pass(opt_level=0, name="FuseConvolutions")
def fuse_convolutions(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Group the convolutions of every fusable block of `mod` (channels-last, not yet
    legalized) into one primitive function each: whole blocks first, then depthwise +
    projection pairs, each where switched on."""
    patterns = ([_block_pattern()] if FUSE_BLOCKS else []) + (
        [_depthwise_project_pattern()] if FUSE_DEPTHWISE_PROJECT else [])
    if not patterns:
        return mod
    return relax.transform.FuseOpsByPattern(patterns, bind_constants=False)(mod)
