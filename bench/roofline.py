"""This machine's roofline, measured once per benchmark run: FMA peak and copy bandwidth.

Used by bench/layers.py and bench/kernels.py (run them from the repo root; `bench/` is
then on the import path).
"""
from __future__ import annotations

import time


def peak_gflops(target) -> float:
    """FMA peak of one core: 12 independent vector accumulators (enough to cover FMA
    latency on both pipes) of the target's SIMD width (`simd_lanes`: 8 on AVX2, 16 on
    AVX-512; wider vectors than the registers would spill) in a register-resident loop,
    built by TVM for `target`. numpy's sgemm reaches only about half of this on Zen 5
    (OpenBLAS has no kernel for it)."""
    import numpy as np
    import tvm
    from tvm.script import tirx as T

    from pipeline.kernels.schedules import simd_lanes

    lanes, chains, steps = simd_lanes(target), 12, 1 << 16

    @T.prim_func(s_tir=True)
    def fma(a: T.Buffer((lanes,), "float32"), out: T.Buffer((lanes * chains,), "float32")):
        # without noalias LLVM may not keep `acc` in registers: every step stored the
        # accumulators and reloaded `a` (store-bound: 25 GFLOP/s on a Zen 3 whose 1x1
        # convolutions reach 70)
        T.func_attr({"tirx.noalias": True})
        acc = T.sblock_alloc_buffer((chains, lanes), "float32", scope="local")
        for i in T.unroll(chains):
            for lane in T.vectorized(lanes):
                with T.sblock("init"):
                    vi, vl = T.axis.remap("SS", [i, lane])
                    acc[vi, vl] = T.float32(0)
        for _ in range(steps):
            for i in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    with T.sblock("fma"):
                        vi, vl = T.axis.remap("SS", [i, lane])
                        acc[vi, vl] = acc[vi, vl] * a[vl] + a[vl]
        for i in T.unroll(chains):
            for lane in T.vectorized(lanes):
                with T.sblock("out"):
                    vi, vl = T.axis.remap("SS", [i, lane])
                    out[vi * lanes + vl] = acc[vi, vl]

    lib = tvm.tirx.build(tvm.IRModule({"main": fma}), target=target)
    args = [tvm.runtime.tensor(np.full(lanes, 0.999, np.float32)), tvm.runtime.tensor(np.zeros(lanes * chains, np.float32))]
    seconds = min(lib.time_evaluator("main", tvm.cpu(), number=5, repeat=5)(*args).results)
    return 2 * steps * chains * lanes / seconds / 1e9


def bandwidth_gbs() -> float:
    """Memory bandwidth of one core: numpy copy of 256 MB (read + write)."""
    import numpy as np

    src = np.ones(64 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return max(2 * src.nbytes / _timed(lambda: np.copyto(dst, src)) for _ in range(5)) / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
