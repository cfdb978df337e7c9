"""Benchmark (not a test): how well a device repeats itself, timed raw, beside a reference, and
paired with it (`pipeline.device.measure.measure_paired`).

A seeded pool of full-space subnets (the one `fullspace_model.py` holds out) is timed in P
passes; every timing is paired (reference, subnet, reference, ..., one repeat each) and all
repeats are kept, so three estimators can be read off the same calls:
- raw: the subnet's median;
- around: the median x the reference's quiet time / the reference's median over the whole
  timing (what a reference timed before and after a job sees);
- paired: the median of the per-repeat ratios x the quiet time.
Each pair of passes is compared: the share of subnets whose two estimates agree within
±10 %, and Kendall tau. That share is the ceiling of any latency model's held-out figure.

    .venv/bin/python bench/pairing.py [--passes 3] [--pool 30]

Prints a table and writes bench/results/pairing_<device>.json.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import time
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from pipeline.atomic import write_json
from pipeline.compile import INPUT_NAME, fixed_input
from pipeline.device import load_profile, open_session
from pipeline.device.measure import PairedMeasurement, measure_paired
from pipeline.measure.jobs import quiet_time
from pipeline.paths import REPO_ROOT
from pipeline.profiling import compile_for_timing, compile_reference
from pipeline.space import SearchSpace

from heldout import random_pool
from machine import describe, machine_info

RESULTS = REPO_ROOT / "bench" / "results"
ESTIMATORS = ("raw", "around", "paired")


def estimates(timings: list[PairedMeasurement], quiet_ms: float) -> dict[str, np.ndarray]:
    """Per estimator, one pass's latency of every subnet (ms)."""
    median = np.array([t.measurement.median_ms for t in timings])
    return {"raw": median,
            "around": median * quiet_ms / np.array([t.reference_median_ms for t in timings]),
            "paired": quiet_ms * np.array([t.ratio for t in timings])}


def agreement(passes: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per estimator: within ±10 % and Kendall tau between every two passes, and their mean."""
    out = {}
    for name in ESTIMATORS:
        pairs = []
        for a, b in itertools.combinations(range(len(passes)), 2):
            x, y = passes[a][name], passes[b][name]
            pairs.append({"passes": [a, b], "within_10pct": float(np.mean(np.abs(y / x - 1) <= 0.10)),
                          "kendall_tau": float(kendalltau(x, y).statistic)})
        out[name] = {"within_10pct": float(np.mean([p["within_10pct"] for p in pairs])),
                     "kendall_tau": float(np.mean([p["kendall_tau"] for p in pairs])), "pairs": pairs}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="x86-host")
    parser.add_argument("--space", default="attentivenas")
    parser.add_argument("--pool", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026, help="fullspace_model.py's pool seed")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    before = machine_info()
    profile = load_profile(args.device)
    space = SearchSpace.load(args.space)
    pool = random_pool(space, args.pool, args.seed)
    artifacts = compile_for_timing(space, pool, profile, None, None)
    reference = compile_reference(space, profile)
    timings: list[list[PairedMeasurement]] = []
    started = time.monotonic()
    with open_session(profile) as session:
        for p in range(args.passes):
            timings.append([measure_paired(session, a.library, {INPUT_NAME: fixed_input(c.resolution)},
                                           reference.library, reference.inputs, profile.policy)
                            for c, a in zip(pool, artifacts)])
            print(f"pass {p + 1}/{args.passes} done ({(time.monotonic() - started) / 60:.1f} min)", flush=True)
    quiet = quiet_time([ms for t in itertools.chain(*timings) for ms in t.reference_ms])
    passes = [estimates(t, quiet) for t in timings]
    result = agreement(passes)
    reference_median = float(np.median([t.reference_median_ms for t in itertools.chain(*timings)]))
    report = {"device": profile.name, "space": space.name, "pool": len(pool), "passes": args.passes,
              "reference": reference.subnet_id, "reference_quiet_ms": quiet, "reference_median_ms": reference_median,
              "agreement": result, "machine_start": before, "machine_end": machine_info(),
              "wall_s": round(time.monotonic() - started, 1),
              "timings": [[{"subnet": c.id, "repeats_ms": t.measurement.repeats_ms, "reference_ms": t.reference_ms}
                           for c, t in zip(pool, ts)] for ts in timings]}
    path = write_json(RESULTS / f"pairing_{profile.name}.json", report)
    print(f"{profile.name}, {len(pool)} {space.name} subnets x {args.passes} passes: {describe(report['machine_end'])}")
    print(f"reference {reference.subnet_id}: quiet {quiet:.1f} ms, median over the run {reference_median:.1f} ms "
          f"({reference_median / quiet:.2f}x quiet: how busy the machine was)")
    print(f"{'estimator':<9} {'within ±10 %':>12} {'tau':>6}   per pair of passes")
    for name in ESTIMATORS:
        r = result[name]
        per = " ".join(f"{100 * p['within_10pct']:.0f}%" for p in r["pairs"])
        print(f"{name:<9} {100 * r['within_10pct']:11.1f}% {r['kendall_tau']:6.3f}   {per}")
    print(f"-> {path.relative_to(REPO_ROOT)} (wall {report['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
