"""Per-layer time of a TVM artifact against onnxruntime's, by kernel kind and against the roofline.

For one subnet: every fused TVM kernel of the lowered module (tuned record or library
schedule, as the compile step applies them) is timed twice: alone (built by itself,
TVM's time_evaluator on random inputs, warm caches: what tuning sees) and in the graph
(the compiled model run with VM instrumentation: weights as cold as in real use);
onnxruntime runs the same ONNX file with its profiler on and reports each node's mean
duration in the graph. The two graphs run in alternating rounds, each round an
unprofiled pass (the wall times) and a profiled one: on a shared host the load moves
within minutes (A6's TVM wall went 12.8 -> 15.7 ms between two sequential runs), and
interleaving spreads it over both runtimes.
Both sides are grouped by layer kind (stem, pointwise 1x1, depthwise, SE, pool,
classifier, elementwise): the kind where TVM loses most is where schedule work pays.
Each kind's achieved GFLOP/s is set against the machine's peak (numpy sgemm, same
threads) so the table says how far from the roofline each kind runs.

    .venv/bin/python bench/layers.py [--model a3] [--space attentivenas] [--threads 1]

Writes bench/results/layers_<model>.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

from pipeline.atomic import write_json
from roofline import bandwidth_gbs, peak_gflops

RESULTS = Path(__file__).resolve().parent / "results"


def _ort_kind(node: dict) -> str:
    """Layer kind of an onnxruntime profiler event, from its op and our module names."""
    op, name = node["args"].get("op_name", ""), node["name"]
    if op in ("GlobalAveragePool", "ReduceMean", "AveragePool"):
        return "pool"
    if op in ("Gemm", "MatMul", "FusedGemm"):
        return "classifier"
    if "Conv" not in op:
        return "elementwise"
    # the head's feature-mix conv runs on the pooled 1x1 map: a matrix-vector product that
    # `kernel_kind` files with the SE convolutions, so it is counted there on both sides
    for part, kind in (("first_conv", "stem"), ("/se/", "SE"), ("feature_mix", "SE"), ("depth_conv", "depthwise")):
        if part in name:
            return kind
    return "pointwise"


def _time_tvm(unscheduled: dict, lowered, target) -> dict[str, dict]:
    """Per kernel: kind, calls, FLOPs and microseconds per call, timed alone."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from pipeline.kernels.kinds import kernel_kind
    from pipeline.kernels.lower import PACKED_SUFFIX, kernel_calls, prim_funcs

    calls = kernel_calls(lowered)
    out = {}
    for name, func in prim_funcs(lowered).items():
        infos = ms.arg_info.ArgInfo.from_prim_func(func)
        args = [tvm.runtime.tensor(np.random.rand(*[int(d) for d in a.shape]).astype(a.dtype)) for a in infos]
        lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
        timer = lib.time_evaluator("main", tvm.cpu(), number=20, repeat=5, min_repeat_ms=10)
        us = float(np.median(timer(*args).results)) * 1e6
        kind, flops, extents = kernel_kind(unscheduled[name.removesuffix(PACKED_SUFFIX)])
        out[name] = {"kind": kind, "calls": calls[name], "us": us, "flops": flops, "extents": extents}
    return out


class _Graph:
    """One runtime's whole graph, timed in passes that `main` interleaves with the other
    runtime's: unprofiled passes give the wall time per inference, profiled ones the
    per-layer times."""

    warmup = 10

    def __init__(self) -> None:
        self.wall_s, self.walls, self.profiled = 0.0, 0, 0

    def _run(self) -> None:
        """One unprofiled inference."""
        raise NotImplementedError

    def _run_profiled(self) -> None:
        """One inference with the runtime's per-layer timing on."""
        raise NotImplementedError

    def wall(self, runs: int) -> None:
        start = time.perf_counter()
        for _ in range(runs):
            self._run()
        self.wall_s += time.perf_counter() - start
        self.walls += runs

    def profile(self, runs: int) -> None:
        for _ in range(runs):
            self._run_profiled()
        self.profiled += runs

    @property
    def wall_us(self) -> float:
        return self.wall_s / self.walls * 1e6


class _TvmGraph(_Graph):
    """The compiled model in TVM's VM: per kernel, microseconds per inference inside the
    whole graph (VM instrumentation, so weights are as cold as in real use), the VM's own
    allocation time, and the wall time per inference without instrumentation."""

    def __init__(self, lowered, target, x) -> None:
        import tvm
        from tvm import relax

        super().__init__()
        self.vm = relax.VirtualMachine(tvm.compile(lowered, target=target), tvm.cpu())
        self.x = tvm.runtime.tensor(x)
        self.spent: dict[str, float] = collections.defaultdict(float)
        for _ in range(self.warmup):
            self._run()

    def _run(self) -> None:
        self.vm["main"](self.x)

    _run_profiled = _run  # with the instrument `profile` sets

    def profile(self, runs: int) -> None:
        began = [0.0]

        def instrument(func, symbol, before_run, ret_value, *args) -> int:
            now = time.perf_counter()
            if before_run:
                began[0] = now
            else:
                self.spent[symbol] += (now - began[0]) * 1e6
            return 0

        self.vm.set_instrument(instrument)
        super().profile(runs)
        self.vm.set_instrument(None)

    def results(self) -> tuple[dict[str, float], float, float]:
        per_run = {symbol: us / self.profiled for symbol, us in self.spent.items()}
        overhead = sum(us for symbol, us in per_run.items() if symbol.startswith("vm."))
        return per_run, overhead, self.wall_us


class _OrtGraph(_Graph):
    """onnxruntime on the same ONNX file: per ONNX kind, mean microseconds per inference
    from its profiler, and the wall time per inference of a session without it."""

    def __init__(self, onnx_path: Path, x, threads: int, profile_dir: Path) -> None:
        import onnxruntime as ort

        def session(profiled: bool):
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.enable_profiling = profiled
            options.profile_file_prefix = str(profile_dir / "ort")
            return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

        super().__init__()
        self.x, self.plain, self.profiled_session = {"input": x}, session(False), session(True)
        for _ in range(self.warmup):
            self._run()
            self._run_profiled()

    def _run(self) -> None:
        self.plain.run(None, self.x)

    def _run_profiled(self) -> None:
        self.profiled_session.run(None, self.x)

    def results(self) -> tuple[dict[str, float], float]:
        events = json.loads(Path(self.profiled_session.end_profiling()).read_text())
        nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        per_run = len(nodes) / (self.profiled + self.warmup)
        by_kind = collections.defaultdict(float)
        for event in nodes[-int(per_run * self.profiled):]:
            by_kind[_ort_kind(event)] += event["dur"] / self.profiled
        return dict(by_kind), self.wall_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="a3", help="a0..a6, or a subnet config file")
    parser.add_argument("--space", default="attentivenas")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100, help="inferences per runtime and measure, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="rounds alternating between the runtimes")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)

    import numpy as np

    from pipeline.compile import export_onnx, onnx_to_relax
    from pipeline.device import load_profile
    from pipeline.kernels import kernel_db_hash, lower_for_target
    from pipeline.kernels.database import open_device_database
    from pipeline.kernels.kinds import KINDS
    from pipeline.kernels.lower import fuse_for_device
    from pipeline.kernels.schedules import ScheduleParams
    from pipeline.model import build_static
    from pipeline.space import SearchSpace, SubnetConfig, resolve_arch

    space = SearchSpace.load(args.space)
    config = space.validate(resolve_arch(args.model) if not Path(args.model).is_file()
                            else SubnetConfig.from_file(args.model))
    classes = 1000 if space.name == "attentivenas" else 10
    profile = load_profile("x86-host")
    target = profile.tvm_target()
    peak, bandwidth = args.threads * peak_gflops(target), bandwidth_gbs()  # the FMA loop runs on one core

    x = np.random.default_rng(0).random((1, 3, config.resolution, config.resolution), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(build_static(space, config, classes).eval(), config.resolution, Path(tmp) / "m.onnx")
        lowered, coverage = lower_for_target(onnx_to_relax(path), target, profile.name)
        _, unscheduled, _ = fuse_for_device(onnx_to_relax(path), target, open_device_database(profile.name, target),
                                      ScheduleParams.for_target(target))
        kernels = _time_tvm(unscheduled, lowered, target)
        # both runtimes in the graph, in alternating rounds: a busy neighbour slows both alike
        ort_graph, tvm_graph = _OrtGraph(path, x, args.threads, Path(tmp)), _TvmGraph(lowered, target, x)
        per_round = max(1, args.runs // args.rounds)
        for _ in range(args.rounds):
            for runtime in (ort_graph, tvm_graph):
                runtime.wall(per_round)
                runtime.profile(per_round)
        ort_by_kind, ort_total = ort_graph.results()
    in_graph, vm_overhead, tvm_wall = tvm_graph.results()
    for name, k in kernels.items():
        k["in_graph_us"] = in_graph.get(name, 0.0)

    rows = []
    print(f"{args.model} {config.resolution}px, {args.threads} thread(s), FMA peak {peak:.0f} GFLOP/s, "
          f"copy bandwidth {bandwidth:.1f} GB/s; {coverage.summary()}")
    print("tvm alone: each kernel timed by itself (warm caches); tvm in graph and ort: per inference, in the whole net")
    print(f"{'kind':<12} {'kernels':>7} {'tvm alone':>9} {'tvm graph':>9} {'ort graph':>9} {'tvm/ort':>8} {'GFLOP/s':>8} {'% peak':>7}")
    for kind in KINDS:
        mine = [k for k in kernels.values() if k["kind"] == kind]
        alone_us = sum(k["us"] * k["calls"] for k in mine)
        tvm_us = sum(k["in_graph_us"] for k in mine)
        flops = sum(k["flops"] * k["calls"] for k in mine)
        ort_us = ort_by_kind.get(kind, 0.0)
        if not mine and not ort_us:
            continue
        gflops = flops / tvm_us / 1e3 if tvm_us else 0.0
        rows.append({"kind": kind, "kernels": len(mine), "calls": sum(k["calls"] for k in mine),
                     "tvm_alone_us": alone_us, "tvm_us": tvm_us,
                     "ort_us": ort_us, "tvm_over_ort": tvm_us / ort_us if ort_us else None,
                     "tvm_gflops": gflops, "fraction_of_peak": gflops / peak})
        ratio = f"{tvm_us / ort_us:8.2f}" if ort_us else f"{'-':>8}"
        print(f"{kind:<12} {len(mine):7d} {alone_us:9.0f} {tvm_us:9.0f} {ort_us:9.0f} {ratio} {gflops:8.1f} "
              f"{100 * gflops / peak:6.0f}%")
    print(f"{'sum':<12} {'':7} {sum(r['tvm_alone_us'] for r in rows):9.0f} {sum(r['tvm_us'] for r in rows):9.0f} "
          f"{sum(r['ort_us'] for r in rows):9.0f}")
    print(f"wall per inference (no profiling): tvm {tvm_wall:.0f} us, ort {ort_total:.0f} us; "
          f"VM allocations in the profiled graph {vm_overhead:.0f} us")
    worst = sorted(kernels.items(), key=lambda kv: -kv[1]["in_graph_us"])[:10]
    print("heaviest TVM kernels:")
    for name, k in worst:
        print(f"  {name[:52]:<52} {k['kind']:<10} {k['calls']}x {k['us']:7.1f} us alone {k['in_graph_us']:7.1f} us in graph"
              f"  {k['flops'] / k['us'] / 1e3:6.1f} GFLOP/s  {k['extents']}")
    out = RESULTS / f"layers_{Path(args.model).stem}.json"
    write_json(out, {"model": args.model, "space": space.name, "resolution": config.resolution,
                     "threads": args.threads, "peak_gflops": peak, "bandwidth_gbs": bandwidth, "kernel_db_hash": kernel_db_hash(profile.name, target),
                     "coverage": coverage.to_dict(), "ort_wall_us": ort_total,
                     "tvm_wall_us": tvm_wall, "tvm_vm_alloc_us": vm_overhead, "kinds": rows,
                     "kernels": kernels}, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
