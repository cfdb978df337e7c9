"""A latency model judged on subnets it never saw: a seeded random pool measured into a store
of its own, and fits on the sampling plan's first N subnets (plus their blocks) tested on it.

Shared by `closed_loop.py` (demo space, the build's loop) and `fullspace_model.py` (the
full space, what a new device costs).
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.stats import kendalltau

from pipeline.measure import Reference
from pipeline.predict import error_metrics, fit_predictor
from pipeline.predict.features import distinct_blocks
from pipeline.predict.workflow import Dataset, load_block_table, load_dataset
from pipeline.profiling import profile_blocks, profile_subnets, sampling_plan
from pipeline.space import SearchSpace, SubnetConfig

log = logging.getLogger("bench.heldout")


def random_pool(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    """`n` distinct random subnets of `space` (uniform over its choices), reproducible by `seed`."""
    rng = random.Random(seed)
    pool: dict[str, SubnetConfig] = {}
    while len(pool) < n:
        c = space.sample(rng)
        pool.setdefault(c.id, c)
    return list(pool.values())


def only(data: Dataset, configs: Iterable[SubnetConfig]) -> Dataset:
    """The rows of `data` whose subnet is one of `configs`."""
    keep = set(configs)
    return data.subset(np.array([c in keep for c in data.configs], dtype=bool))


def fit_on(profile: Any, space: SearchSpace, data: Dataset) -> Any:
    """The build's fit (kind by cross-validation, the device's block table) on `data`, saying
    which reference time its contention-corrected latencies assume (`at_conditions`)."""
    return fit_predictor(profile.name, space, data.encoded, data.latency_ms, data.ids,
                         lut=load_block_table(profile, space)
                         ).with_info(reference_quiet_ms=data.reference_quiet_ms, num_classes=data.num_classes)


def heldout_error(profile: Any, space: SearchSpace, pool_store: Path, pool: Sequence[SubnetConfig],
                  sizes: Sequence[int], plan_store: Path, reference: Reference) -> dict[str, Any]:
    """For each N in `sizes` (ascending): profile the plan's first N subnets (into
    `plan_store`, the pool's members excluded from nothing: a random pool and a
    farthest-point plan share no subnet in practice, and a shared one is dropped from the
    test) and their distinct blocks, fit the build's predictor, test it on the pool.

    Each size's row says how long its increment of profiling took (wall seconds: compile
    and measure) and how much of it was measured now rather than found stored, so the cost
    of a model of that quality can be read off."""
    out: dict[str, Any] = {}
    for n in sizes:
        plan = sampling_plan(space, n)
        started = time.monotonic()
        subnets = profile_subnets(profile, space, plan, plan_store, reference=reference, source="bench-plan")
        subnets_s = time.monotonic() - started
        blocks = distinct_blocks(space, plan)
        block_run = profile_blocks(profile, space, blocks, reference=reference)
        blocks_s = time.monotonic() - started - subnets_s
        train = only(load_dataset(profile, space, plan_store), plan)
        # the pool corrected to the quiet time of the model's data, not its own estimate
        held = only(load_dataset(profile, space, pool_store, quiet_ms=train.reference_quiet_ms), set(pool) - set(plan))
        lut = load_block_table(profile, space)
        predictor = fit_predictor(profile.name, space, train.encoded, train.latency_ms, train.ids, lut=lut)
        m = error_metrics(held.latency_ms, predictor.predict(held.encoded))
        out[str(n)] = {"n_train": len(train), "kind": predictor.kind, "blocks": len(lut.entries) if lut else 0,
                       "blocks_needed": len(blocks), "n_test": len(held), "mape": m["mape"],
                       "within_10pct": m["within_10pct"], "kendall_tau": m["kendall_tau"],
                       "q90_rel_error": m["q90_rel_error"], "profile_subnets_s": round(subnets_s, 1),
                       "profile_blocks_s": round(blocks_s, 1),
                       # the times above are for what this run measured; the rest was in the stores
                       "measured_now": {"subnets": subnets.measured, "blocks": block_run.measured},
                       "stored_before": {"subnets": subnets.skipped, "blocks": block_run.skipped}}
        log.info("n=%d: %s, held-out within ±10%%: %.0f%%, tau %.3f", n, predictor.kind,
                 100 * m["within_10pct"], m["kendall_tau"])
    return out


def repeatability(profile: Any, space: SearchSpace, pool: Sequence[SubnetConfig], first_store: Path,
                  second_store: Path) -> dict[str, Any]:
    """The pool timed a second time (its own store, libraries from the compile cache): how
    often a measurement agrees with the first one within ±10 %, and how the two rank the
    pool (Kendall tau), raw and contention-corrected (both to the first run's quiet time).

    No latency model can be judged closer to "measured" than the device repeats itself:
    this is the ceiling of the predictor's within-±10 % figure on this device."""
    profile_subnets(profile, space, pool, second_store, source="bench-pool-again")
    out = {}
    for name, normalise in (("raw", False), ("corrected", True)):
        first = load_dataset(profile, space, first_store, normalise=normalise)
        second = load_dataset(profile, space, second_store, normalise=normalise, quiet_ms=first.reference_quiet_ms)
        a = dict(zip(first.configs, first.latency_ms))
        b = dict(zip(second.configs, second.latency_ms))
        both = [c for c in pool if c in a and c in b]
        rel = np.array([abs(b[c] / a[c] - 1.0) for c in both])
        out[name] = {"n": len(both), "within_10pct": float(np.mean(rel <= 0.10)),
                     "kendall_tau": float(kendalltau([a[c] for c in both], [b[c] for c in both]).statistic),
                     "median_rel_diff": float(np.median(rel)), "p90_rel_diff": float(np.percentile(rel, 90))}
    return out


def print_transfer(by_k: dict[str, Any]) -> None:
    """Transfer vs from-scratch per K, one line each (K rows a study skipped are left out)."""
    for k, row in by_k.items():
        if "skipped" in row:
            continue
        for name in ("transfer", "scratch"):
            m = row[name]
            print(f"  K={k:>3} {name:<8} MAPE {100 * m['mape']:6.2f}%  ±10% {100 * m['within_10pct']:5.1f}%  "
                  f"tau {m['kendall_tau']:.3f}")
