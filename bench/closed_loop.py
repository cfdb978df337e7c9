"""Benchmark (not a test): the closed loop against an oracle on a measured pool of random subnets.

On one device: measure a pool of random subnets of the build's space once (its own store
file, so the build cannot see it), score them with the build's exact accuracy source,
set three budgets at the pool's 20/50/80 % latency quantiles and run the build for them.
Per budget: emitted top-1, the oracle (best pool subnet measured within the budget),
regret = oracle - emitted, the emitted library re-measured against the budget, rounds,
and the build's device time. Then the latency model's held-out error on the pool after
10, 20 and 50 measured subnets (the sampling plan's first N), with the block table, and
the device against itself: the pool timed a second time (the ceiling of that figure).
Prints a table and writes bench/results/closed_loop_<device>.json.

The machine is shared: pin the run (`taskset -c 1`) and read the load average printed
with the results; latencies are raw medians, the fits use the contention-corrected ones.

    taskset -c 1 .venv/bin/python bench/closed_loop.py --device x86-host [--pool 100]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.build import BuildConfig, run_build
from pipeline.build.accuracy import accuracy_for, load_supernet_for
from pipeline.build.config import TARGET_ALIASES
from pipeline.compile import INPUT_NAME, fixed_input
from pipeline.device import load_profile, measure, open_session
from pipeline.paths import REPO_ROOT, cache_dir
from pipeline.predict.workflow import load_dataset
from pipeline.profiling import compile_reference, profile_subnets

from heldout import heldout_error, random_pool, repeatability

RESULTS = REPO_ROOT / "bench" / "results"
QUANTILES = (0.2, 0.5, 0.8)
log = logging.getLogger("bench.closed_loop")


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _raw_ms(profile, space, store_path: Path) -> dict:
    data = load_dataset(profile, space, store_path, normalise=False)
    return dict(zip(data.configs, map(float, data.latency_ms)))


def predictor_error(profile, space, pool_store: Path, pool: list, sizes: list[int]) -> dict:
    """Fit on the plan's first N subnets (own store) + their blocks, test on the pool."""
    plan_store = cache_dir() / "bench" / f"closed_loop-plan-{profile.name}.sqlite"
    return heldout_error(profile, space, pool_store, pool, sizes, plan_store, compile_reference(space, profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="x86-host")
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--supernet", type=Path, default=None, help="default: the demo supernet the build uses")
    parser.add_argument("--data", type=Path, default=None, help="image folders for --supernet")
    parser.add_argument("--sizes", default="10,20,50")
    parser.add_argument("--max-rounds", type=int, default=2)
    parser.add_argument("--profile-subnets", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    profile = load_profile(args.device)
    target = next(k for k, v in TARGET_ALIASES.items() if v == profile.arch)
    out = RESULTS / f"closed_loop_{profile.name}"
    base = BuildConfig(target=target, devices=(profile.name,), supernet=args.supernet, data=args.data,
                       out=out / "build", max_rounds=args.max_rounds, profile_subnets=args.profile_subnets)
    supernet, checkpoint, space = load_supernet_for(base)
    accuracy = accuracy_for(base, space, supernet, checkpoint)

    # the pool: measured once into its own store, scored with the build's exact source
    pool_store = cache_dir() / "bench" / f"closed_loop-pool-{profile.name}.sqlite"
    pool = random_pool(space, args.pool, args.seed)
    profile_subnets(profile, space, pool, pool_store, source="bench-pool")
    pool_ms = _raw_ms(profile, space, pool_store)
    pool = [c for c in pool if c in pool_ms]
    top1 = dict(zip(pool, map(float, accuracy.exact.predict(pool))))
    budgets = [round(float(q), 4) for q in np.quantile([pool_ms[c] for c in pool], QUANTILES)]

    result = run_build(replace(base, budgets_ms=tuple(budgets)))
    stages = result.summary["stages"]
    device_s = sum(s["seconds"] for s in stages if s["name"] == "measure" and s.get("device") == profile.name)
    rows = []
    with open_session(profile) as session:
        for o in result.outcomes:
            within = [c for c in pool if pool_ms[c] <= o.budget_ms]
            oracle = max(within, key=lambda c: top1[c]) if within else None
            remeasured = None
            if o.emitted:
                config = o.candidate.config
                remeasured = measure(session, o.folder / "model.so", {INPUT_NAME: fixed_input(config.resolution)},
                                     profile.policy).median_ms
            rows.append({"budget_ms": o.budget_ms, "emitted": o.candidate.config.id if o.emitted else None,
                         "top1": o.accuracy, "oracle": oracle.id if oracle else None,
                         "oracle_top1": top1[oracle] if oracle else None,
                         "regret": (top1[oracle] - o.accuracy) if (oracle and o.emitted) else None,
                         "measured_ms": o.measured_ms, "remeasured_ms": remeasured,
                         "within_budget": remeasured is not None and remeasured <= o.budget_ms,
                         "rounds": o.n_rounds})
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    errors = predictor_error(profile, space, pool_store, pool, sizes)
    retest = repeatability(profile, space, pool, pool_store,
                          cache_dir() / "bench" / f"closed_loop-pool2-{profile.name}.sqlite")
    report = {"device": profile.name, "cpu": _cpu_model(), "load_avg_1min_end": os.getloadavg()[0],
              "affinity": sorted(os.sched_getaffinity(0)), "pool": len(pool), "space": space.name,
              "supernet": str(checkpoint), "accuracy_source": accuracy.source, "budgets_ms": budgets,
              "build_status": result.summary.get("status"), "build_device_measure_s": round(device_s, 1),
              "latency_model": result.summary.get("latency_model", {}).get(profile.name),
              "budgets": rows, "predictor_on_pool": errors, "pool_retest": retest}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"closed_loop_{profile.name}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"{profile.name} ({report['cpu']}, CPUs {report['affinity']}, load {report['load_avg_1min_end']:.1f}; "
          f"the machine is shared): pool {len(pool)}, build {report['build_status']}, "
          f"device measure time {device_s:.0f} s")
    print(f"{'budget ms':>9} {'emitted':>12} {'top1':>6} {'oracle':>12} {'top1':>6} {'regret':>6} "
          f"{'meas ms':>8} {'re-meas':>8} {'ok':>3} {'rounds':>6}")
    for r in rows:
        def f(v, spec):
            return format(v, spec) if v is not None else "-"
        print(f"{r['budget_ms']:>9.3f} {r['emitted'] or '-':>12} {f(r['top1'], '6.2f')} {r['oracle'] or '-':>12} "
              f"{f(r['oracle_top1'], '6.2f')} {f(r['regret'], '6.2f')} {f(r['measured_ms'], '8.3f')} "
              f"{f(r['remeasured_ms'], '8.3f')} {'yes' if r['within_budget'] else 'NO':>3} {r['rounds']:>6}")
    print("latency model on the pool (held out), fitted on the plan's first N subnets + their blocks:")
    for n, e in errors.items():
        print(f"  N={n:>3}: {e['kind']:<10} blocks {e['blocks']:>4}  MAPE {100 * e['mape']:5.1f}%  "
              f"within ±10% {100 * e['within_10pct']:5.1f}%")
    for name, r in retest.items():
        print(f"  the device against itself ({name}, pool timed twice): within ±10% {100 * r['within_10pct']:5.1f}%, "
              f"median |diff| {100 * r['median_rel_diff']:.1f}%, p90 {100 * r['p90_rel_diff']:.1f}%")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
