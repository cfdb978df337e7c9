"""TVM artifacts vs onnxruntime, same machine, same run, same threads.

Models: AttentiveNAS-A0..A6 and 10 random subnets of the full space at their own
resolutions (1000 classes), and 10 random demo-space subnets (10 classes; resolutions
cycle over 32/48/64 px so 64 px subnets are always in). Each model is exported once
(ONNX, simplified), compiled by TVM through `pipeline.kernels` for the x86-host profile
(tuned records where the database has them and was tuned on this CPU, library schedules
elsewhere), checked against onnxruntime's output, and timed batch 1 with the two
runtimes interleaved in rounds (the machine is shared; interleaving spreads disturbances
over both). Each runtime is timed the same way: wall clock of one Python call, median
over all runs.

Pin the process, one run per thread count (results of both are kept in one file):

    taskset -c 1   .venv/bin/python bench/runtimes.py --threads 1
    taskset -c 0,1 .venv/bin/python bench/runtimes.py --threads 2

Compiled libraries are cached under `cache_dir()/bench-runtimes/`, keyed by model,
target and kernel-database hash, so the second thread count does not recompile (the
compile time recorded is the one measured when it was built).
Prints the CPU model, the load average, a table, and writes bench/results/runtimes.json
(rewritten after every model).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pipeline.atomic import atomic_path, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "runtimes.json"
DEMO_RESOLUTIONS = (32, 48, 64)
#: TVM's logits may differ from onnxruntime's by this much (float32 reassociation).
MAX_ABS_DIFF = 1e-3


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo) and family/model numbers."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def _models(only: str | None, full_random: int, demo_random: int) -> list[tuple[str, object, object, int]]:
    from pipeline.space import SearchSpace, resolve_arch

    models = []
    if only in (None, "full"):
        full = SearchSpace.load("attentivenas")
        models += [(f"A{i}", full, full.validate(resolve_arch(f"a{i}")), 1000) for i in range(7)]
        rng = random.Random(0)
        models += [(f"full-random-{i}", full, full.sample(rng), 1000) for i in range(full_random)]
    if only in (None, "demo"):
        demo = SearchSpace.load("demo")
        rng = random.Random(1)
        for i in range(demo_random):
            config = dataclasses.replace(demo.sample(rng), resolution=DEMO_RESOLUTIONS[i % len(DEMO_RESOLUTIONS)])
            models.append((f"demo-random-{i}", demo, demo.validate(config), 10))
    return models


def _timer(fn, runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _compiled(name: str, model, onnx_path: Path, target, profile_name: str, db_hash: str):
    """The model's TVM library (built, or loaded from the bench cache), its kernel
    coverage and the compile time measured when it was built. The key holds the weights
    (a library embeds them, and one built for other weights gives other outputs) and the
    code that lowers and schedules (a schedule change must not time the old library)."""
    import tvm

    from pipeline.compile import onnx_to_relax
    from pipeline.compile.cache import code_digest, weights_digest
    from pipeline.kernels import lower_for_target
    from pipeline.paths import cache_dir

    key = hashlib.sha256(f"{name}|{weights_digest(model)}|{target}|{db_hash}|{code_digest()}".encode()
                         ).hexdigest()[:16]
    folder = cache_dir() / "bench-runtimes"
    lib_path, meta_path = folder / f"{name}-{key}.so", folder / f"{name}-{key}.json"
    if lib_path.is_file() and meta_path.is_file():
        return tvm.runtime.load_module(str(lib_path)), json.loads(meta_path.read_text())
    start = time.perf_counter()
    lowered, coverage = lower_for_target(onnx_to_relax(onnx_path), target, profile_name)
    executable = tvm.compile(lowered, target=target)
    meta = {"compile_s": time.perf_counter() - start, "kernels": coverage.to_dict()}
    with atomic_path(lib_path) as tmp:
        executable.export_library(str(tmp))
    write_json(meta_path, meta)  # last: a cache entry is whole once its meta file exists
    return tvm.runtime.load_module(str(lib_path)), meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["demo", "full"], default=None)
    parser.add_argument("--full-random", type=int, default=10)
    parser.add_argument("--demo-random", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=None, help="only these model names (a subset run)")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    os.environ.setdefault("TVM_BIND_THREADS", "0")  # keep to the CPUs taskset allowed

    import numpy as np
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    from pipeline.compile import export_onnx
    from pipeline.device import load_profile
    from pipeline.kernels import kernel_db_hash
    from pipeline.model import build_static
    from pipeline.space.arch import count_flops

    profile = load_profile("x86-host")
    target = profile.tvm_target()
    db_hash = kernel_db_hash(profile.name, target)
    cpu, allowed = cpu_model(), sorted(os.sched_getaffinity(0))
    load_start = os.getloadavg()
    print(f"CPU: {cpu}; target {target}; allowed CPUs {allowed}; {args.threads} thread(s); "
          f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)
    models = [m for m in _models(args.only, args.full_random, args.demo_random)
              if args.models is None or m[0] in args.models]
    keys = {(m[0], args.threads) for m in models}
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    # keep other models' / thread counts' results of an earlier run made on this CPU
    entries = [e for e in previous.get("models", []) if (e["model"], e["threads"]) not in keys
               and e.get("cpu") == cpu] if previous.get("cpu", cpu) == cpu else []
    for name, space, config, classes in models:
        torch.manual_seed(0)  # the same random weights in every run: cached libraries stay valid
        model = build_static(space, config, classes).eval()
        res = config.resolution
        x = np.random.default_rng(0).random((1, 3, res, res), dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, res, Path(tmp) / "m.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            lib, meta = _compiled(name, model, path, target, profile.name, db_hash)
        vm = relax.VirtualMachine(lib, tvm.cpu())
        xt = tvm.runtime.tensor(x)
        max_abs = float(np.abs(vm["main"](xt).numpy() - session.run(None, {"input": x})[0]).max())
        runners = {"tvm": lambda: vm["main"](xt), "ort": lambda: session.run(None, {"input": x})}
        times = {k: [] for k in runners}
        for _ in range(args.rounds):
            for key, fn in runners.items():
                times[key] += _timer(fn, args.runs)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        entries.append({
            "model": name, "space": space.name, "resolution": res, "mflops": count_flops(space, config, classes) / 1e6,
            "config": config.to_dict(), "tvm_ms": ms["tvm"], "ort_ms": ms["ort"], "tvm_over_ort": ms["tvm"] / ms["ort"],
            "max_abs_diff_vs_ort": max_abs, "outputs_match": max_abs <= MAX_ABS_DIFF, "kernels": meta["kernels"], "compile_s": meta["compile_s"],
            "threads": args.threads, "cpu": cpu, "load_average": list(os.getloadavg()),
        })
        e = entries[-1]
        if not e["outputs_match"]:
            print(f"{name}: TVM's output differs from onnxruntime's by {max_abs:.3g}", flush=True)
        tuned = e["kernels"]
        print(f"{name:<16} {res:4d}px {e['mflops']:7.1f} MFLOPs  tvm {e['tvm_ms']:7.3f} ms  ort {e['ort_ms']:7.3f} ms"
              f"  tvm/ort {e['tvm_over_ort']:5.2f}  |diff| {max_abs:.1e}  tuned {tuned['tuned']}/{tuned['total']}"
              f"  compile {e['compile_s']:.1f} s  load {e['load_average'][0]:.2f}", flush=True)
        _write(entries, args, db_hash, cpu, str(target))
    _summary(entries)


def _summaries(entries: list[dict]) -> dict[str, dict]:
    summary = {}
    for space, threads in sorted({(e["space"], e["threads"]) for e in entries}):
        ratios = [e["tvm_over_ort"] for e in entries if e["space"] == space and e["threads"] == threads]
        summary[f"{space}@{threads}t"] = {"median_tvm_over_ort": statistics.median(ratios), "max_tvm_over_ort": max(ratios),
                                          "above_1": sum(r > 1.0 for r in ratios), "models": len(ratios)}
    return summary


def _write(entries: list[dict], args, db_hash: str, cpu: str, target: str) -> None:
    write_json(RESULTS, {
        "cpu": cpu, "target": target, "runs_per_round": args.runs, "rounds": args.rounds, "batch": 1,
        "device": "x86-host", "kernel_db_hash": db_hash,
        "note": ("shared 2-core machine (other engineers' jobs running; see each model's load_average); "
                 "1 thread pinned with taskset -c 1, 2 threads with taskset -c 0,1; full-space models are "
                 "not tuned (library schedules); demo models use the committed kernels/x86-host records only "
                 "when they were tuned on this CPU"),
        "summary": _summaries(entries), "models": entries}, indent=1)


def _summary(entries: list[dict]) -> None:
    for key, s in _summaries(entries).items():
        print(f"{key}: median tvm/ort {s['median_tvm_over_ort']:.2f}, max {s['max_tvm_over_ort']:.2f}, "
              f"{s['above_1']} above 1.0, over {s['models']} models")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
