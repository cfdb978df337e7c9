"""The closed loop on one device: search, compile, verify, measure, and tighten on a miss.

For each budget the search picks the most accurate subnet whose predicted latency fits.
It is compiled (verified on the device against PyTorch) and measured; the measurement
goes to the store at once. A subnet measured over its budget is not emitted: the
budget the search works with is tightened by the observed relative error
(`effective *= predicted / measured`), the predictor is refitted with the new
measurements, and the search runs again, for at most `max_rounds` rounds. A budget still
unmet after that gets the best-ranked subnet already measured within it, if any. Last, a
larger budget never ships a less accurate (evaluated) subnet than a smaller budget did.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.build.accuracy import AccuracySetup, deployable
from pipeline.measure import Reference, measure_batch
from pipeline.profiling import subnet_job
from pipeline.search import Budget, Candidate, EvolutionConfig, SearchResult, evolve
from pipeline.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)


@dataclass
class BudgetOutcome:
    """What happened to one budget on one device."""

    device: str
    budget_ms: float
    effective_ms: float
    folder: Path | None = None
    candidate: Candidate | None = None
    measured_ms: float | None = None
    accuracy: float | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None  # why nothing was emitted

    @property
    def emitted(self) -> bool:
        return self.folder is not None

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {"device": self.device, "budget_ms": self.budget_ms, "effective_budget_ms": round(self.effective_ms, 4),
                "emitted": self.emitted, "folder": str(self.folder) if self.folder else None,
                "subnet_id": c.config.id if c else None, "config": c.config.to_dict() if c else None,
                "predicted_accuracy": round(c.accuracy, 3) if c else None, "accuracy": self.accuracy,
                "predicted_ms": round(c.latency[self.device], 4) if c else None, "measured_ms": self.measured_ms,
                "rounds": self.rounds, "reason": self.reason}


@dataclass(frozen=True)
class LoopContext:
    """What the loop needs besides the device: space, weights, accuracy, where to write."""

    space: SearchSpace
    supernet: Any
    checkpoint: str | None
    accuracy: AccuracySetup
    evolution: EvolutionConfig
    out: Path
    max_rounds: int
    workers: int | None


def artifact_folder(out: Path, device: str, budget_ms: float) -> Path:
    return out / f"{device}-{budget_ms:g}ms"


def run_loop(ctx: LoopContext, profile: Any, budgets_ms: Sequence[float], predictor: Any,
             refit: Callable[[], Any], store: Any, session: Any, reference: Reference, timings: dict[str, float]
             ) -> tuple[list[BudgetOutcome], list[SearchResult]]:
    """Emit one verified artifact per budget whose measured latency meets it (see module doc).
    Every measurement is stored beside `reference`, so `refit` sees it; `timings`
    accumulates seconds spent in search, compile+verify and measure."""

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    outcomes = {b: BudgetOutcome(profile.name, b, b) for b in budgets_ms}
    accuracy: dict[SubnetConfig, float] = {}

    def try_picks(chosen: list[tuple[float, Candidate]], round_no: int | str) -> list[float]:
        """Compile, verify and measure the picks; emit those within budget, return the missed budgets."""
        missed = []
        artifacts = timed("compile+verify",
                          lambda: _compile(ctx, profile, [(b, c.config) for b, c in chosen], session, accuracy))
        jobs = [subnet_job(profile, ctx.space, cand.config, artifact, "build")
                for (_, cand), artifact in zip(chosen, artifacts)]
        timed("measure", lambda: list(measure_batch(profile, jobs, store, reference, session, progress=False)))
        for (b, cand), artifact, job in zip(chosen, artifacts, jobs):
            outcome = outcomes[b]
            stored = store.get(*job.key)
            if stored is None:  # the measurement failed (logged by the batch)
                shutil.rmtree(artifact.folder, ignore_errors=True)
                outcome.reason = f"measuring {cand.config.id} failed after {round_no} round(s)"
                missed.append(b)
                continue
            measured = stored.median_ms
            predicted = cand.latency[profile.name]
            outcome.rounds.append({"round": round_no, "effective_ms": round(outcome.effective_ms, 6),
                                   "subnet_id": cand.config.id, "predicted_ms": round(predicted, 6),
                                   "measured_ms": round(measured, 6)})
            if measured <= b:
                outcome.folder, outcome.candidate, outcome.measured_ms = artifact.folder, cand, measured
                outcome.accuracy = round(float(accuracy[cand.config]), 3)
                outcome.reason = None
            else:
                log.warning("%s, %g ms budget: %s measured %.3f ms (predicted %.3f): tightening", profile.name, b,
                            cand.config.id, measured, predicted)
                shutil.rmtree(artifact.folder, ignore_errors=True)
                outcome.effective_ms *= predicted / measured
                outcome.reason = f"measured {measured:.3f} ms > {b:g} ms after {round_no} round(s)"
                missed.append(b)
        return missed

    pending = list(budgets_ms)
    searches: list[SearchResult] = []
    for round_no in range(1, ctx.max_rounds + 1):
        budgets = [Budget.single(profile.name, outcomes[b].effective_ms) for b in pending]
        result = timed("search", lambda: evolve(ctx.space, ctx.accuracy.rank, {profile.name: predictor},
                                                budgets, ctx.evolution))
        searches.append(result)
        chosen = []
        for b, cand in zip(pending, result.best):
            if cand is None:
                outcomes[b].reason = (f"no subnet is predicted within {outcomes[b].effective_ms:.3g} ms "
                                      f"on {profile.name}")
                outcomes[b].rounds.append({"round": round_no, "effective_ms": outcomes[b].effective_ms,
                                           "found": None})
            else:
                chosen.append((b, cand))
        missed = try_picks(chosen, round_no)
        pending = missed
        if not pending:
            break
        if round_no < ctx.max_rounds:
            predictor = refit()
    left = [b for b in budgets_ms if not outcomes[b].emitted]
    fallback = _measured_within(ctx, profile, store, predictor, left)
    if fallback:
        try_picks(fallback, "measured")
    _never_worse_with_more_budget([outcomes[b] for b in sorted(budgets_ms)])
    for outcome in outcomes.values():
        if outcome.emitted:
            _finish_manifest(ctx, profile, outcome, predictor)
    return [outcomes[b] for b in budgets_ms], searches


def _never_worse_with_more_budget(ascending: Sequence[BudgetOutcome]) -> None:
    """A larger budget must not ship a less accurate subnet than a smaller one did.

    The search ranks by a predicted accuracy, while the emitted accuracy is the evaluated
    one; where they disagree, the subnet emitted for a smaller budget (measured within it,
    so within every larger one) replaces the larger budget's pick.
    """
    best: BudgetOutcome | None = None
    for outcome in ascending:
        if not outcome.emitted:
            continue
        if best is not None and best.accuracy > outcome.accuracy:
            assert best.folder is not None and outcome.folder is not None
            log.info("%s, %g ms budget: %s (top-1 %.2f) beats the pick %s (top-1 %.2f); reusing it",
                     outcome.device, outcome.budget_ms, best.candidate.config.id, best.accuracy,
                     outcome.candidate.config.id, outcome.accuracy)
            outcome.rounds.append({"round": "reuse", "from_budget_ms": best.budget_ms,
                                   "subnet_id": best.candidate.config.id, "replaced": outcome.candidate.config.id})
            shutil.rmtree(outcome.folder)
            shutil.copytree(best.folder, outcome.folder)
            outcome.candidate, outcome.measured_ms, outcome.accuracy = best.candidate, best.measured_ms, best.accuracy
        else:
            best = outcome


def _measured_within(ctx: LoopContext, profile: Any, store: Any, predictor: Any,
                     budgets_ms: Sequence[float]) -> list[tuple[float, Candidate]]:
    """For budgets the search could not meet: the best-ranked subnet already measured within
    each (profiling measured the smallest subnet, so a budget above it is never left empty)."""
    from pipeline.predict.workflow import load_dataset

    if not budgets_ms:
        return []
    data = load_dataset(profile, ctx.space, store.path)
    if not len(data):
        return []
    rank = ctx.accuracy.rank.predict(list(data.configs))
    # as measured and stored (the dataset's latencies may be normalised for machine load)
    measured = [store.get(profile.name, i, *data.key_fields).median_ms for i in data.ids]
    picks = []
    for b in budgets_ms:
        within = [i for i, ms in enumerate(measured) if ms <= b]
        if within:
            best = max(within, key=lambda i: rank[i])
            config = data.configs[best]
            predicted = float(predictor.predict([config])[0])
            picks.append((b, Candidate(config, float(rank[best]), {profile.name: predicted})))
            log.info("%s, %g ms budget: falling back to %s, measured %.3f ms before", profile.name, b, config.id,
                     measured[best])
    return picks


def _compile(ctx: LoopContext, profile: Any, jobs: list[tuple[float, SubnetConfig]], session: Any,
             accuracy: dict[SubnetConfig, float]) -> list[Any]:
    """Compile (each subnet with its own recalibrated BN statistics) and verify on the
    device into each budget's artifact folder; `accuracy` receives each subnet's top-1."""
    from pipeline.compile import compile_many

    if not jobs:
        return []
    subnets, top1 = deployable(ctx.supernet, ctx.space, [c for _, c in jobs], ctx.accuracy)
    accuracy.update(top1)
    return compile_many(ctx.space, [c for _, c in jobs], profile, ctx.out, subnets,
                        out_dirs=[artifact_folder(ctx.out, profile.name, b) for b, _ in jobs],
                        checkpoint=ctx.checkpoint, workers=ctx.workers, session=session)


def _finish_manifest(ctx: LoopContext, profile: Any, outcome: BudgetOutcome, predictor: Any) -> None:
    """Fill accuracy (of the compiled weights) and predicted/measured latency into the manifest."""
    from pipeline.compile import Manifest

    cand = outcome.candidate
    assert cand is not None and outcome.folder is not None and outcome.accuracy is not None
    manifest = Manifest.read(outcome.folder)
    manifest.set_accuracy(outcome.accuracy, ctx.accuracy.source, ctx.accuracy.dataset)
    revision = getattr(predictor, "info", {}).get("revision")
    manifest.set_latency(predicted_ms=round(cand.latency[profile.name], 4), measured_ms=round(outcome.measured_ms, 4),
                         predictor=f"{profile.name} {getattr(predictor, 'kind', type(predictor).__name__)}"
                                   + (f" r{revision}" if revision else ""))
    manifest.write(outcome.folder)
