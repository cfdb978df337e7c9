"""Roofline of this machine and where the demo space's heaviest kernels stand against it.

Measures once (bench/roofline.py): FMA peak of one core times the threads given, and
memory bandwidth (numpy copy of a 256 MB array: read + write). Then, for the `--top`
tasks of the demo-space plan with the largest FLOPs weight, times the hand-written
library schedule in-process and reads the best record of the x86-host database, and
prints achieved GFLOP/s, arithmetic intensity (FLOPs per byte of arguments) and the
roofline bound min(peak, intensity x bandwidth).

    .venv/bin/python bench/kernels.py [--top 12] [--threads 2]

Writes bench/results/kernels.json. The plan comes from the cache (`pipeline kernels plan
--device x86-host --space demo` fills it).
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from pipeline.atomic import write_json
from roofline import bandwidth_gbs, peak_gflops

RESULTS = Path(__file__).resolve().parent / "results" / "kernels.json"


def _kind(name: str) -> str:
    for pattern, kind in (("matmul", "classifier"), (r"^\d+_mean", "pool (global)"), ("avg_pool", "pool (shortcut)"),
                          ("relu|multiply\\d*_add\\d*$", "SE 1x1"), ("conv2d", "conv")):
        if re.search(pattern, name):
            return kind
    return "elementwise"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from pipeline.device import load_profile
    from pipeline.kernels.database import open_device_database
    from pipeline.kernels.lower import has_record, workload_module
    from pipeline.kernels.plan import plan
    from pipeline.kernels.schedules import ScheduleParams, schedule_primfunc
    from pipeline.space import SearchSpace

    profile = load_profile("x86-host")
    target = profile.tvm_target()
    peak, bandwidth = args.threads * peak_gflops(target), bandwidth_gbs()
    print(f"FMA peak {peak:.1f} GFLOP/s ({args.threads} threads), bandwidth {bandwidth:.1f} GB/s (copy)")
    result = plan(SearchSpace.load("demo"), profile.name, target, progress=False)
    database = open_device_database(profile.name, target)
    params = ScheduleParams.for_target(target)
    rows = []
    for task in sorted(result.tasks, key=lambda t: -t.weighted_flops)[: args.top]:
        func = task.mod["main"]
        infos = ms.arg_info.ArgInfo.from_prim_func(func)
        arrays = [np.random.rand(*[int(d) for d in a.shape]).astype(a.dtype) for a in infos]
        nbytes = sum(a.nbytes for a in arrays)
        lib = tvm.tirx.build(tvm.IRModule({"main": schedule_primfunc(func, params)}), target=target)
        timer = lib.time_evaluator("main", tvm.cpu(), number=20, repeat=5, min_repeat_ms=20)
        library_us = float(np.median(timer(*[tvm.runtime.tensor(a) for a in arrays]).results)) * 1e6
        best_us = None
        if database is not None and has_record(database, func, target):
            record = database.query_tuning_record(workload_module(func), target, "main")
            best_us = float(np.mean([float(s) for s in record.run_secs])) * 1e6
        intensity = task.flops / nbytes
        bound = min(peak, intensity * bandwidth)
        row = {"task": task.name, "kind": _kind(task.name), "mflop": task.flops / 1e6, "calls": task.occurrences,
               "intensity_flop_per_byte": intensity, "roofline_gflops": bound, "library_us": library_us,
               "library_gflops": task.flops / library_us / 1e3, "best_record_us": best_us,
               "best_gflops": None if best_us is None else task.flops / best_us / 1e3}
        rows.append(row)
        best = "-" if best_us is None else f"{best_us:8.1f} us {row['best_gflops']:6.1f} GF/s"
        print(f"{task.name[:44]:<44} {row['kind']:<14} AI {intensity:5.2f}  bound {bound:6.1f} GF/s  "
              f"library {library_us:8.1f} us {row['library_gflops']:6.1f} GF/s  best {best}", flush=True)
    write_json(RESULTS, {"threads": args.threads, "peak_gflops": peak, "bandwidth_gbs": bandwidth,
                         "note": ("timings on a shared 2-core machine under load from other work; best_record_us is the time stored "
                                  "when the record was measured (different load), library_us is measured now; mflop is "
                                  "TVM's estimate and counts epilogue math (fast_exp polynomial), so GFLOP/s can exceed the FMA peak"),
                         "tasks": rows}, indent=1)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
