"""Latency predictor: features, lookup table, models, selection, saving, transfer (no device needed).

Latencies here come from a stated analytic device model (a per-block cost that is not
linear in FLOPs, a fixed overhead, 2% multiplicative noise): the tests check that the
predictor machinery is exact where it must be (features vs the space's own counts, LUT
sums, vectorised vs one-by-one, JSON round trip) and learns what is learnable. The real
device path is in test_predict_profile.py.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from pipeline.errors import ConfigError
from pipeline.predict import (BlockLatencyTable, PredictorNotFound, error_metrics, fit_kind,
                              fit_predictor, load_predictor, save_predictor)
from pipeline.predict.features import all_blocks, distinct_blocks, space_tables
from pipeline.predict.models import fit_trees
from pipeline.predict.transfer import transfer_study
from pipeline.profiling import sampling_plan
from pipeline.space import SearchSpace, encode_many
from pipeline.space.arch import block_specs, count_flops, count_params

DEMO = "demo"


def block_cost(block, dw_factor: float = 1.0) -> float:
    """Analytic device: ms per block, superlinear in depthwise size, plus per-block overhead."""
    dw = block.mid_channels * block.kernel_size**2 * block.out_size**2
    return 0.01 + 1.5e-8 * block.flops() + dw_factor * 4e-8 * dw**1.1 / 10


def device_latency(space, configs, rng, dw_factor: float = 1.0, noise: float = 0.02) -> np.ndarray:
    return np.array([(0.2 + sum(block_cost(b, dw_factor) for b in block_specs(space, c))) * rng.normal(1, noise)
                     for c in configs])


@pytest.fixture(scope="module")
def demo():
    space = SearchSpace.load(DEMO)
    configs = sampling_plan(space, 90)
    latency = device_latency(space, configs, np.random.default_rng(0))
    return space, configs, encode_many(configs), latency


@pytest.mark.parametrize("name", ["demo", "attentivenas"])
def test_vectorised_features_equal_the_space_counts(name):
    space = SearchSpace.load(name)
    rng = random.Random(1)
    configs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(50)]
    feats = space_tables(space).subnet_features(encode_many(configs))
    names = space_tables(space).feature_names()
    assert feats.shape == (len(configs), len(names))
    np.testing.assert_allclose(feats[:, names.index("total_mflops")],
                               [count_flops(space, c) / 1e6 for c in configs], rtol=1e-12)
    # the parameters a forward pass reads: the official count less each idle shortcut conv
    idle = [sum(b.in_channels * b.out_channels for b in block_specs(space, c) if not b.shortcut_conv)
            for c in configs]
    np.testing.assert_allclose(feats[:, names.index("total_mparams")],
                               [(count_params(space, c) - i) / 1e6 for c, i in zip(configs, idle)], rtol=1e-12)
    np.testing.assert_array_equal(feats[:, names.index("n_blocks")], [sum(c.depth) for c in configs])


def test_encoded_values_outside_the_space_are_refused():
    bad = SearchSpace.load("attentivenas").largest()
    with pytest.raises(ConfigError, match="not one of"):
        space_tables(SearchSpace.load(DEMO)).subnet_features(encode_many([bad]))


def test_lut_sums_the_measured_blocks_of_each_config(demo):
    space, configs, encoded, _ = demo
    entries = {b.key: block_cost(b) for b in all_blocks(space)}
    lut = BlockLatencyTable.build(space_tables(space), entries)
    expected = [sum(entries[b.key] for b in block_specs(space, c)) for c in configs]
    np.testing.assert_allclose(lut.block_sum(encoded), expected, rtol=1e-12)
    np.testing.assert_allclose(lut.coverage(encoded), 1.0)


def test_lut_estimates_unmeasured_blocks_and_says_so(demo):
    space, configs, encoded, _ = demo
    measured = distinct_blocks(space, configs[:10])
    lut = BlockLatencyTable.build(space_tables(space), {b.key: block_cost(b) for b in measured})
    coverage = lut.coverage(encoded)
    np.testing.assert_allclose(coverage[:10], 1.0)
    assert coverage[10:].min() < 1.0
    truth = np.array([sum(block_cost(b) for b in block_specs(space, c)) for c in configs])
    rel = np.abs(lut.block_sum(encoded) - truth) / truth
    assert np.median(rel[10:]) < 0.15  # the fallback is an estimate, not noise


def test_exported_trees_predict_like_sklearn(demo):
    space, _, encoded, latency = demo
    feats = space_tables(space).subnet_features(encoded)
    ours = fit_trees(feats, latency, n_trees=50, seed=3)
    theirs = GradientBoostingRegressor(n_estimators=50, max_depth=3, learning_rate=0.05, subsample=0.8,
                                       min_samples_leaf=2, random_state=3).fit(feats, latency)
    np.testing.assert_allclose(ours.predict(feats), theirs.predict(feats), rtol=1e-10)


@pytest.mark.parametrize("kind", ["ridge", "trees", "lut", "lut+ridge", "lut+trees", "lut-res", "lut-res+ridge", "rank"])
def test_batched_prediction_matches_one_by_one(demo, kind):
    space, configs, encoded, latency = demo
    lut = BlockLatencyTable.build(space_tables(space), {b.key: block_cost(b) for b in distinct_blocks(space, configs)})
    predictor = fit_kind(kind, "dev", space, encoded[:40], latency[:40], lut=lut)
    batch = predictor.predict(encoded)
    assert batch.shape == (len(configs),) and batch.dtype == np.float64
    one_by_one = np.array([predictor.predict([c])[0] for c in configs])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-12)
    np.testing.assert_allclose(predictor.predict(configs), batch, rtol=1e-12)


def test_selection_by_cv_learns_the_device(demo):
    space, configs, encoded, latency = demo
    lut = BlockLatencyTable.build(space_tables(space), {b.key: block_cost(b) for b in distinct_blocks(space, configs)})
    predictor = fit_predictor("dev", space, encoded[:50], latency[:50], [c.id for c in configs[:50]], lut=lut)
    info = predictor.info
    assert set(info["cv"]) == {"ridge", "trees", "lut", "lut+ridge", "lut+trees", "lut-res", "lut-res+ridge"}
    assert info["selected"] == predictor.kind == min(info["cv"], key=lambda k: info["cv"][k]["mape"])
    assert info["n_train"] == 50 and info["measurement_ids"] == [c.id for c in configs[:50]]
    held_out = error_metrics(latency[50:], predictor.predict(encoded[50:]))
    assert held_out["within_10pct"] >= 0.9 and held_out["kendall_tau"] >= 0.8


def test_error_metrics_values():
    m = error_metrics(np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.04, 2.3, 4.0, 7.0]))
    assert m["n"] == 4 and m["within_5pct"] == 0.5 and m["within_10pct"] == 0.5
    assert m["mape"] == pytest.approx((0.04 + 0.15 + 0 + 0.125) / 4)
    assert m["rmse_ms"] == pytest.approx(np.sqrt((0.04**2 + 0.3**2 + 1.0) / 4))
    assert m["kendall_tau"] == pytest.approx(1.0)


def test_saved_predictors_are_versioned_and_round_trip(demo, pipeline_cache):
    space, _, encoded, latency = demo
    with pytest.raises(PredictorNotFound, match="pipeline predictor fit --device dev"):
        load_predictor("dev")
    first = fit_kind("ridge", "dev", space, encoded[:30], latency[:30])
    second = fit_kind("trees", "dev", space, encoded[:30], latency[:30])
    p1, p2 = save_predictor(first), save_predictor(second)
    assert (p1.name, p2.name) == ("r0001.json", "r0002.json")
    assert json.loads(p2.read_text())["format_version"] == 1
    latest = load_predictor("dev")
    assert latest.kind == "trees" and latest.info["revision"] == 2
    np.testing.assert_allclose(latest.predict(encoded), second.predict(encoded), rtol=1e-12)
    np.testing.assert_allclose(load_predictor(p1).predict(encoded), first.predict(encoded), rtol=1e-12)


def per_resolution_device(space, configs, scales: dict[int, float], rng, noise: float = 0.02):
    """The analytic device with its blocks' share of time scaled per resolution (1 where absent),
    and the block table of exactly its blocks."""
    lut = BlockLatencyTable.build(space_tables(space), {b.key: block_cost(b) for b in distinct_blocks(space, configs)})
    factor = np.array([scales.get(c.resolution, 1.0) for c in configs])
    return lut, (0.2 + factor * lut.block_sum(encode_many(configs))) * rng.normal(1, noise, len(configs))


def test_lut_res_learns_what_each_resolution_pays_beyond_its_blocks(demo, pipeline_cache):
    """A device whose networks run 12 % under their block sum at one resolution only (what
    the full space's 256 px subnets do on x86-host): `lut` cannot fit that, `lut-res` finds
    it, keeps it through save/load, and predicts held-out subnets closer."""
    space, configs, encoded, _ = demo
    odd = space.resolutions[1]
    lut, device = per_resolution_device(space, configs, {odd: 0.88}, np.random.default_rng(0), noise=0.01)
    plain, per_res = (fit_kind(k, "dev", space, encoded[:45], device[:45], lut=lut) for k in ("lut", "lut-res"))
    assert set(per_res.resolution_scale) == {c.resolution for c in configs[:45]} and plain.resolution_scale == {}
    for r, s in per_res.resolution_scale.items():
        assert s == pytest.approx(0.88 if r == odd else 1.0, abs=0.04), (r, s)
    held = [error_metrics(device[45:], p.predict(encoded[45:]))["mape"] for p in (plain, per_res)]
    assert held[1] < 0.7 * held[0], held
    loaded = load_predictor(save_predictor(per_res))
    assert loaded.resolution_scale == per_res.resolution_scale
    np.testing.assert_allclose(loaded.predict(encoded), per_res.predict(encoded), rtol=1e-12)


def test_a_resolution_seen_once_moves_its_scale_only_part_of_the_way(demo):
    """One subnet at a resolution, 30 % under its blocks, must not set that resolution's scale alone."""
    space, configs, encoded, _ = demo
    odd = space.resolutions[-1]
    lut, device = per_resolution_device(space, configs, {odd: 0.7}, np.random.default_rng(0), noise=0.0)
    keep = [i for i, c in enumerate(configs) if c.resolution != odd][:30]
    keep.append(next(i for i, c in enumerate(configs) if c.resolution == odd))
    fitted = fit_kind("lut-res", "dev", space, encoded[keep], device[keep], lut=lut)
    # fitted alone it would be 0.7 of the shared scale; the prior holds it about half-way
    assert 0.78 < fitted.resolution_scale[odd] / fitted.scale < 0.92


def test_transfer_study_reports_both_fits_per_k(demo):
    space, configs, encoded, latency = demo
    source = fit_predictor("src", space, encoded, latency, kinds=["ridge"])
    target = device_latency(space, configs, np.random.default_rng(1), dw_factor=3.0)
    study = transfer_study(source, "dst", encoded, target, ks=(5, 10), draws=2)
    for k in ("5", "10"):
        row = study["by_k"][k]
        assert row["n_test"] == len(configs) - int(k)
        for name in ("transfer", "scratch"):
            assert 0 <= row[name]["mape"] < 1 and 0 <= row[name]["within_10pct"] <= 1
    # a recalibrated source beats 5 points from scratch on a device that differs mostly in scale
    assert study["by_k"]["5"]["transfer"]["mape"] < study["by_k"]["5"]["scratch"]["mape"]


def test_sampling_plan_is_a_prefix_sequence_with_extremes():
    space = SearchSpace.load(DEMO)
    plan = sampling_plan(space, 30)
    assert plan[:2] == [space.smallest(), space.largest()]
    assert sampling_plan(space, 12) == plan[:12]
    assert len({c.id for c in plan}) == 30
    flops = np.sort([count_flops(space, c) for c in plan])
    # space-filling over FLOPs: no gap wider than a quarter of the range
    assert np.max(np.diff(np.log(flops))) < 0.25 * np.log(flops[-1] / flops[0])


@pytest.mark.parametrize("name", ["demo", "attentivenas"])
def test_sampling_plan_takes_turns_between_resolutions(name):
    space = SearchSpace.load(name)
    for n in (8, 20, 50):
        counts = [sum(c.resolution == r for c in sampling_plan(space, n)) for r in space.resolutions]
        assert max(counts) - min(counts) <= 1, (n, counts)


def _fill_store(path, device: str, configs, latency) -> None:
    """A real measurement store holding the analytic device's latencies of demo subnets (10-class
    head) under the current key."""
    from pipeline.device import MeasurementRecord, MeasurementStore, RecordKey, load_profile
    from pipeline.device.measure import Measurement
    from pipeline.compile.keys import current_key_fields, measured_id

    fields = current_key_fields(load_profile(device))
    with MeasurementStore(path) as store:
        for config, ms in zip(configs, latency):
            m = Measurement.from_repeats([ms] * 5, number=1, attempts=1, max_spread=0.1)
            store.add(MeasurementRecord.from_measurement(RecordKey(device, measured_id(config.id, 10), *fields),
                                                         config.to_dict(), m, {"source": "analytic"}))


def test_cli_fit_and_eval_print_the_error_report(demo, pipeline_cache, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    space, configs, _, latency = demo
    store = tmp_path / "measurements.sqlite"
    _fill_store(store, "x86-host", configs[:60], latency[:60])
    runner = CliRunner()
    fitted = runner.invoke(main, ["predictor", "fit", "--device", "x86-host", "--space", DEMO, "--store", str(store),
                                  "--kind", "ridge", "--kind", "trees", "--json"])
    assert fitted.exit_code == 0, fitted.output
    report = json.loads(fitted.stdout.strip().splitlines()[-1])
    assert report["n_train"] + report["n_test"] == 60 and report["n_test"] >= 5
    assert report["kind"] in ("ridge", "trees") and report["revision"] == 1
    assert 0 < report["rmse_ms"] < 0.2 * latency.mean() and 0 < report["mape"] < 0.2
    assert 0 <= report["within_10pct"] <= 1 and 0 <= report["within_5pct"] <= report["within_10pct"]
    assert report["kendall_tau"] > 0.5
    assert (pipeline_cache / "predictors" / "x86-host" / "fit.png").stat().st_size > 1000

    _fill_store(store, "x86-host", configs[60:], latency[60:])  # new measurements arrive
    evaluated = runner.invoke(main, ["predictor", "eval", "--device", "x86-host", "--store", str(store), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert ev["n_train"] == report["n_train"] and ev["n_test"] == len(configs) - report["n_train"]
    assert ev["mape"] < 0.2 and ev["plot"].endswith("eval.png")

    missing = runner.invoke(main, ["predictor", "eval", "--device", "rpi4", "--store", str(store)])
    assert missing.exit_code == 2 and "pipeline predictor fit --device rpi4" in missing.output


def test_cli_fit_and_eval_with_a_space_from_a_yaml_file(demo, pipeline_cache, tmp_path):
    """`--space my.yaml`: the fitted predictor carries the space, so eval (which names no space)
    and every later load work without the file being found by name."""
    import yaml
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.paths import DATA_DIR

    _, configs, _, latency = demo
    raw = yaml.safe_load((DATA_DIR / "demo.yaml").read_text())
    space_file = tmp_path / "mine.yaml"
    space_file.write_text(yaml.safe_dump(raw))
    store = tmp_path / "measurements.sqlite"
    _fill_store(store, "x86-host", configs[:60], latency[:60])
    runner = CliRunner()
    fitted = runner.invoke(main, ["predictor", "fit", "--device", "x86-host", "--space", str(space_file),
                                  "--store", str(store), "--kind", "ridge", "--json"])
    assert fitted.exit_code == 0, fitted.output
    assert json.loads(fitted.stdout.strip().splitlines()[-1])["space"] == "mine"
    space_file.unlink()  # from here on, only the predictor file knows the space
    _fill_store(store, "x86-host", configs[60:], latency[60:])
    evaluated = runner.invoke(main, ["predictor", "eval", "--device", "x86-host", "--store", str(store), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["n_test"] == len(configs) - 60 + \
        json.loads(fitted.stdout.strip().splitlines()[-1])["n_test"]
    assert load_predictor("x86-host").space == SearchSpace.from_dict(raw, "mine")


def _save_revisions(predictor, start, n: int, saved) -> None:
    start.wait()  # both processes list the revisions at the same moment
    saved.put([save_predictor(predictor).name for _ in range(n)])


def test_concurrent_saves_get_distinct_revisions(demo, pipeline_cache):
    """Two processes saving 25 predictors each from one start: 50 distinct revisions, each
    file complete and recording its own number (the revision used to be picked before
    writing, through one fixed temporary name)."""
    import multiprocessing

    space, _, encoded, latency = demo
    ridge = fit_kind("ridge", "dev", space, encoded[:30], latency[:30])
    ctx = multiprocessing.get_context("fork")  # the children inherit the fitted predictor and the cache
    start, saved = ctx.Barrier(2), ctx.Queue()
    savers = [ctx.Process(target=_save_revisions, args=(ridge, start, 25, saved)) for _ in range(2)]
    for p in savers:
        p.start()
    names = saved.get(timeout=120) + saved.get(timeout=120)
    for p in savers:
        p.join()
        assert p.exitcode == 0
    assert sorted(names) == [f"r{i:04d}.json" for i in range(1, 51)]
    folder = pipeline_cache / "predictors" / "dev"
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporaries left
    for name in names:
        loaded = load_predictor(folder / name)
        assert loaded.info["revision"] == int(name[1:5])
        np.testing.assert_allclose(loaded.predict(encoded), ridge.predict(encoded), rtol=1e-12)


def test_two_cli_fits_at_once_both_save(demo, pipeline_cache, tmp_path):
    """Two `pipeline predictor fit` processes on one device at the same time."""
    import os
    import subprocess
    import sys

    space, configs, _, latency = demo
    store = tmp_path / "measurements.sqlite"
    _fill_store(store, "x86-host", configs[:40], latency[:40])
    command = [sys.executable, "-m", "pipeline", "predictor", "fit", "--device", "x86-host", "--space", DEMO,
               "--store", str(store), "--json"]
    env = {**os.environ, "PIPELINE_CACHE": str(pipeline_cache)}
    fits = [subprocess.Popen(command + ["--kind", "ridge"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    reports = []
    for p in fits:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["revision"] for r in reports) == [1, 2]
    for r in reports:
        loaded = load_predictor(r["predictor_file"])
        assert (loaded.kind, loaded.info["revision"]) == ("ridge", r["revision"])
    assert load_predictor("x86-host").info["revision"] == 2
    assert (pipeline_cache / "predictors" / "x86-host" / "fit.png").stat().st_size > 1000


def test_interval_widens_with_distance_from_the_fitted_subnets(demo):
    """Fitted on the faster half of the plan only: a fitted subnet gets the out-of-fold q90
    relative error as its half-width, subnets far from every fitted one get wider intervals
    (and the largest subnet, the farthest, a wider one than a fitted subnet); the point
    prediction lies inside its interval."""
    space, configs, encoded, latency = demo
    small = [int(i) for i in np.argsort(latency)[: len(latency) // 2]]
    predictor = fit_predictor("dev", space, encoded[small], latency[small], kinds=["ridge", "trees"])
    q90 = predictor.info["cv"][predictor.info["selected"]]["q90_rel_error"]
    assert q90 > 0
    lo, hi = predictor.interval([configs[small[0]], space.largest()])
    point = predictor.predict([configs[small[0]], space.largest()])
    assert np.all(lo < point) and np.all(point < hi)
    fitted_half, far_half = (hi - point) / point
    assert fitted_half == pytest.approx(q90)
    assert far_half > 1.5 * fitted_half
    # round trip: the saved predictor knows where it was fitted
    from pipeline.predict.predictor import LatencyPredictor

    again = LatencyPredictor.from_dict(json.loads(json.dumps(predictor.to_dict())))
    np.testing.assert_allclose(again.interval([space.largest()])[1], hi[1:])


def test_rows_timed_beside_different_references_are_each_corrected_by_their_own(tmp_path):
    """A store holding rows timed beside two references (say the space's largest subnet,
    then a cheaper one for a slow device): each row is scaled by its own reference's quiet
    time, not one quiet time for all (which would put one group ~10x off)."""
    from pipeline.compile.keys import measured_id
    from pipeline.device import MeasurementStore, load_profile
    from pipeline.device.measure import Measurement
    from pipeline.device.store import MeasurementRecord, RecordKey
    from pipeline.measure.jobs import quiet_time
    from pipeline.predict.workflow import load_dataset

    space = SearchSpace.load(DEMO)
    configs = sampling_plan(space, 12)
    quiet_latency = np.arange(1.0, 13.0)
    groups = {"A": np.linspace(10.0, 20.0, 8), "B": np.linspace(100.0, 130.0, 4)}  # the reference's times
    fields = ("target", "tvm", "kernels")
    with MeasurementStore(tmp_path / "m.sqlite") as store:
        row = 0
        for ref_id, times in groups.items():
            for ref_ms in times:
                raw = quiet_latency[row] * ref_ms / quiet_time(times)  # contention slows both alike
                store.add(MeasurementRecord.from_measurement(
                    RecordKey("x86-host", measured_id(configs[row].id, 10), *fields), configs[row].to_dict(),
                    Measurement.from_repeats([raw] * 3, 1, 1, 0.1), {"reference_id": ref_id, "reference_ms": ref_ms}))
                row += 1
    data = load_dataset(load_profile("x86-host"), space, tmp_path / "m.sqlite", key_fields=fields)
    by_id = dict(zip(data.ids, data.latency_ms))
    np.testing.assert_allclose([by_id[c.id] for c in configs], quiet_latency, rtol=1e-9)
    assert data.reference_quiet_ms == {ref: pytest.approx(quiet_time(times)) for ref, times in groups.items()}
    beside = dict(zip(data.ids, data.reference_ms))  # each row keeps the reference's time it was timed beside
    np.testing.assert_allclose([beside[c.id] for c in configs], np.concatenate(list(groups.values())))
    # corrected to a model's quiet time for A (twice the rows' own): A's rows double, B's keep their own
    to_model = load_dataset(load_profile("x86-host"), space, tmp_path / "m.sqlite", key_fields=fields,
                            quiet_ms={"A": 2 * quiet_time(groups["A"])})
    np.testing.assert_allclose(to_model.latency_ms, quiet_latency * np.repeat([2.0, 1.0], [8, 4]), rtol=1e-9)
    assert to_model.reference_quiet_ms["A"] == pytest.approx(2 * quiet_time(groups["A"]))
