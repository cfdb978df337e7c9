"""`pipeline build` end to end on small settings: x86 host, re-run (resume), closed loop, emulated arm64.

Real parts throughout: a demo-space supernet checkpoint (random weights, 3 classes), a
tiny synthetic image set, real TVM compilation, on-device verification and timing, the
SQLite store and the fitted latency predictor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.build import BuildConfig, BuildResult, run_build
from pipeline.build.loop import LoopContext, run_loop
from pipeline.errors import ConfigError
from pipeline.paths import BUILTIN_PROFILES
from pipeline.search import EvolutionConfig

STAGES = {"supernet", "accuracy", "device up", "kernels", "profile", "fit predictor", "search",
          "compile+verify", "measure", "emit"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A demo-space supernet checkpoint and a 3-class synthetic image set."""
    from pipeline.model import Supernet, save_checkpoint
    from pipeline.space import SearchSpace
    from pipeline.train.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("tiny")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_checkpoint(root / "supernet.pt", Supernet(SearchSpace.load("demo"), num_classes=3))
    generate(root / "data", SyntheticSpec(num_classes=3, train_per_class=16, val_per_class=8, resolution=64))
    return {"supernet": root / "supernet.pt", "data": root / "data"}


def small_config(tiny: dict[str, Path], out: Path, **overrides) -> BuildConfig:
    settings = dict(supernet=tiny["supernet"], data=tiny["data"], out=out, profile_subnets=4, accuracy_subnets=6,
                    recalib_batches=1, eval_batch_size=48, max_rounds=2, n_budgets=2, workers=2,
                    evolution=EvolutionConfig(population=24, parents=6, generations=4))
    return BuildConfig(**{**settings, **overrides})


def check_build(result: BuildResult) -> None:
    """Artifacts, manifests, report and journal of a finished build."""
    from pipeline.compile import Manifest

    summary = json.loads((result.out / "build.json").read_text())
    assert summary["status"] in ("ok", "incomplete")
    assert STAGES <= {s["name"] for s in summary["stages"]}
    assert all(s["seconds"] >= 0 for s in summary["stages"])
    assert (result.out / "pareto.png").stat().st_size > 1000
    report = (result.out / "report.md").read_text()
    emitted = [o for o in result.outcomes if o.emitted]
    assert emitted, [o.reason for o in result.outcomes]
    for o in emitted:
        manifest = Manifest.read(o.folder)  # schema-validated
        assert manifest.verified and manifest.device == o.device
        assert manifest.subnet_id == o.candidate.config.id
        latency, accuracy = manifest["latency"], manifest["accuracy"]
        assert latency["measured_ms"] <= o.budget_ms
        assert latency["predicted_ms"] == pytest.approx(o.candidate.latency[o.device], abs=1e-3)
        assert 0.0 <= accuracy["top1"] <= 100.0 and accuracy["source"].startswith("supernet")
        assert (o.folder / "model.so").is_file() and (o.folder / "model.onnx").is_file()
        assert o.candidate.config.id in report
    for o in result.outcomes:
        if not o.emitted:
            assert o.reason and not any(result.out.glob(f"{o.device}-{o.budget_ms:g}ms"))


@dataclass
class HostBuild:
    result: BuildResult
    config: BuildConfig


@pytest.fixture(scope="module")
def host_build(tiny, tmp_path_factory):
    """One small x86-host build in its own cache (kept for the tests that re-use it)."""
    root = tmp_path_factory.mktemp("host-build")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(root / "cache"))
        cfg = small_config(tiny, root / "out", target="x86_64", devices=("x86-host",))
        yield HostBuild(run_build(cfg), cfg)


def test_host_build_end_to_end(host_build):
    result = host_build.result
    check_build(result)
    assert [o.device for o in result.outcomes] == ["x86-host", "x86-host"]
    budgets = result.summary["budgets_ms"]["x86-host"]
    assert len(budgets) == 2 and budgets[0] < budgets[1]  # spread over the measured range
    # every measured pick is in the store, for the predictor's next fit
    from pipeline.device import MeasurementStore

    with MeasurementStore() as store:
        stored = {r.subnet_id: r.meta.get("source") for r in store.records("x86-host")}
    assert list(stored.values()).count("profile") == 4
    assert all(o.candidate.config.id in stored for o in result.outcomes if o.emitted)


def test_host_build_rerun_resumes(host_build):
    """The same command again measures and evaluates nothing new."""
    again = run_build(host_build.config)
    stages = {s["name"]: s for s in again.summary["stages"]}
    assert stages["profile"]["measured"] == 0 and stages["profile"]["skipped"] == 4
    assert stages["accuracy"]["newly_evaluated"] == 0
    check_build(again)


def test_closed_loop_tightens_after_a_miss(host_build, tiny):
    """An optimistic latency model makes the pick miss its budget: the miss is measured and
    stored, the budget tightened by the observed error, and nothing over budget emitted; a
    budget some measured subnet meets is met in the end."""
    from pipeline.build.accuracy import supernet_setup
    from pipeline.build.devices import fit_latency
    from pipeline.device import MeasurementStore, load_profile, open_session
    from pipeline.model import load_supernet
    from pipeline.predict.workflow import load_dataset

    cfg = host_build.config
    profile = load_profile("x86-host")
    supernet = load_supernet(cfg.supernet)
    space = supernet.space
    real, _ = fit_latency(profile, space)

    class Optimistic:  # claims every subnet is 100x faster than the fitted model says
        def predict(self, configs):
            return real.predict(configs) / 100

    # below every measured subnet: whatever the optimistic model picks must miss it;
    # exactly the fastest measured subnet's latency: met at the latest by the fallback to it
    with MeasurementStore() as store:
        fastest = min(store.get("x86-host", i, *data.key_fields).median_ms
                      for data in [load_dataset("x86-host", space.name)] for i in data.ids)
    budget = round(fastest * 0.5, 4)
    accuracy = supernet_setup(space, supernet, cfg.supernet, cfg.data, cfg.accuracy_subnets,
                              cfg.recalib_batches, cfg.eval_batch_size)
    out = cfg.out.parent / "loop"
    ctx = LoopContext(space, supernet, str(cfg.supernet), accuracy, cfg.evolution, out, 2, 2)
    timings: dict[str, float] = {}
    with MeasurementStore() as store, open_session(profile) as session:
        (outcome, met), _ = run_loop(ctx, profile, [budget, fastest], Optimistic(), lambda: real, store, session,
                                     timings)
        stored = {r.subnet_id for r in store.records("x86-host")}
    first = outcome.rounds[0]
    assert first["measured_ms"] > budget
    assert first["subnet_id"] in stored  # the miss is in the store for the predictor
    assert len(outcome.rounds) == 2
    assert outcome.rounds[1]["effective_ms"] == pytest.approx(budget * first["predicted_ms"] / first["measured_ms"],
                                                              rel=1e-2)
    assert not outcome.emitted and outcome.reason
    assert not (out / f"x86-host-{budget:g}ms").exists()  # the miss's artifact was removed
    assert met.emitted and met.measured_ms <= fastest
    assert {"search", "compile+verify", "measure"} <= set(timings)


def test_build_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--target"):
        BuildConfig(target="mips")
    with pytest.raises(ConfigError, match="--data"):
        BuildConfig(supernet=tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="not arm64"):
        from pipeline.build.devices import select_profiles

        select_profiles(BuildConfig(target="arm64", devices=("x86-host",)))


@pytest.mark.slow
def test_emulated_arm64_build(emulated_arm64, tiny, tmp_path, monkeypatch):
    """`--target arm64` with no --device picks the emulated device (already up: reused)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    raw = yaml.safe_load((BUILTIN_PROFILES / "arm64-emulated.yaml").read_text())
    raw["connection"]["port"] = emulated_arm64.connection.port
    (profiles / "arm64-emulated.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PIPELINE_PROFILES", str(profiles))
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    result = run_build(small_config(tiny, tmp_path / "out", target="arm64"))
    check_build(result)
    stages = {s["name"]: s for s in result.summary["stages"]}
    assert stages["device up"]["started"] is False  # the running device was found, not restarted
    assert {o.device for o in result.outcomes} == {"arm64-emulated"}
    for o in result.outcomes:
        if o.emitted:
            assert "aarch64" in json.loads((o.folder / "manifest.json").read_text())["build"]["target"]


def test_larger_budget_never_ships_a_less_accurate_subnet(tmp_path):
    """Where the ranker and the evaluation disagree, a larger budget reuses the smaller
    budget's more accurate (and already measured within budget) artifact."""
    from pipeline.build.loop import BudgetOutcome, _never_worse_with_more_budget
    from pipeline.search import Candidate
    from pipeline.space import SearchSpace

    space = SearchSpace.load("demo")
    small_cfg, large_cfg = space.smallest(), space.largest()
    outcomes = []
    for budget, cfg, acc, ms in [(10.0, small_cfg, 71.0, 9.0), (20.0, large_cfg, 68.0, 18.0)]:
        folder = tmp_path / f"x86-host-{budget:g}ms"
        folder.mkdir()
        (folder / "manifest.json").write_text(cfg.id)
        outcomes.append(BudgetOutcome("x86-host", budget, budget, folder, Candidate(cfg, acc, {"x86-host": ms}),
                                      ms, acc))
    _never_worse_with_more_budget(outcomes)
    small, large = outcomes
    assert large.candidate.config == small_cfg and large.accuracy == 71.0 and large.measured_ms == 9.0
    assert (large.folder / "manifest.json").read_text() == small_cfg.id
    assert large.rounds[-1] == {"round": "reuse", "from_budget_ms": 10.0, "subnet_id": small_cfg.id,
                                "replaced": large_cfg.id}
    assert small.candidate.config == small_cfg and small.rounds == []
