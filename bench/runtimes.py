"""TVM artifacts vs onnxruntime vs PyTorch eager, same machine, same run, same threads.

Models: AttentiveNAS-A0, A3, A6 and 5 random subnets of the full space at their own
resolutions (1000 classes), and 10 random demo-space subnets (10 classes). Each model is
exported once (ONNX, simplified), compiled by TVM through `pipeline.kernels` for the
x86-host profile (tuned records where the database has them, library schedules
elsewhere: the full space is NOT tuned, the demo space is), and timed batch 1 with the
three runtimes interleaved in rounds (the machine is shared; interleaving spreads
disturbances over all three). Each runtime is timed the same way: wall clock of one
Python call, median over all runs.

    .venv/bin/python bench/runtimes.py [--threads 2] [--runs 50] [--rounds 3] [--only demo|full]

Prints a table and writes bench/results/runtimes.json (rewritten after every model).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pipeline.atomic import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "runtimes.json"


def _models(only: str | None) -> list[tuple[str, object, object, int]]:
    from pipeline.space import SearchSpace, resolve_arch

    models = []
    if only in (None, "full"):
        full = SearchSpace.load("attentivenas")
        for name in ("a0", "a3", "a6"):
            models.append((name.upper(), full, full.validate(resolve_arch(name)), 1000))
        rng = random.Random(0)
        models += [(f"full-random-{i}", full, full.sample(rng), 1000) for i in range(5)]
    if only in (None, "demo"):
        demo = SearchSpace.load("demo")
        rng = random.Random(1)
        models += [(f"demo-random-{i}", demo, demo.sample(rng), 10) for i in range(10)]
    return models


def _timer(fn, runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["demo", "full"], default=None)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts

    import numpy as np
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    from pipeline.compile import export_onnx, onnx_to_relax
    from pipeline.device import load_profile
    from pipeline.kernels import kernel_db_hash, lower_for_target
    from pipeline.model import build_static
    from pipeline.space.arch import count_flops

    torch.set_num_threads(args.threads)
    profile = load_profile("x86-host")
    target = profile.tvm_target()
    models = _models(args.only)
    names = {m[0] for m in models}
    # keep other models' results from an earlier run (e.g. `--only demo` then `--only full`)
    entries = [e for e in (json.loads(RESULTS.read_text())["models"] if RESULTS.is_file() else [])
               if e["model"] not in names]
    for name, space, config, classes in models:
        model = build_static(space, config, classes).eval()
        res = config.resolution
        x = np.random.default_rng(0).random((1, 3, res, res), dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, res, Path(tmp) / "m.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            start = time.perf_counter()
            lowered, coverage = lower_for_target(onnx_to_relax(path), target, profile.name)
            vm = relax.VirtualMachine(tvm.compile(lowered, target=target), tvm.cpu())
            compile_s = time.perf_counter() - start
        xt = tvm.runtime.tensor(x)
        xtorch = torch.from_numpy(x)
        runners = {
            "tvm": lambda: vm["main"](xt),
            "ort": lambda: session.run(None, {"input": x}),
            "torch": lambda: model(xtorch),
        }
        times = {k: [] for k in runners}
        with torch.no_grad():
            for _ in range(args.rounds):
                for key, fn in runners.items():
                    times[key] += _timer(fn, args.runs)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        entries.append({
            "model": name, "space": space.name, "resolution": res, "mflops": count_flops(space, config, classes) / 1e6,
            "config": config.to_dict(), "tvm_ms": ms["tvm"], "ort_ms": ms["ort"], "torch_ms": ms["torch"],
            "tvm_over_ort": ms["tvm"] / ms["ort"], "tvm_over_torch": ms["tvm"] / ms["torch"],
            "kernels": coverage.to_dict() | {"untuned_tasks": len(coverage.untuned_tasks)},
            "compile_s": compile_s, "threads": args.threads,
        })
        e = entries[-1]
        print(f"{name:<16} {res:4d}px {e['mflops']:7.1f} MFLOPs  tvm {e['tvm_ms']:7.3f} ms  ort {e['ort_ms']:7.3f} ms"
              f"  torch {e['torch_ms']:7.3f} ms  tvm/ort {e['tvm_over_ort']:5.2f}  tvm/torch {e['tvm_over_torch']:5.2f}"
              f"  tuned {coverage.tuned}/{coverage.total}", flush=True)
        _write(entries, args, kernel_db_hash(profile.name))
    _summary(entries)


def _write(entries: list[dict], args, db_hash: str) -> None:
    summary = {}
    for space in sorted({e["space"] for e in entries}):
        subset = [e for e in entries if e["space"] == space]
        summary[space] = {"median_tvm_over_ort": statistics.median(e["tvm_over_ort"] for e in subset),
                          "median_tvm_over_torch": statistics.median(e["tvm_over_torch"] for e in subset),
                          "models": len(subset)}
    write_json(RESULTS, {
        "threads": sorted({e["threads"] for e in entries}), "runs_per_round": args.runs, "rounds": args.rounds, "batch": 1,
        "device": "x86-host", "kernel_db_hash": db_hash,
        "note": ("demo-space kernels come from the committed kernels/x86-host database (library schedules "
                 "measured as records, MetaSchedule on the heaviest tasks); full-space models are not tuned: "
                 "their kernels use the hand-written library schedules only"),
        "summary": summary, "models": entries}, indent=1)


def _summary(entries: list[dict]) -> None:
    for space in sorted({e["space"] for e in entries}):
        subset = [e for e in entries if e["space"] == space]
        print(f"{space}: median tvm/ort {statistics.median(e['tvm_over_ort'] for e in subset):.2f}, "
              f"median tvm/torch {statistics.median(e['tvm_over_torch'] for e in subset):.2f} over {len(subset)} models")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
