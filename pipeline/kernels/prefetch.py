"""Software prefetch of the next weight panel in weight-heavy pointwise kernels.

The late stages of the AttentiveNAS space (9x9 or 6x6 maps, 1000+ channels) have more
weights than activations; their schedule (`schedules._weights_dominate`) takes one packed
weight panel at a time and reuses it over every position tile. In a whole net those
weights come cold from L3 or DRAM, once per inference, and the first tiles of every
panel wait on them: the 224 -> 1296 expansion at 9x9 of A6 took 231 us with its weights
warm and 300-350 us with them cold (one Xeon core). Its own loads cannot run far enough
ahead: each reduction step waits for its weight vectors before its multiply-adds.

So, while a panel runs, its reduction loop prefetches the next panel into L2
(`prefetcht1` on x86, `prfm pldl2keep` on arm64), one cache line every `prefetch_every`
reduction steps, spread over all of the panel's position tiles, and the next panel is
there when its turn comes. A prefetch holds a line-fill buffer until its line arrives
from DRAM, so the rate matters:
- one line per step over the first tiles only (the first version): the expansion cold
  took 280-290 us, warm unchanged; whole nets 2-7 % faster at one thread;
- spread over all tiles (the reduction loop split, the prefetch in its outer part):
  with the weights cold, that expansion 399 -> 350 us and the 1296 -> 224 projection
  400 -> 342 us (warm 335 and 309-328 us); whole nets a further 1-5 % faster (A6 -5 %).
TVM 0.27's schedule has no prefetch primitive, so the call is put into the scheduled
function's reduction loop here.
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm.tirx
from tvm.s_tir import SBlock, SBlockRealize

#: Bytes per cache line, on x86 and the Cortex-A cores of the device profiles.
CACHE_LINE = 64
#: The `llvm.prefetch` locality that reaches L2 and leaves L1 to the current panel (into
#: L1 whole nets ran 1-2 % slower, into L3 0-3 %).
L2 = 2
#: Spread the prefetches over all position tiles (`prefetch_every`); False is the first
#: version's one line per reduction step, kept for A/B runs (`bench/ab.py`).
SPREAD = True


@dataclass(frozen=True)
class PanelPrefetch:
    """Where a scheduled pointwise kernel can prefetch its next weight panel.

    `weight` is the packed weight buffer, (panels, 1, 1, K, panel); `reduction` the loop
    over K, or its outer part over `steps` = K / `prefetch_every` blocks of steps;
    `panel_index` and `tile_index` say, in the kernel's loop variables, which panel the
    loop is in and which position tile of it."""

    weight: tvm.tirx.Buffer
    reduction: tvm.tirx.Var
    panel_index: tvm.tirx.PrimExpr
    tile_index: tvm.tirx.PrimExpr
    steps: int

    def statement(self) -> tvm.tirx.Stmt:
        """Step k of tile t prefetches line t * steps + k of the next panel, while that
        line is in the panel and there is a next panel; with too few tiles to cover the
        panel its last lines come on demand."""
        panels, _, _, reduction, panel = (int(d) for d in self.weight.shape)
        per_line = CACHE_LINE // (tvm.DataType(self.weight.dtype).bits // 8)
        line = self.tile_index * self.steps + self.reduction
        element = line * per_line
        zero = tvm.tirx.const(0, "int64")
        address = tvm.tirx.op.address_of(tvm.tirx.BufferLoad(
            self.weight, [self.panel_index + 1, zero, zero, element // panel, element % panel]))
        call = tvm.tirx.op.call_llvm_intrin("void", "llvm.prefetch.p0", address, 0, L2, 1)
        within = tvm.tirx.all(line < panel_lines(reduction, panel, tvm.DataType(self.weight.dtype).bits),
                              self.panel_index + 1 < panels)
        return tvm.tirx.IfThenElse(within, tvm.tirx.Evaluate(call), None)


def insert_prefetch(func: tvm.tirx.PrimFunc, plan: PanelPrefetch) -> tvm.tirx.PrimFunc:
    """`func` with `plan`'s prefetch first in its reduction loop's body."""
    body = _with_prefetch(func.body, plan)
    if body is None:
        raise ValueError(f"no loop over {plan.reduction} in the scheduled kernel")
    return func.with_body(body)


def _with_prefetch(stmt: tvm.tirx.Stmt, plan: PanelPrefetch) -> tvm.tirx.Stmt | None:
    """`stmt` rebuilt along the path to the reduction loop, or None when it is not below."""
    if isinstance(stmt, tvm.tirx.For):
        if stmt.loop_var.same_as(plan.reduction):
            body = tvm.tirx.SeqStmt([plan.statement(), stmt.body])
        else:
            body = _with_prefetch(stmt.body, plan)
        if body is None:
            return None
        return tvm.tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
                            stmt.annotations, stmt.step)
    if isinstance(stmt, tvm.tirx.SeqStmt):
        for i, child in enumerate(stmt.seq):
            new = _with_prefetch(child, plan)
            if new is not None:
                return tvm.tirx.SeqStmt([*stmt.seq[:i], new, *stmt.seq[i + 1:]])
        return None
    if isinstance(stmt, SBlockRealize):
        block = _with_prefetch(stmt.block, plan)
        return None if block is None else SBlockRealize(stmt.iter_values, stmt.predicate, block)
    if isinstance(stmt, SBlock):
        body = _with_prefetch(stmt.body, plan)
        if body is None:
            return None
        return SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, body, stmt.init,
                      stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
    return None


def prefetch_every(reduction: int, panel: int, tiles: int, dtype_bits: int = 32) -> int:
    """Reduction steps per prefetched line: the largest divisor of `reduction` that still
    covers the next panel's lines over the current panel's `tiles` position tiles."""
    if not SPREAD:
        return 1
    most = max(1, tiles * reduction // max(1, panel_lines(reduction, panel, dtype_bits)))
    return max(d for d in range(1, min(most, reduction) + 1) if reduction % d == 0)


def panel_lines(reduction: int, panel: int, dtype_bits: int = 32) -> int:
    """Cache lines in one packed weight panel of `reduction` x `panel` elements."""
    return reduction * panel * dtype_bits // 8 // CACHE_LINE
