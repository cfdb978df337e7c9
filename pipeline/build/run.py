"""`run_build`: supernet -> per device (up, kernels, profile, predictor, closed loop) -> report.

Everything costly is cached where it is produced (accuracy evaluations, measurements in
the store, compiled libraries, the predictor files), so re-running the same command
after Ctrl-C or a lost device resumes instead of starting over; `build.json` is written
after every stage and says how far the build got.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pipeline.build.accuracy import accuracy_for, load_supernet_for
from pipeline.build.config import BuildConfig
from pipeline.build.devices import (bring_up_in_background, fit_latency, kernels_status, profile_device,
                                    select_profiles)
from pipeline.build.journal import Journal
from pipeline.build.loop import BudgetOutcome, LoopContext, measured_subnets, nsga2_config, run_loop, shipped_classes
from pipeline.build.report import DevicePlot, plot_pareto, write_report
from pipeline.device.profile import DeviceProfile
from pipeline.device.session import device_answers
from pipeline.errors import DeviceError, PipelineError, is_device_failure
from pipeline.profiling import compile_reference
from pipeline.search import Budget, SearchResult
from pipeline.search.budgets import quantile_budgets
from pipeline.space import SearchSpace
from pipeline.space.arch import count_flops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    """The artifact folders per (device, budget), and the summary written to build.json."""

    out: Path
    outcomes: tuple[BudgetOutcome, ...]
    summary: dict[str, Any]

    @property
    def complete(self) -> bool:
        """Every budget on every device got an artifact within it."""
        return all(o.emitted for o in self.outcomes)


def _budgets(cfg: BuildConfig, profile: Any, space: SearchSpace, num_classes: int) -> list[float]:
    """The user's budgets, else at the 20..80 % quantiles of the profiled subnets' latencies.

    Raw medians, not the contention-corrected ones the predictor learns from: a budget is
    checked against a raw measurement. Only the profile's plan counts (it spreads over
    FLOPs), not whatever earlier builds measured around their own budgets.
    """
    if cfg.budgets_ms:
        return sorted(cfg.budgets_ms)
    from pipeline.predict.workflow import load_dataset
    from pipeline.profiling import sampling_plan

    data = load_dataset(profile, space, normalise=False, num_classes=num_classes)
    plan = {c.id for c in sampling_plan(space, cfg.profile_subnets)}
    profiled = [ms for i, ms in zip(data.ids, data.latency_ms) if i in plan]
    return quantile_budgets(profiled, cfg.n_budgets)


@dataclass(frozen=True)
class PreparedDevice:
    """A device ready for the closed loop: up, profiled, its latency model fitted, budgets set."""

    profile: DeviceProfile
    reference: Any  # pipeline.measure.Reference
    predictor: Any
    report: dict[str, Any]
    budgets: list[float]


def _prepare(cfg: BuildConfig, journal: Journal, space: SearchSpace, profile: DeviceProfile, num_classes: int
             ) -> PreparedDevice:
    """Kernels, profile (subnets and blocks) and the first latency fit of one device that is up,
    every subnet timed with the `num_classes` head the artifacts will have."""
    with journal.stage("kernels", profile.name) as st:
        st.update(kernels_status(profile))
    with journal.stage("profile", profile.name) as st:
        reference = compile_reference(space, profile, cfg.workers, num_classes)
        st.update(profile_device(profile, space, cfg.profile_subnets, cfg.profile_blocks, cfg.workers, reference,
                                 num_classes))
    with journal.stage("fit predictor", profile.name) as st:
        predictor, report = fit_latency(profile, space, num_classes)
        st.update(report)
    budgets = _budgets(cfg, profile, space, num_classes)
    journal.data.setdefault("budgets_ms", {})[profile.name] = budgets
    return PreparedDevice(profile, reference, predictor, report, budgets)


def _shared_search(ctx: LoopContext, journal: Journal, devices: Sequence[PreparedDevice]) -> SearchResult:
    """Round 1 for every device at once: one NSGA-II run over accuracy and the latency on each
    device, whose Pareto set serves every (device, budget) pair; each device's loop then
    reads its picks from that set (`run_loop`'s `first`)."""
    from pipeline.search.nsga2 import nsga2_search

    budgets = [Budget.single(d.profile.name, b) for d in devices for b in d.budgets]
    with journal.stage("search", "every device") as st:
        result = nsga2_search(ctx.space, ctx.accuracy.rank, {d.profile.name: d.predictor for d in devices}, budgets,
                              nsga2_config(ctx.evolution))
        st.update(method="nsga2", devices=[d.profile.name for d in devices], budgets=len(budgets),
                  candidates=result.n_evaluated, front=len(result.front), hypervolume=result.hypervolume)
    return result


def run_build(cfg: BuildConfig, profiles: Sequence[Any] | None = None) -> BuildResult:
    """The whole flow; see the module docstring. Raises after writing build.json on failure.

    `profiles` (live `DeviceProfile` objects, e.g. pointed at a farm) are the devices
    built for as they are; default: those `cfg` names or its target's reachable ones."""
    from pipeline.device import MeasurementStore, open_session

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(out / "build.json", {"target": cfg.target, "out": str(out)})
    outcomes: list[BudgetOutcome] = []
    plots: dict[str, DevicePlot] = {}
    in_use: DeviceProfile | None = None  # the device up and in use, to tell it lost from a bug
    try:
        with journal.stage("supernet") as st:
            supernet, checkpoint, space = load_supernet_for(cfg)
            num_classes = shipped_classes(space, supernet)
            weights = str(checkpoint) if checkpoint is not None else "random-init (seeded; no checkpoint)"
            st.update(checkpoint=weights, space=space.name, num_classes=num_classes)
        journal.data.update(supernet=weights, space=space.name)
        profiles = list(profiles) if profiles is not None else select_profiles(cfg)
        journal.data["devices"] = [p.name for p in profiles]
        bringing_up = bring_up_in_background(profiles)  # overlaps the accuracy stage
        with journal.stage("accuracy") as st:
            accuracy = accuracy_for(cfg, space, supernet, checkpoint)
            st.update(accuracy.info)
        journal.data["accuracy"] = accuracy.info
        ctx = LoopContext(space, supernet, str(checkpoint) if checkpoint else None, accuracy, cfg.evolution, out, cfg.max_rounds, cfg.workers,
                          cfg.measure_top, cfg.search)
        prepared: list[PreparedDevice] = []
        for profile in profiles:
            with journal.stage("device up", profile.name) as st:  # seconds: how long the build waited for it
                profile, info = bringing_up[profile.name].result()
                st.update(info)
            in_use = profile
            prepared.append(_prepare(cfg, journal, space, profile, num_classes))
        shared = _shared_search(ctx, journal, prepared) if cfg.search == "nsga2" and len(prepared) > 1 else None
        for dev in prepared:
            profile = in_use = dev.profile
            timings: dict[str, float] = {}
            refits: list[dict[str, Any]] = []

            def refit(profile=profile, refits=refits) -> Any:
                fitted, fit_report = fit_latency(profile, space, num_classes)
                refits.append(fit_report)
                return fitted

            log.info("stage search, compile+verify, measure [%s]: start (budgets %s ms, up to %d rounds each)",
                     profile.name, ", ".join(f"{b:g}" for b in dev.budgets), cfg.max_rounds)
            with MeasurementStore() as store, open_session(profile) as session:
                device_outcomes, searches = run_loop(ctx, profile, dev.budgets, dev.predictor, refit, store, session,
                                                     dev.reference, timings, first=shared)
                measured = measured_subnets(profile, space, store, num_classes)
            details = {"search": {"method": cfg.search, "rounds": len(searches),
                                  "candidates": sum(s.n_evaluated for s in searches),
                                  **({"hypervolume": [s.hypervolume for s in searches]}
                                     if cfg.search == "nsga2" else {}),
                                  **({"round_1": "the search over every device"} if shared is not None else {})},
                       "refit": {"fits": refits}}
            for name in ("search", "measure", "evaluate", "refit", "compile+verify"):
                if name in timings:
                    journal.record(name, profile.name, timings[name], **details.get(name, {}))
            journal.data.setdefault("latency_model", {})[profile.name] = refits[-1] if refits else dev.report
            outcomes += device_outcomes
            ranks = accuracy.rank.predict(list(measured)) if measured else []
            scored = getattr(accuracy.exact, "evaluated", {})  # evaluated top-1 where there is one
            plots[profile.name] = (searches[0], device_outcomes,
                                   [(ms, scored.get(c.id, float(r))) for (c, ms), r in zip(measured.items(), ranks)])
            journal.data.setdefault("chosen", []).extend(o.to_dict() for o in device_outcomes)
            journal.write()
        with journal.stage("emit") as st:
            journal.data["mflops"] = {o.candidate.config.id: round(count_flops(space, o.candidate.config,
                                                                               num_classes) / 1e6, 3)
                                      for o in outcomes if o.candidate is not None}
            plot_pareto(out / "pareto.png", plots)
            st.update(artifacts=sum(o.emitted for o in outcomes), budgets=len(outcomes))
        status = "ok" if all(o.emitted for o in outcomes) else "incomplete"
        journal.finish(status)
        write_report(out / "report.md", journal.data, outcomes)
    except KeyboardInterrupt:
        journal.finish("interrupted (Ctrl-C): measurements so far are in the store; run the same command to resume")
        raise
    except PipelineError as err:
        journal.finish(f"failed: {err}")
        raise
    except Exception as err:
        journal.finish(f"failed: {type(err).__name__}: {err}".splitlines()[0])
        lost = lost_device_error(err, in_use)
        if lost is not None:
            raise lost from err
        raise
    return BuildResult(out, tuple(outcomes), journal.data)


def lost_device_error(err: Exception, profile: DeviceProfile | None) -> DeviceError | None:
    """A one-line error if `err` came from losing the device in use, else None (a bug: keep it).

    Decided by asking the device, not by the error's wording: a lost device raises
    TVM errors that need not say "connection" ("code=kShutdown"), and a bug's message may.
    """
    if profile is None or not is_device_failure(err) or device_answers(profile):
        return None
    first_line = (str(err).strip().splitlines() or [""])[0]
    return DeviceError(f"lost device {profile.name} during the build ({type(err).__name__}: {first_line}); it no "
                       "longer answers; everything measured so far is in the store: bring the device back and run "
                       "the same command to resume")
