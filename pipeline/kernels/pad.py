"""Channel padding: give every convolution a channel count the SIMD width divides.

A kernel vectorises over channels; 200 channels on AVX-512 (16 lanes) leave only 8-lane
vectors, half the FMA rate, and such layers were 45% of a full-space subnet's time on an
AVX-512 x86-host. The width is the target's (`schedules.simd_lanes`): on AVX2 (8 lanes)
and NEON (4) the AttentiveNAS channel counts, all multiples of 8, need no padding. Padding each such convolution's outputs with zero filters (200 -> 208), and
the next layers' inputs with zero weights, keeps every padded channel exactly zero
through the activations, SE gates, residual adds and pools, so the logits are unchanged.

Applied only to modules whose kernels have no tuned records: a device database was tuned
on the unpadded workloads, and padding would orphan its records.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

#: Pad a channel count only while the padded one is at most this much larger (8 -> 16
#: doubles the work for a 2x faster vector: no gain).
MAX_GROWTH = 1.5
_ELEMENTWISE_BINARY = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide"}


def padded_channels(channels: int, lanes: int) -> int:
    """`channels` rounded up to the SIMD width, or unchanged when that costs too much."""
    rounded = -(-channels // lanes) * lanes
    return rounded if rounded != channels and rounded <= MAX_GROWTH * channels else channels


def static_shape(expr: relax.Expr) -> list[int] | None:
    """The static shape of a Relax tensor expression, None when unknown."""
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None) if isinstance(ty, relax.TensorType) else None
    values = getattr(shape, "values", None)
    return None if values is None else [int(v) for v in values]


def _pad_axis(data: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * data.ndim
    widths[axis] = (0, size - data.shape[axis])
    return np.pad(data, widths)


@relax.expr_functor.mutator
class _ChannelPadder(relax.PyExprMutator):
    """Rewrites NCHW conv2d / binary / flatten / matmul calls for padded channels."""

    def __init__(self, mod: tvm.IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes
        self.padded = 0

    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        # Arguments first: the default rebuild would reject a padded argument (shape check).
        name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        handler = {"relax.nn.conv2d": self._conv2d, "relax.reshape": self._flatten,
                   "relax.matmul": self._matmul}.get(name)
        if handler is None and name not in _ELEMENTWISE_BINARY:
            return super().visit_call_(call)
        args = [self.visit_expr(a) for a in call.args]
        if handler is None:
            return self._binary(call, args)
        return handler(call, args)

    def _conv2d(self, call: relax.Call, args: list[relax.Expr]) -> relax.Expr:
        x, weight = args
        attrs = call.attrs
        data, shape = self._constant(weight), static_shape(x)
        if (data is None or shape is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                or attrs.out_layout != "NCHW"):
            return relax.Call(call.op, args, attrs)
        channels_in, groups = shape[1], int(attrs.groups)
        if groups == 1:
            data = _pad_axis(data, 1, channels_in)
            data = _pad_axis(data, 0, padded_channels(data.shape[0], self.lanes))
        elif groups == data.shape[0] and data.shape[1] == 1:  # depthwise: follows its input
            data, groups = _pad_axis(data, 0, channels_in), channels_in
        else:
            return relax.Call(call.op, args, attrs)
        if list(data.shape) == static_shape(weight) and groups == int(attrs.groups):
            return relax.Call(call.op, args, attrs)
        self.padded += 1
        return relax.op.nn.conv2d(x, relax.const(data, str(data.dtype)), attrs.strides, attrs.padding,
                                  attrs.dilation, groups, "NCHW", "OIHW", "NCHW", attrs.out_dtype or None)

    def _binary(self, call: relax.Call, args: list[relax.Expr]) -> relax.Expr:
        """A per-channel constant (bias, scale) beside a padded tensor gets zero entries; a
        computed tensor that was never padded (a function input: a block measured alone,
        whose residual adds its input) gets zero channels appended, as in the whole network."""
        shapes = [static_shape(a) for a in args]
        if any(s is None or len(s) != 4 for s in shapes) or shapes[0][1] == shapes[1][1]:
            return relax.Call(call.op, args, call.attrs)
        wide = max(s[1] for s in shapes)
        out = []
        for arg, shape in zip(args, shapes):
            data = self._constant(arg)
            if shape[1] not in (wide, 1):
                if data is None:
                    arg = relax.op.nn.pad(arg, [0, 0, 0, wide - shape[1], 0, 0, 0, 0])
                else:
                    arg = relax.const(_pad_axis(data, 1, wide), str(data.dtype))
            out.append(arg)
        return relax.Call(call.op, out, call.attrs)

    def _flatten(self, call: relax.Call, args: list[relax.Expr]) -> relax.Expr:
        """[1, C', 1, 1] -> [1, C] becomes [1, C'] (the classifier's input)."""
        before, after = static_shape(call.args[0]), static_shape(args[0])
        target = [int(v) for v in args[1].values] if isinstance(args[1], relax.ShapeExpr) else None
        if before is None or after is None or before == after or target is None or len(target) != 2:
            return relax.Call(call.op, args, call.attrs)
        return relax.op.reshape(args[0], [target[0], after[1]])

    def _matmul(self, call: relax.Call, args: list[relax.Expr]) -> relax.Expr:
        x, weight = args
        data, shape = self._constant(weight), static_shape(x)
        if data is None or shape is None or len(shape) != 2 or data.shape[0] == shape[1]:
            return relax.Call(call.op, args, call.attrs)
        return relax.op.matmul(x, relax.const(_pad_axis(data, 0, shape[1]), str(data.dtype)))


def pad_channels(mod: tvm.IRModule, lanes: int) -> tuple[tvm.IRModule, int]:
    """`mod` (NCHW Relax, constant weights folded) with convolutions padded to `lanes`;
    returns the module and how many convolutions changed."""
    padder = _ChannelPadder(mod, lanes)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            padder.builder_.update_func(gv, padder.visit_expr(func))
    return padder.builder_.get(), padder.padded
