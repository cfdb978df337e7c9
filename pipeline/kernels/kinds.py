"""The layer kind of a fused kernel (stem, pointwise 1x1, depthwise, SE, pool, ...).

Read off the unscheduled channels-last PrimFunc's reduction block: its spatial and
reduction extents say what the layer is. Benchmarks group time by kind (where TVM loses
to onnxruntime), and the cross-device tests check that every kind compiles correctly.
"""
from __future__ import annotations

import math

import tvm
import tvm.tirx
from tvm.s_tir import Schedule

KINDS = ("stem", "pointwise", "depthwise", "depthwise+project", "block", "conv kxk", "SE", "pool", "classifier",
         "elementwise")
_REDUCE = 2  # tvm.tirx.IterVar.CommReduce
#: The kernels `fuse.fuse_convolutions` makes, by the kinds of their reductions in order.
_FUSED = {("depthwise", "pointwise"): "depthwise+project", ("pointwise", "depthwise", "pointwise"): "block"}


def kernel_kind(func: tvm.tirx.PrimFunc) -> tuple[str, float, str]:
    """Layer kind, FLOPs (2 x multiply-adds of the reduction) and loop extents of an
    unscheduled fused NHWC PrimFunc, from its reduction block."""
    sch = Schedule(tvm.IRModule({"main": func}))
    found = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        node = sch.get(block)
        reduce = [int(iv.dom.extent) for iv in node.iter_vars if int(iv.iter_type) == _REDUCE]
        if reduce:
            spatial = [int(iv.dom.extent) for iv in node.iter_vars if int(iv.iter_type) != _REDUCE]
            found.append((_reduction_kind(spatial, reduce, len(node.reads)), 2.0 * math.prod(spatial + reduce),
                          f"{spatial} x {reduce}"))
    if not found:
        return "elementwise", 0.0, ""
    kind = _FUSED.get(tuple(kind for kind, _, _ in found))
    if kind:
        return kind, sum(flops for _, flops, _ in found), " then ".join(e for _, _, e in found)
    return found[0]


def _reduction_kind(spatial: list[int], reduce: list[int], reads: int) -> str:
    if reads == 1:
        return "pool"
    if len(spatial) == 2:
        return "classifier"
    if len(spatial) == 4 and spatial[1] == spatial[2] == 1:
        return "SE"
    if len(reduce) == 2:
        return "depthwise"
    if len(reduce) == 3 and reduce[0] * reduce[1] > 1:  # NHWC conv2d reduces (kh, kw, ci)
        return "depthwise" if reduce[2] == 1 else "stem" if reduce[2] <= 4 else "conv kxk"
    return "pointwise"
