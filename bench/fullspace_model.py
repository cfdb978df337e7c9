"""Benchmark (not a test): a new device's latency model of the full AttentiveNAS space, what it
costs and how well it holds on subnets it never saw.

1. A held-out pool of random full-space subnets (seeded), measured into a store of its own.
2. The sampling plan's first N subnets (N = 10, 20, 50) and their distinct blocks profiled
   (compiled and measured); the wall time of each increment is recorded, so the cost of a
   model of each quality can be read off. After each N, the build's fit (kind chosen by
   cross-validation, block table) is tested on the pool: within ±10 %, MAPE, Kendall tau.
3. The pool timed a second time: how often the device agrees with itself within ±10 %,
   the ceiling of step 2's figure.
4. With `--transfer-device`: few-shot transfer. The model of step 2 at the largest N is
   recalibrated on the second device's plan's first K subnets (K = 5, 10, 20) and compared
   with a from-scratch fit on the same K, both tested on a random pool on that device,
   and that pool timed a second time (the ceiling there).

Goals (issue #14): >= 95 % of held-out subnets within ±10 % on x86-host with <= 50
subnets plus blocks and Kendall tau >= 0.9; few-shot to arm64-emulated >= 90 % within
±10 % with <= 20; a new device's model in <= 60 min of wall time on this 2-core machine.

    taskset -c 1 .venv/bin/python bench/fullspace_model.py [--transfer-device arm64-emulated]

Prints a table and writes bench/results/fullspace_model_<device>.json.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from pipeline.atomic import write_json
from pipeline.device import load_profile
from pipeline.paths import REPO_ROOT, cache_dir
from pipeline.predict import error_metrics, fit_predictor, save_predictor
from pipeline.predict.transfer import fit_transfer
from pipeline.predict.workflow import load_dataset
from pipeline.profiling import compile_reference, profile_subnets, sampling_plan
from pipeline.space import SearchSpace

from heldout import fit_on, heldout_error, only, print_transfer, random_pool, repeatability
from machine import describe, machine_info

RESULTS = REPO_ROOT / "bench" / "results"
log = logging.getLogger("bench.fullspace_model")


def _store(kind: str, device: str):
    return cache_dir() / "bench" / f"fullspace-{kind}-{device}.sqlite"


def measure_pool(profile: Any, space: SearchSpace, n: int, seed: int, reference) -> tuple[list, float]:
    """The held-out pool measured into its own store; returns it and the wall seconds taken."""
    pool = random_pool(space, n, seed)
    started = time.monotonic()
    profile_subnets(profile, space, pool, _store("pool", profile.name), reference=reference, source="bench-pool")
    return pool, time.monotonic() - started


def fit_on_plan(profile: Any, space: SearchSpace, n: int) -> Any:
    """The build's fit (kind by cross-validation, block table) on the plan's first `n` subnets,
    saying which reference time its contention-corrected latencies assume (`at_conditions`)."""
    return fit_on(profile, space, only(load_dataset(profile, space, _store("plan", profile.name)),
                                       sampling_plan(space, n)))


def transfer(source: Any, target_name: str, space: SearchSpace, ks: list[int], pool_n: int, seed: int,
             save: bool, retest: bool = True) -> dict[str, Any]:
    """`source` (a device's fitted model) recalibrated on the target's plan's first K
    subnets, vs a from-scratch fit on them; both tested on a random pool measured on the
    target. `save`: the transfer at the largest K becomes the target's current predictor."""
    target = load_profile(target_name)
    reference = compile_reference(space, target)
    pool, pool_s = measure_pool(target, space, pool_n, seed + 1, reference)
    started = time.monotonic()
    target_plan = sampling_plan(space, max(ks))
    profile_subnets(target, space, target_plan, _store("plan", target.name), reference=reference,
                    source="bench-plan")
    plan_s = time.monotonic() - started
    measured = load_dataset(target, space, _store("plan", target.name))
    test = only(load_dataset(target, space, _store("pool", target.name), quiet_ms=measured.reference_quiet_ms),
                set(pool) - set(target_plan))
    out: dict[str, Any] = {"source_device": source.device, "source_kind": source.kind,
                           "source_n": source.info["n_train"], "target_device": target.name, "n_test": len(test),
                           "target_pool_s": round(pool_s, 1), "target_plan_s": round(plan_s, 1), "by_k": {}}
    for k in ks:
        train = only(measured, target_plan[:k])
        moved = fit_transfer(source, target.name, train.encoded, train.latency_ms, train.ids).with_info(
            reference_quiet_ms=train.reference_quiet_ms, num_classes=train.num_classes)
        scratch = fit_predictor(target.name, space, train.encoded, train.latency_ms, train.ids)
        out["by_k"][str(k)] = {"n_train": len(train),
                               "transfer": error_metrics(test.latency_ms, moved.predict(test.encoded)),
                               "scratch": error_metrics(test.latency_ms, scratch.predict(test.encoded))}
    if save:
        out["saved"] = str(save_predictor(moved))
    if retest:
        out["pool_retest"] = repeatability(target, space, pool, _store("pool", target.name),
                                           _store("pool2", target.name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="x86-host")
    parser.add_argument("--space", default="attentivenas")
    parser.add_argument("--pool", type=int, default=30, help="held-out random subnets")
    parser.add_argument("--sizes", default="10,20,50", help="plan subnets the model is fitted on")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--transfer-device", default=None)
    parser.add_argument("--transfer-ks", default="5,10,20")
    parser.add_argument("--transfer-pool", type=int, default=20)
    parser.add_argument("--no-transfer-retest", action="store_true",
                        help="skip timing the target's pool a second time (~1.5 min a subnet under emulation)")
    parser.add_argument("--save", action="store_true",
                        help="save the fit at the largest N (and the transfer at the largest K) as the devices' "
                             "current predictors, for bench/search.py")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    started = time.monotonic()
    before = machine_info()
    profile = load_profile(args.device)
    space = SearchSpace.load(args.space)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    reference = compile_reference(space, profile)
    pool, pool_s = measure_pool(profile, space, args.pool, args.seed, reference)
    errors = heldout_error(profile, space, _store("pool", profile.name), pool, sizes, _store("plan", profile.name),
                           reference)
    retest = repeatability(profile, space, pool, _store("pool", profile.name), _store("pool2", profile.name))
    report: dict[str, Any] = {"device": profile.name, "space": space.name, "machine_start": before,
                              "pool": len(pool), "pool_measure_s": round(pool_s, 1), "by_n": errors,
                              "pool_retest": retest}
    model = fit_on_plan(profile, space, sizes[-1])
    if args.save:
        report["saved"] = str(save_predictor(model))
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"fullspace_model_{profile.name}.json", report)  # kept if the transfer is stopped
    if args.transfer_device:
        report["transfer"] = transfer(model, args.transfer_device, space,
                                      [int(k) for k in args.transfer_ks.split(",")], args.transfer_pool, args.seed,
                                      args.save, not args.no_transfer_retest)
    report.update(machine_end=machine_info(), wall_s=round(time.monotonic() - started, 1))
    path = write_json(RESULTS / f"fullspace_model_{profile.name}.json", report)

    print(f"{profile.name}, space {space.name}: {describe(report['machine_end'])} "
          f"(at start: load {before['loadavg']})")
    print(f"held-out pool: {len(pool)} random subnets, measured in {pool_s:.0f} s")
    print(f"{'N':>4} {'kind':<12} {'blocks':>6} {'n_test':>6} {'±10 %':>6} {'MAPE':>6} {'tau':>6} "
          f"{'profiled (cumulative)':>22}")
    total = 0.0
    for n, e in errors.items():
        total += e["profile_subnets_s"] + e["profile_blocks_s"]
        print(f"{n:>4} {e['kind']:<12} {e['blocks']:>6} {e['n_test']:>6} {100 * e['within_10pct']:5.1f}% "
              f"{100 * e['mape']:5.1f}% {e['kendall_tau']:6.3f} {total / 60:19.1f} min")
    for name, r in retest.items():
        print(f"the device against itself ({name}, pool timed twice): within ±10 % {100 * r['within_10pct']:5.1f}%, "
              f"tau {r['kendall_tau']:.3f}, median |diff| {100 * r['median_rel_diff']:.1f}%")
    tr = report.get("transfer")
    if tr:
        print(f"few-shot {tr['source_device']} ({tr['source_kind']}, {tr['source_n']} subnets) -> "
              f"{tr['target_device']}: {tr['n_test']} held out; target plan profiled in {tr['target_plan_s']:.0f} s")
        print_transfer(tr["by_k"])
        for name, r in tr.get("pool_retest", {}).items():
            print(f"{tr['target_device']} against itself ({name}): within ±10 % {100 * r['within_10pct']:5.1f}%, "
                  f"tau {r['kendall_tau']:.3f}")
    print(f"-> {path.relative_to(REPO_ROOT)} (wall {report['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
