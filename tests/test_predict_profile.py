"""`pipeline profile` for real: demo subnets and single blocks compiled by TVM, measured on
this machine (x86-host), stored in a temporary SQLite store, skipped on a re-run, and a
predictor fitted from what was stored."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.compile.keys import measured_id
from pipeline.device import MeasurementStore, load_profile
from pipeline.predict import fit_predictor
from pipeline.predict.features import distinct_blocks
from pipeline.predict.workflow import load_block_table, load_dataset
from pipeline.profiling import profile_blocks, profile_subnets, sampling_plan
from pipeline.space import SearchSpace
from pipeline.space.arch import block_specs

N_SUBNETS = 2


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One real profile run through the CLI (the smallest and largest demo subnet), in a private cache."""
    root = tmp_path_factory.mktemp("profile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(root / "cache"))
        store = root / "measurements.sqlite"
        args = ["profile", "--device", "x86-host", "--subnets", str(N_SUBNETS), "--space", "demo",
                "--store", str(store), "--workers", "2", "--json"]
        first = CliRunner().invoke(main, args)
        second = CliRunner().invoke(main, args)
        yield {"store": store, "root": root, "first": first, "second": second}


def test_profile_measures_the_plan_and_a_rerun_skips_it(profiled):
    assert profiled["first"].exit_code == 0, profiled["first"].output
    first = json.loads(profiled["first"].stdout.strip().splitlines()[-1])["subnets"]
    second = json.loads(profiled["second"].stdout.strip().splitlines()[-1])["subnets"]
    assert (first["planned"], first["skipped"], first["measured"]) == (N_SUBNETS, 0, N_SUBNETS)
    assert (second["planned"], second["skipped"], second["measured"]) == (N_SUBNETS, N_SUBNETS, 0)
    assert first["servers"] == {"x86-host": N_SUBNETS} and second["servers"] == {}  # one in-process device

    space = SearchSpace.load("demo")
    plan = sampling_plan(space, N_SUBNETS)
    policy = load_profile("x86-host").policy
    with MeasurementStore(profiled["store"]) as store:
        records = {r.subnet_id: r for r in store.records("x86-host")}
    # timed with the demo set's 10-class head, what demo artifacts ship with
    assert set(records) == {measured_id(c.id, 10) for c in plan}
    for r in records.values():
        assert r.median_ms > 0 and len(r.repeats_ms) == policy.repeat and r.meta["space"] == "demo"
        assert r.meta["num_classes"] == 10
    smallest, largest = plan[0], plan[1]
    assert (smallest, largest) == (space.smallest(), space.largest())
    # 13x the FLOPs: the largest demo subnet is measurably slower than the smallest
    assert records[measured_id(largest.id, 10)].median_ms > 1.5 * records[measured_id(smallest.id, 10)].median_ms


def test_timings_of_two_heads_never_share_a_row_or_a_dataset(profiled, tmp_path):
    """The same subnet with the ImageNet head is another library: its own row, its own dataset."""
    space = SearchSpace.load("demo")
    smallest = space.smallest()
    store_path = tmp_path / "heads.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(profiled["root"] / "cache"))
        profile = load_profile("x86-host")
        for head in (10, 1000):
            assert profile_subnets(profile, space, [smallest], store_path, workers=1, num_classes=head).measured == 1
        ten, thousand = (load_dataset(profile, space, store_path, normalise=False, num_classes=n) for n in (10, 1000))
        default = load_dataset(profile, space, store_path, normalise=False)
    with MeasurementStore(store_path) as store:
        rows = {r.subnet_id: r for r in store.records("x86-host")}
    assert set(rows) == {f"{smallest.id}-10c", smallest.id}
    assert ten.ids == thousand.ids == default.ids == (smallest.id,)
    assert default.latency_ms[0] == ten.latency_ms[0] == rows[f"{smallest.id}-10c"].median_ms
    assert thousand.latency_ms[0] == rows[smallest.id].median_ms
    ids = {10: f"{smallest.id}-10c", 1000: smallest.id}
    assert {n: rows[i].meta["num_classes"] for n, i in ids.items()} == {10: 10, 1000: 1000}
    # each row timed its own library: the 1000-class one carries 990 more float32 classifier rows
    # (sizes, not times: a timing ratio on a shared CI machine is not a test)
    libraries = {n: profiled["root"] / "cache" / "profile" / "x86-host" / f"{i}-x86-host" / "model.so"
                 for n, i in ids.items()}
    grown = libraries[1000].stat().st_size - libraries[10].stat().st_size
    assert grown >= 990 * 4 * smallest.width[-1], grown


def test_predictor_from_the_real_store(profiled):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(profiled["root"] / "cache"))
        data = load_dataset(load_profile("x86-host"), SearchSpace.load("demo"), profiled["store"])
    assert len(data) == N_SUBNETS
    predictor = fit_predictor("x86-host", SearchSpace.load("demo"), data.encoded, data.latency_ms, data.ids, kinds=["ridge"])
    predicted = predictor.predict(data.encoded)
    assert predicted.shape == (N_SUBNETS,) and np.all(np.isfinite(predicted))
    assert predictor.info["measurement_ids"] == list(data.ids)


def test_blocks_are_measured_once_and_feed_the_lookup_table(profiled, tmp_path):
    space = SearchSpace.load("demo")
    smallest = space.smallest()
    blocks = distinct_blocks(space, [smallest])[:2]
    block_store = tmp_path / "blocks.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(profiled["root"] / "cache"))
        profile = load_profile("x86-host")
        first = profile_blocks(profile, space, blocks + blocks[:1], block_store)
        again = profile_blocks(profile, space, blocks, block_store)
        lut = load_block_table(profile, space, block_store)
    assert (first.planned, first.measured) == (2, 2) and (again.skipped, again.measured) == (2, 0)
    assert lut is not None and set(lut.entries) == {b.key for b in blocks}
    assert all(ms > 0 for ms in lut.entries.values())
    # the smallest subnet's sum: its measured blocks at their measured times, the rest estimated
    encoded = smallest.encode()[None, :]
    measured_part = sum(lut.entries.get(b.key, 0.0) for b in block_specs(space, smallest))
    assert lut.block_sum(encoded)[0] >= measured_part > 0
    assert 0 < lut.coverage(encoded)[0] <= 1


def test_measure_blocks_only_through_the_cli(profiled):
    """`--measure blocks`: the plan's distinct blocks into the block store, no subnet measured."""
    space = SearchSpace.load("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(profiled["root"] / "cache"))
        result = CliRunner().invoke(main, ["profile", "--device", "x86-host", "--subnets", "1", "--space", "demo",
                                           "--measure", "blocks", "--store", str(profiled["store"]), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"blocks"}
    wanted = distinct_blocks(space, sampling_plan(space, 1))
    assert summary["blocks"]["planned"] == len({b.key for b in wanted}) and summary["blocks"]["measured"] > 0


def test_a_policy_naming_the_smallest_reference_times_beside_it(profiled, tmp_path):
    """A slow device's policy names the space's smallest subnet as its contention reference:
    every row says so, and the dataset's quiet time is that reference's."""
    from dataclasses import replace

    space = SearchSpace.load("demo")
    store_path = tmp_path / "small-reference.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(profiled["root"] / "cache"))
        x86 = load_profile("x86-host")
        profile = replace(x86, policy=replace(x86.policy, reference="smallest"))
        plan = sampling_plan(space, 3)
        assert profile_subnets(profile, space, plan, store_path, workers=1).measured == 3
        data = load_dataset(profile, space, store_path)
    with MeasurementStore(store_path) as store:
        rows = store.records("x86-host")
    smallest = measured_id(space.smallest().id, 10)
    assert {r.meta["reference_id"] for r in rows} == {smallest}
    assert set(data.reference_quiet_ms) == {smallest}
    beside = [r.meta["reference_ms"] for r in rows]
    assert min(beside) <= data.reference_quiet_ms[smallest] <= max(beside)
