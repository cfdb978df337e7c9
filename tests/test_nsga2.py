"""NSGA-II: sorting, crowding, hypervolume against brute force; the search and its Pareto set."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import reference_file

from pipeline.errors import ConfigError
from pipeline.search import Budget, FlopsModel, ShapeLatencyModel, TreeForest, random_search
from pipeline.search.latency import ParamsModel
from pipeline.search.nsga2 import (
    NSGA2Config,
    ParetoResult,
    candidates_matrix,
    cost_models,
    normalised_hypervolume,
    nsga2,
    nsga2_search,
    parse_objectives,
)
from pipeline.search.pareto import crowding_distance, dominates, hypervolume, non_dominated_sort
from pipeline.space import SearchSpace



@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load("attentivenas")


@pytest.fixture(scope="module")
def official() -> TreeForest:
    return TreeForest.load(reference_file("attentivenas/acc_predictor_trees.npz"))  # fails under CI if absent


def test_non_dominated_sort_brute_force():
    f = np.random.default_rng(0).integers(0, 6, size=(120, 3)).astype(float)
    fronts = non_dominated_sort(f)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(120))
    rank = np.empty(120, dtype=int)
    for r, front in enumerate(fronts):
        rank[front] = r
    for i, j in itertools.product(range(120), repeat=2):
        better = np.all(f[i] <= f[j]) and np.any(f[i] < f[j])
        if better:
            assert rank[i] < rank[j]
    for r, front in enumerate(fronts[1:], start=1):  # each later point is dominated by the front before it
        assert dominates(f[fronts[r - 1]], f[front]).any(axis=0).all()


def test_crowding_distance_by_hand():
    f = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(f)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx(3 / 4 + 3 / 4)  # neighbours 0 and 3 on x (span 4), 4 and 1 on y
    assert d[2] == pytest.approx(3 / 4 + 2 / 4)


@pytest.mark.parametrize("dims", [2, 3, 4, 5])
def test_hypervolume_counts_grid_cells(dims):
    """Integer points, reference 5: the volume is the number of unit cells dominated
    (exact up to 4 objectives, a Monte-Carlo estimate within 2% beyond)."""
    rng = np.random.default_rng(dims)
    f = rng.integers(0, 5, size=(12, dims)).astype(float)
    ref = np.full(dims, 5.0)
    cells = np.array(list(itertools.product(range(5), repeat=dims)), dtype=float)
    covered = np.any(np.all(f[:, None, :] <= cells[None, :, :], axis=2), axis=0)
    rel = 1e-9 if dims <= 4 else 0.02
    assert hypervolume(f, ref) == pytest.approx(float(covered.sum()), rel=rel)
    assert hypervolume(np.vstack([f, ref + 1]), ref) == pytest.approx(float(covered.sum()), rel=rel)


def test_parse_objectives():
    assert parse_objectives("accuracy,latency,params", ["a", "b"]) == ("accuracy", "latency:a", "latency:b", "params")
    assert parse_objectives("accuracy, latency:b, mflops", ["a", "b"]) == ("accuracy", "latency:b", "mflops")
    for bad, match in (("latency", "lack accuracy"), ("accuracy", "at least one cost"),
                       ("accuracy,latency:c", "without a latency model"), ("accuracy,size", "unknown objective")):
        with pytest.raises(ConfigError, match=match):
            parse_objectives(bad, ["a", "b"])


def test_front_over_many_objectives(space, tmp_path):
    """Two devices, params and MFLOPs: the front is non-dominated over all of them among
    everything scored, stays inside the limits, and serves budgets like a brute-force pick."""
    latency = {"fast": ShapeLatencyModel(space), "slow": ShapeLatencyModel(space, dense_gmacs=10.0,
                                                                           depthwise_gmacs=0.5)}
    objectives = parse_objectives("accuracy,latency,params,mflops", list(latency))
    costs = cost_models(space, latency, objectives)
    # accuracy: params-heavy nets score better, but not monotonically in MFLOPs
    accuracy = ParamsModel(space)
    limits = Budget((("fast", 40.0), ("slow", 250.0)))
    from pipeline.search import Evaluator

    ev = Evaluator(accuracy, costs)
    result = nsga2(space, accuracy, costs, objectives, NSGA2Config(population=24, generations=4, seed=1),
                   limits, evaluator=ev, progress=False)
    assert result.n_evaluated == ev.n_scored > 24
    front = result.front
    assert len(front) >= 3
    for c in front:
        assert c.latency["fast"] <= 40.0 and c.latency["slow"] <= 250.0
        assert c.latency["params"] == pytest.approx(ParamsModel(space).predict([c.config])[0])
        assert c.latency["mflops"] == pytest.approx(FlopsModel(space).predict([c.config])[0])
    _, _, lat = ev.arrays()
    everything = [ev.candidate(i) for i in range(ev.n_scored)
                  if lat[i, 0] <= 40.0 and lat[i, 1] <= 250.0]
    f_all, f_front = candidates_matrix(everything, objectives), candidates_matrix(front, objectives)
    assert not dominates(f_all, f_front).any()
    for ms in (15.0, 25.0, 40.0):
        budget = Budget((("fast", ms), ("slow", 250.0)))
        within = [c for c in everything if c.latency["fast"] <= ms]
        assert result.best(budget).accuracy == pytest.approx(max(c.accuracy for c in within))
    with pytest.raises(ConfigError, match="latency:other"):
        result.best(Budget.single("other", 5.0))
    saved = ParetoResult.load(result.save(tmp_path / "pareto.json"))
    assert [c.config for c in saved.front] == [c.config for c in front]
    assert saved.hypervolume == result.hypervolume and saved.objectives == objectives
    assert saved.front[0].latency["mflops"] == pytest.approx(front[0].latency["mflops"], abs=1e-4)


def test_nsga2_beats_random_on_hypervolume(space, official):
    """Same number of evaluations: NSGA-II's front dominates more of the objective space."""
    latency = {"x86": ShapeLatencyModel(space)}
    objectives = ("accuracy", "latency:x86")
    gaps = []
    for seed in (0, 1):
        evo = nsga2(space, official, latency, objectives, NSGA2Config(population=40, generations=8, seed=seed),
                    progress=False)
        rnd = random_search(space, official, latency, [Budget.single("x86", 1e9)], evo.n_evaluated, seed)
        gaps.append(evo.hypervolume - normalised_hypervolume(rnd.front, objectives, evo.bounds))
    assert min(gaps) > 0.01, gaps


def test_nsga2_search_serves_every_budget(space, official):
    latency = {"x86": ShapeLatencyModel(space), "mf": FlopsModel(space)}
    budgets = [Budget((("x86", ms), ("mf", mf))) for ms, mf in ((12.0, 400.0), (20.0, 700.0), (30.0, 900.0))]
    result = nsga2_search(space, official, latency, budgets, NSGA2Config(population=30, generations=4),
                          progress=False)
    assert result.method == "nsga2" and result.hypervolume > 0
    for budget, best in zip(budgets, result.best):
        limits = budget.to_dict()
        assert best is not None and best.latency["x86"] <= limits["x86"] and best.latency["mf"] <= limits["mf"]
    assert result.best[0].accuracy <= result.best[1].accuracy <= result.best[2].accuracy
    assert all(c.latency["x86"] <= 30.0 and c.latency["mf"] <= 900.0 for c in result.front)
    assert result.to_dict()["hypervolume"] == result.hypervolume


def test_config_validation():
    with pytest.raises(ConfigError, match="population >= 4"):
        NSGA2Config(population=2)


def test_cli_nsga2_with_a_proxy_on_two_devices(tmp_path, pipeline_cache):
    """`pipeline search --method nsga2 --accuracy proxy:synflow`: real supernet checkpoint,
    real image folders, two saved device predictors; the saved set serves the budgets."""
    import json

    import torch
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.model import Supernet, save_checkpoint
    from pipeline.predict import fit_kind, save_predictor
    from pipeline.profiling import sampling_plan
    from pipeline.train import SyntheticSpec, generate_synthetic

    demo = SearchSpace.load("demo")
    data = generate_synthetic(tmp_path / "data", SyntheticSpec(num_classes=4, train_per_class=16, val_per_class=4,
                                                               resolution=32, seed=3))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "net.pt", Supernet(demo, num_classes=4))
    plan = sampling_plan(demo, 30)
    for device, factor in (("dev-a", 1.0), ("dev-b", 3.0)):
        ms = FlopsModel(demo).predict(plan) * factor / 10 + 0.1
        save_predictor(fit_kind("ridge", device, demo, plan, ms))
    (tmp_path / "evo.yaml").write_text("population: 8\nparents: 4\ngenerations: 2\nseed: 1\n")
    out = tmp_path / "pareto.json"
    args = ["search", "--device", "dev-a", "--device", "dev-b", "--method", "nsga2",
            "--objectives", "accuracy,latency,params", "--accuracy", "proxy:synflow",
            "--supernet", str(checkpoint), "--data", str(data), "--budgets-ms", "0.6,1.2",
            "--evolution-config", str(tmp_path / "evo.yaml"), "--pareto-out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "hypervolume" in result.output and str(out) in result.output
    pareto = ParetoResult.load(out)
    assert pareto.objectives == ("accuracy", "latency:dev-a", "latency:dev-b", "params")
    assert all(c.latency["dev-a"] <= 1.2 and c.latency["dev-b"] <= 1.2 for c in pareto.front)
    assert list((pipeline_cache / "proxies").glob("synflow-*.jsonl"))  # scores memoised on disk
    again = CliRunner().invoke(main, args + ["--json"]).output
    printed = json.loads(again[again.index('{"method"'):].splitlines()[0])  # after the progress bars
    for pick, ms in zip(printed["best"], (0.6, 1.2)):
        if pick["candidate"] is not None:
            assert max(pick["candidate"]["latency_ms"].values()) <= ms
    assert printed["n_evaluated"] == pareto.n_evaluated  # same seed: the same search
    bad = CliRunner().invoke(main, ["search", "--device", "dev-a", "--method", "evolution"])
    assert bad.exit_code == 2 and "needs --budgets-ms" in bad.output


def test_one_search_serves_each_device_budget_pair(space):
    """What the build needs: budgets on different devices, one run, each pick the most
    accurate scored subnet within its own device's budget."""
    latency = {"phone": ShapeLatencyModel(space), "board": ShapeLatencyModel(space, dense_gmacs=20.0)}
    pairs = [("phone", 20.0), ("phone", 35.0), ("board", 30.0), ("board", 50.0)]
    budgets = [Budget.single(d, ms) for d, ms in pairs]
    result = nsga2_search(space, ParamsModel(space), latency, budgets, NSGA2Config(population=16, generations=2),
                          progress=False)
    assert result.n_evaluated > 16
    for (device, ms), best in zip(pairs, result.best):
        assert best is not None and best.latency[device] <= ms
        within = [c for c in result.front if c.latency[device] <= ms]
        assert best.accuracy == max(c.accuracy for c in within)
    assert result.best[0].accuracy <= result.best[1].accuracy and result.best[2].accuracy <= result.best[3].accuracy
    # the region searched is the loosest budget on each device
    assert all(c.latency["phone"] <= 35.0 and c.latency["board"] <= 50.0 for c in result.front)
