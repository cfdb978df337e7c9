"""The Relax lowering that makes a model's kernels fast on one device.

Convert convolutions to channels-last (NHWC activations, HWIO weights: channels are
contiguous, so every kernel kind vectorises over channels), decompose for inference,
legalize and fuse exactly as task extraction does (so fused PrimFuncs match tuning
records structurally), then give each fused PrimFunc its tuned schedule from the
device's database or, failing that, the hand-written library schedule. What got
neither is reported, so a compile can say that a subnet is (partly) untuned.
"""
from __future__ import annotations

import collections
import functools
import logging
from dataclasses import dataclass, replace

import numpy as np
import tvm
import tvm.tirx
from tvm import relax

from pipeline.kernels.database import database_status, has_database, open_device_database
from pipeline.kernels.fuse import fuse_convolutions
from pipeline.kernels.pad import pad_channels
from pipeline.kernels.schedules import PACKED_WEIGHTS_ATTR, ScheduleParams, pack_weights, schedule_primfunc
from pipeline.kernels.tiles import load_tiles

log = logging.getLogger(__name__)

#: sigmoid(x) ~ 1/2 + x P(x^2) / Q(x^2), lowest degree first: fitted by
#: `scripts/fit_sigmoid.py` on [-17, 17] (minimax; float32 error under 3e-7 over the real
#: line), x clamped to [-16.5, 16.5], where the float32 form reaches exactly 1 (0): a large
#: activation's swish is itself. onnxruntime's MLAS uses degrees 4 and 5 on [-18, 18]
#: (2e-7); two FMAs fewer per vector made whole nets 3-4 % faster (A0, A6; interleaved A/B
#: on Zen 3): every activation of these nets is a swish, and the sigmoid's polynomials
#: were 14 % of A6's time.
_SIGMOID_P = (0.2499997384548152, 0.008042218379208823, 4.5155385191260396e-05, 4.217146552542502e-08)
_SIGMOID_Q = (1.0, 0.11550127837764476, 0.0014726371941144465, 3.5968776418499056e-06, 8.837128726761296e-10)
_SIGMOID_RANGE = 16.5


def _horner(coefficients: tuple[float, ...], s: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    value = tvm.tirx.const(coefficients[-1], "float32")
    for c in reversed(coefficients[:-1]):
        value = value * s + tvm.tirx.const(c, "float32")
    return value


def _fast_sigmoid(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """sigmoid as a clamped rational polynomial: FMAs and one division per vector.

    The default legalization calls `exp`, which LLVM turns into one libm call per lane
    on x86 (swish kernels were 10x slower than the convolutions they follow); TVM's
    `fast_exp` vectorises but, with its range reduction and the division after it, the
    swish epilogue still took 15 cycles per vector on Zen 3, 35-60 % of an expand
    convolution. This form takes about 6 (16->64 channels at 96x96: 956 -> 778 us)."""
    from tvm import te

    def sigmoid(x: te.Tensor) -> te.Tensor:
        def value(*i: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
            limit = tvm.tirx.const(_SIGMOID_RANGE, "float32")
            v = tvm.tirx.max(tvm.tirx.min(x(*i), limit), -limit)
            s = v * v
            q = _horner(_SIGMOID_Q, s)
            # (2 v P + Q) / 2Q: the 1/2 in the FMA that adds Q, not an add of its own
            ratio = (v * _horner(tuple(2 * c for c in _SIGMOID_P), s) + q) / (q + q)
            return tvm.tirx.max(ratio, tvm.tirx.const(0.0, "float32"))  # never below 0 (rounding at -16.5)

        return te.compute(x.shape, value, name="sigmoid")

    return bb.call_te(sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")


@relax.expr_functor.mutator
class _ConstantReshaper(relax.PyExprMutator):
    """Folds `permute_dims` / `reshape` of constants with numpy.

    Channels-last conversion transposes every weight and bias; relax's FoldConstant
    would compile one LLVM kernel per such constant (30 s for a demo subnet on this
    machine), numpy does it in milliseconds."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        source = call.args[0] if call.args else None
        if isinstance(source, relax.Var):  # dataflow form: the constant is bound to a var
            source = self.lookup_binding(source)
        if not (isinstance(call.op, tvm.ir.Op) and isinstance(source, tvm.ir.expr.Constant)):
            return call
        data = source.value.numpy()
        if call.op.name == "relax.permute_dims":
            axes = None if call.attrs.axes is None else [int(a) for a in call.attrs.axes]
            return relax.const(np.ascontiguousarray(np.transpose(data, axes)), str(data.dtype))
        if call.op.name == "relax.reshape" and isinstance(call.args[1], relax.ShapeExpr):
            shape = [int(v) for v in call.args[1].values]
            return relax.const(data.reshape(shape), str(data.dtype))
        return call


@tvm.transform.module_pass(opt_level=0, name="FoldConstantLayouts")
def fold_constant_layouts(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Apply `_ConstantReshaper` to every Relax function of `mod`."""
    reshaper = _ConstantReshaper(mod)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            reshaper.builder_.update_func(gv, reshaper.visit_expr(func))
    return reshaper.builder_.get()


#: Let library schedules read constant weights prepacked (`schedules.pack_weights`).
PACK_WEIGHTS = True
#: What a kernel's name gets when it reads packed weights (its signature changes).
PACKED_SUFFIX = "_packed"


@relax.expr_functor.mutator
class _WeightPacker(relax.PyExprMutator):
    """Calls the kernels whose schedules read packed weights, with packed constants.

    `packed` maps a kernel's name to its scheduled PrimFunc, whose `PACKED_WEIGHTS_ATTR`
    says which arguments are packed and how. A kernel's signature changes with its
    weights' layout, so it is added under a new global (a global's type is fixed when it
    is made) and its calls are redirected there, each packed constant replaced by its
    packed copy: numpy at compile time, so the artifact stores packed weights and
    nothing repacks at run time."""

    def __init__(self, mod: tvm.IRModule, packed: dict[str, tvm.tirx.PrimFunc]) -> None:
        super().__init__(mod)
        self.kernels = {name: (self.builder_.add_func(func, name + PACKED_SUFFIX),
                               {int(k): int(v) for k, v in func.attrs[PACKED_WEIGHTS_ATTR].items()})
                        for name, func in packed.items()}

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (call.op == tvm.ir.Op.get("relax.call_tir") and call.args[0].name_hint in self.kernels):
            return call
        kernel, panels = self.kernels[call.args[0].name_hint]
        args = list(call.args[1].fields)
        for index, panel in panels.items():
            data = args[index].value.numpy()
            args[index] = relax.const(pack_weights(data, panel), str(data.dtype))
        return relax.Call(call.op, [kernel, relax.Tuple(args), *call.args[2:]], call.attrs, call.ty_args)


def _pass_packed_weights(mod: tvm.IRModule, packed: dict[str, tvm.tirx.PrimFunc]) -> tvm.IRModule:
    """`mod` calling the `packed` kernels with packed weights (see `_WeightPacker`)."""
    packer = _WeightPacker(mod, packed)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            packer.builder_.update_func(gv, packer.visit_expr(func))
    result = packer.builder_.get()
    for name in packed:
        del result[result.get_global_var(name)]
    return result


def kernel_calls(mod: tvm.IRModule) -> collections.Counter:
    """How many times `mod`'s Relax functions call each kernel (by name)."""
    calls: collections.Counter = collections.Counter()

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op == tvm.ir.Op.get("relax.call_tir"):
            calls[expr.args[0].name_hint] += 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return calls


def _constant_args(mod: tvm.IRModule) -> dict[str, set[int]]:
    """For each kernel, the argument positions that are constants at every call site:
    only those may be packed."""
    seen: dict[str, list[set[int]]] = {}

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op == tvm.ir.Op.get("relax.call_tir"):
            fields = expr.args[1].fields
            seen.setdefault(expr.args[0].name_hint, []).append(
                {i for i, a in enumerate(fields) if isinstance(a, tvm.ir.expr.Constant)})

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return {name: set.intersection(*sets) for name, sets in seen.items()}


#: Desired layouts: NHWC activations and HWIO weights for every conv2d (depthwise too).
CHANNELS_LAST = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


@dataclass(frozen=True)
class KernelCoverage:
    """How a module's fused kernels (tuning tasks) got their schedules.

    `tuned`: a record of the device's tuning database; `library`: a hand-written
    schedule of `pipeline.kernels.schedules`; the rest (`untuned_tasks`) run TVM's
    unscheduled default loops, which are slow. `database` says whether the device's
    database was applied (and, when not, why: e.g. tuned on another CPU).
    """

    device_name: str
    total: int
    tuned: int
    library: int
    untuned_tasks: tuple[str, ...]
    database: str

    @property
    def complete(self) -> bool:
        """True when every kernel has a tuned record."""
        return self.tuned == self.total

    def summary(self) -> str:
        """One line for logs and manifests."""
        text = f"{self.tuned}/{self.total} kernels tuned for {self.device_name}, {self.library} from the schedule library"
        if self.untuned_tasks:
            text += f", {len(self.untuned_tasks)} UNSCHEDULED: {', '.join(self.untuned_tasks)}"
        return f"{text}; {self.database}"

    def to_dict(self) -> dict:
        return {"device": self.device_name, "total": self.total, "tuned": self.tuned,
                "library": self.library, "untuned_tasks": list(self.untuned_tasks), "database": self.database}


def fuse_for_tuning(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Channels-last conversion, inference decomposition, legalization and fusion.

    The form tuning tasks are extracted from and records are applied to."""
    with target:
        return tvm.transform.Sequential([
            relax.transform.ConvertLayout(CHANNELS_LAST),
            fold_constant_layouts,
            relax.transform.DeadCodeElimination(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            fuse_convolutions,
            relax.transform.LegalizeOps({"relax.sigmoid": _fast_sigmoid}),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ])(mod)


def prim_funcs(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    """The module's PrimFuncs (its kernels) by name."""
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def workload_module(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The module MetaSchedule keys a fused PrimFunc's records by."""
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def has_record(database, func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> bool:
    return database.query_tuning_record(workload_module(func), target, "main") is not None


def fuse_for_device(mod: tvm.IRModule, target: tvm.target.Target, database, params: ScheduleParams
                    ) -> tuple[tvm.IRModule, dict[str, tvm.tirx.PrimFunc], set[str]]:
    """The fused module a device compiles, its unscheduled kernels by name, and the names
    that have a tuned record. A mostly untuned module is first channel-padded
    (`pad.pad_channels`) so its kernels get full-width vectors."""

    def fuse(module: tvm.IRModule) -> tuple[tvm.IRModule, dict, set]:
        fused = fuse_for_tuning(module, target)
        funcs = prim_funcs(fused)
        return fused, funcs, {n for n, f in funcs.items() if database is not None and has_record(database, f, target)}

    unpadded = None
    if database is not None:  # without a database nothing is tuned: no need to look first
        unpadded = fuse(mod)
        if len(unpadded[2]) >= len(unpadded[1]) / 2:
            return unpadded
    padded, changed = pad_channels(fold_constant_layouts(mod), params.lanes)
    if not changed:
        return unpadded or fuse(mod)
    log.info("padded %d convolutions to multiples of %d channels", changed, params.lanes)
    return fuse(padded)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    """A warning each process gives once: a profile run lowers hundreds of subnets."""
    log.warning("%s", message)


def lower_for_target(mod: tvm.IRModule, target: tvm.target.Target,
                     device_name: str) -> tuple[tvm.IRModule, KernelCoverage]:
    """Fuse `mod` and schedule every kernel: tuned record first, library schedule next.

    Returns the lowered Relax module (build it with `tvm.compile(mod, target)`) and how
    its kernels were scheduled.
    """
    applies, database_note = database_status(device_name, target)
    if not applies and has_database(device_name):  # tuned elsewhere: say so loudly, once per process
        _warn_once(f"{device_name}: {database_note}")
    database = open_device_database(device_name, target)
    tiles, tiles_note = load_tiles(device_name, target)
    params = replace(ScheduleParams.for_target(target), tiles=tiles)
    fused, funcs, recorded = fuse_for_device(mod, target, database, params)
    if recorded:
        with target, database:
            fused = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    library, untuned, packed = 0, [], {}
    constants = _constant_args(fused) if PACK_WEIGHTS else {}
    for name in sorted(set(funcs) - recorded):
        scheduled = schedule_primfunc(funcs[name], params, pack_weights=PACK_WEIGHTS)
        if scheduled is None:
            untuned.append(name)
            continue
        scheduled = scheduled.with_attr("tirx.is_scheduled", True)
        panels = {int(k) for k in scheduled.attrs.get(PACKED_WEIGHTS_ATTR, {})}
        if panels and panels <= constants.get(name, set()):
            packed[name] = scheduled
        else:  # unpacked, also when a weight is only known at run time
            fused[name] = scheduled if not panels else schedule_primfunc(funcs[name], params).with_attr(
                "tirx.is_scheduled", True)
        library += 1
    if packed:
        fused = _pass_packed_weights(fused, packed)
    coverage = KernelCoverage(device_name, len(funcs), len(recorded), library, tuple(untuned),
                              f"{database_note}; {tiles_note}")
    log.info("%s", coverage.summary())
    return fused, coverage
