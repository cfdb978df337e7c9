"""Search: official accuracy predictor, evolution vs random, budgets, Pareto front."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import reference_file
from scipy.stats import kendalltau

from pipeline.errors import ConfigError
from pipeline.search import (
    Budget,
    Evaluator,
    EvolutionConfig,
    FittedAccuracyPredictor,
    FlopsModel,
    TreeForest,
    ShapeLatencyModel,
    SupernetAccuracy,
    evolve,
    flops_budgets,
    flops_constrained_search,
    pareto_indices,
    random_search,
)
from pipeline.search.budgets import quantile_budgets
from pipeline.space import SearchSpace, encode_many, named_configs



@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load("attentivenas")


@pytest.fixture(scope="module")
def trees_path() -> Path:
    return reference_file("attentivenas/acc_predictor_trees.npz")


@pytest.fixture(scope="module")
def official(trees_path: Path) -> TreeForest:
    return TreeForest.load(trees_path)


def test_official_predictor_published_values(official):
    named = named_configs()
    acc = official.predict([named[f"a{i}"] for i in range(7)])
    assert acc[0] == pytest.approx(67.5, abs=0.1)
    assert acc[6] == pytest.approx(71.6, abs=0.1)
    assert np.all(np.diff(acc) > 0), acc


def test_official_predictor_matches_tree_walk(space, official, trees_path):
    """The vectorised forest equals a plain walk of every tree, node by node."""
    rng = random.Random(3)
    configs = [space.sample(rng) for _ in range(40)]
    x = encode_many(configs)
    with np.load(trees_path) as z:
        trees = [{p: z[f"tree{t:03d}_{p}"] for p in ("left", "right", "feature", "threshold", "value")}
                 for t in range(100)]
    expected = []
    for row in x:
        leaves = []
        for tree in trees:
            node = 0
            while tree["left"][node] >= 0:
                go_left = row[tree["feature"][node]] <= tree["threshold"][node]
                node = tree["left"][node] if go_left else tree["right"][node]
            leaves.append(tree["value"][node])
        expected.append(np.mean(leaves))
    np.testing.assert_allclose(official.predict(configs), expected, rtol=0, atol=1e-9)


def test_official_predictor_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        TreeForest.load(tmp_path / "nope.npz")


def test_evolution_beats_random_at_equal_samples(space, official):
    latency = {"x86": ShapeLatencyModel(space)}
    budgets = [Budget.single("x86", ms) for ms in (12.0, 16.0, 20.0)]
    gains = []
    for seed in (0, 1):
        evo = evolve(space, official, latency, budgets,
                     EvolutionConfig(population=40, parents=10, generations=8, seed=seed), progress=False)
        rnd = random_search(space, official, latency, budgets, samples=evo.n_evaluated, seed=seed)
        for budget, e, r in zip(budgets, evo.best, rnd.best):
            assert e is not None
            gains.append(e.accuracy - (r.accuracy if r else official.predict([space.smallest()])[0]))
    # the official predictor spans ~67-72 %; a real gain is several tenths of a point
    assert np.mean(gains) > 0.5, gains
    assert min(gains) >= 0.0, gains


def test_budgets_respected_on_several_devices(space, official):
    """Two devices with different cost models; every pick meets both limits."""
    latency = {"fast": ShapeLatencyModel(space), "flops": FlopsModel(space)}
    budgets = [Budget((("fast", ms), ("flops", mf))) for ms, mf in ((12.0, 400.0), (20.0, 300.0), (30.0, 900.0))]
    result = evolve(space, official, latency, budgets,
                    EvolutionConfig(population=30, parents=8, generations=4, seed=5), progress=False)
    for budget, best in zip(budgets, result.best):
        assert best is not None
        limits = budget.to_dict()
        assert best.latency["fast"] <= limits["fast"] and best.latency["flops"] <= limits["flops"]
        # check the archive's numbers against the models themselves
        assert best.latency["fast"] == pytest.approx(latency["fast"].predict([best.config])[0])
        assert best.latency["flops"] == pytest.approx(latency["flops"].predict([best.config])[0])
    assert result.best[1].accuracy <= result.best[2].accuracy  # looser on both => no worse
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["best"][0]["candidate"]["id"] == result.best[0].config.id


def test_impossible_budget_gives_none(space):
    latency = {"x86": ShapeLatencyModel(space)}
    floor = latency["x86"].predict([space.smallest()])[0]
    budget = Budget.single("x86", floor * 0.5)
    result = evolve(space, FlopsModel(space), latency, [budget],
                    EvolutionConfig(population=10, parents=4, generations=2, max_draw_rounds=2), progress=False)
    assert result.best == (None,)


def test_pareto_indices_brute_force():
    rng = np.random.default_rng(0)
    acc = rng.normal(size=300).round(1)
    lat = rng.random((300, 2)).round(1)
    front = set(pareto_indices(acc, lat))

    def dominates(j, i):
        return (acc[j] >= acc[i] and np.all(lat[j] <= lat[i])
                and (acc[j] > acc[i] or np.any(lat[j] < lat[i])))

    for i in range(300):
        dominated = any(dominates(j, i) for j in range(300))
        if dominated:
            assert i not in front
        else:  # not dominated: it or an identical twin is on the front
            assert any(acc[j] == acc[i] and np.all(lat[j] == lat[i]) for j in front)


def test_search_front_is_non_dominated(space, official):
    latency = {"x86": ShapeLatencyModel(space)}
    evaluator = Evaluator(official, latency)
    evolve(space, official, latency, [Budget.single("x86", 15.0)],
           EvolutionConfig(population=30, parents=8, generations=3), evaluator=evaluator, progress=False)
    front = evaluator.pareto_front()
    _, acc, lat = evaluator.arrays()
    assert len(front) >= 3
    lats = [c.latency["x86"] for c in front]
    accs = [c.accuracy for c in front]
    assert lats == sorted(lats) and accs == sorted(accs)  # faster is less accurate along the front
    for c in front:
        better = (acc >= c.accuracy) & (lat[:, 0] <= c.latency["x86"])
        strictly = (acc > c.accuracy) | (lat[:, 0] < c.latency["x86"])
        assert not np.any(better & strictly)


def test_flops_constrained_baseline(space, official):
    latency = {"x86": ShapeLatencyModel(space)}
    budgets = [Budget.single("x86", ms) for ms in (12.0, 20.0)]
    converted = flops_budgets(space, latency, budgets)
    mflops = [b.to_dict()["x86"] for b in converted]
    assert 150 < mflops[0] < mflops[1] < 2000
    result = flops_constrained_search(space, official, latency, budgets,
                                      EvolutionConfig(population=30, parents=8, generations=3), progress=False)
    for limit, best in zip(mflops, result.best):
        assert FlopsModel(space).predict([best.config])[0] <= limit
        # reported latency is the real model's, whether or not it meets the ms budget
        assert best.latency["x86"] == pytest.approx(latency["x86"].predict([best.config])[0])


def test_fitted_predictor_ranks_held_out(space, official):
    rng = random.Random(0)
    configs = [space.sample(rng) for _ in range(400)]
    truth = official.predict(configs)
    fitted = FittedAccuracyPredictor(n_estimators=50).fit(configs[:300], truth[:300])
    tau = kendalltau(fitted.predict(configs[300:]), truth[300:]).statistic
    assert tau > 0.5


def test_supernet_accuracy_memoised_on_disk(tmp_path, space):
    calls: list[int] = []
    flops = FlopsModel(space)

    def evaluate(configs):  # a deterministic stand-in score: MFLOPs / 10
        calls.append(len(configs))
        return flops.predict(configs) / 10

    rng = random.Random(1)
    configs = [space.sample(rng) for _ in range(5)]
    cache = tmp_path / "acc.jsonl"
    first = SupernetAccuracy(evaluate, cache, batch_size=2).predict(configs + configs[:2])
    assert sum(calls) == 5 and calls == [2, 2, 1]
    with cache.open("a") as fh:
        fh.write('{"id": "torn')  # a line cut by kill -9
    again = SupernetAccuracy(evaluate, cache)
    np.testing.assert_allclose(again.predict(configs), first[:5])
    assert sum(calls) == 5
    assert len(again.evaluated) == 5
    # what a ranker is refitted on: every evaluation so far, configs read back from the memo
    known, top1 = again.samples()
    assert sorted(c.id for c in known) == sorted(c.id for c in configs)
    np.testing.assert_allclose(top1, [first[configs.index(c)] for c in known])


def test_quantile_budgets_fall_across_the_measured_range():
    """Budgets at the 20/50/80 % quantiles (two digits), never tighter than 1.2x the fastest."""
    latencies = [10.0, 12.0, 15.0, 20.0, 26.0, 31.0, 40.0, 48.0, 57.0, 80.0]
    budgets = quantile_budgets(latencies, 3)
    expected = np.quantile(latencies, [0.2, 0.5, 0.8])
    assert len(budgets) == 3 and budgets == sorted(budgets)
    np.testing.assert_allclose(budgets, expected, rtol=0.05)  # two significant digits
    assert quantile_budgets([10.0, 10.5, 11.0], 1) == [12.0]  # the median is under 1.2x the fastest
    with pytest.raises(ConfigError, match="--budgets-ms"):
        quantile_budgets([10.0], 3)


def test_evolution_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="parents"):
        EvolutionConfig(population=10, parents=20)
    path = tmp_path / "evo.yaml"
    path.write_text("population: 50\nmutate_prob: 0.2\n")
    assert EvolutionConfig.load(path) == EvolutionConfig(population=50, mutate_prob=0.2)
    path.write_text("populaton: 50\n")
    with pytest.raises(ConfigError, match="unknown evolution settings"):
        EvolutionConfig.load(path)
