"""Measured register tiles: timed on the device, written as they come, lent to near shapes,
applied only on the CPU they were timed on, and the logits unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.device import load_profile
from pipeline.kernels import kernel_db_hash, lower_for_target
from pipeline.kernels.database import TunedOn
from pipeline.kernels.schedules import ScheduleParams, TileShape
from pipeline.kernels.tiles import TileTable, candidates, load_tiles, space_kernels, tiles_path, tune_tiles
from pipeline.model import build_static
from pipeline.space import SearchSpace

TIMED = TileShape((1, 1, 224), 81, 1296)


def _table() -> TileTable:
    table = TileTable(TunedOn("x86_64", "somecpu", ("avx512f",)), lanes=16)
    table.entries[TIMED] = {"tile": [4, 48], "us": 200.0, "rule_tile": [9, 16], "rule_us": 260.0}
    return table


def test_a_timed_tile_is_lent_to_near_shapes_it_fits_and_to_no_other():
    table = _table()
    rule = (9, 16)
    assert table.get(TIMED, rule) == (4, 48)
    assert table.get(TileShape((1, 1, 200), 100, 1296), rule) == (4, 48)  # every axis within 2x
    assert table.get(TileShape((1, 1, 224), 400, 1296), rule) == rule  # 5x the positions: too far
    assert table.get(TileShape((1, 1, 224), 81, 1280), rule) == rule  # 48 does not divide 1280
    assert table.get(TileShape((1, 1, 224), 57, 1296), rule) == (4, 48)  # 60 for 57: predicated, 5 % waste
    assert table.get(TileShape((3, 3, 224), 81, 1296), rule) == rule  # another window: never shared
    twin = TileShape((1, 1, 224), 81 * 4, 1296)  # as far from 162 positions as TIMED is
    table.entries[twin] = {"tile": [6, 48], "us": 100.0, "rule_tile": [9, 16], "rule_us": 150.0}
    assert table.get(TileShape((1, 1, 224), 162, 1296), rule) == (4, 48)  # a tie: the first timed
    del table.entries[twin]
    table.entries[TIMED]["us"] = 255.0  # within the noise of the rule's 260: its tile is kept
    assert table.get(TIMED, rule) == (9, 16)
    again = TileTable.from_json(table.to_json())
    assert again.entries == table.entries and again.tuned_on == table.tuned_on


def test_candidates_fit_the_register_file_and_the_shape():
    shape = TileShape((1, 1, 96), 2304, 96)
    for registers, lanes in ((16, 8), (32, 16)):
        tiles = candidates(shape, ScheduleParams(lanes, 1, registers))
        assert tiles and all(96 % c == 0 and c % lanes == 0 for _, c in tiles)
        assert all(p * (c // lanes) + c // lanes + 1 < registers for p, c in tiles)
        assert all(4 <= p * (c // lanes) <= 28 for p, c in tiles)


@pytest.fixture
def demo_kernels():
    space = SearchSpace.load("demo")
    config = space.smallest()
    target = load_profile("x86-host").tvm_target()
    return space, config, space_kernels(space, [config], target, 10, progress=False)


def test_tiles_are_timed_on_the_device_written_as_they_come_and_resumed(demo_kernels, tmp_path, monkeypatch):
    """One shape timed, then a second run adds one more and keeps the first; compiles on
    this CPU use the table (logits still PyTorch's) and their hash changes with it; a table
    stamped with another CPU is not applied, and the compile says so."""
    import tvm
    from tvm import relax

    from pipeline.compile import export_onnx, onnx_to_relax

    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "kernels"))
    space, config, funcs = demo_kernels
    profile = load_profile("x86-host")
    target = profile.tvm_target()
    hash_without = kernel_db_hash("x86-host", target)
    table, rows = tune_tiles(funcs, profile, shapes=1, progress=False)
    assert len(rows) == 1 and len(table.entries) == 1
    row = rows[0]
    assert row["candidates"] >= 5 and 0 < row["us"] and 0 < row["rule_us"]
    written = json.loads(tiles_path("x86-host").read_text())
    assert len(written["shapes"]) == 1 and written["lanes"] == ScheduleParams.for_target(target).lanes
    first = next(iter(table.entries))

    table, rows = tune_tiles(funcs, profile, shapes=2, progress=False)
    assert len(rows) == 1 and len(table.entries) == 2 and first in table.entries  # resumed, not retimed

    applied, note = load_tiles("x86-host", target)
    assert applied is not None and "2 measured tile shapes" in note
    assert kernel_db_hash("x86-host", target) != hash_without
    torch.manual_seed(0)
    model = build_static(space, config, 10).eval()
    path = export_onnx(model, config.resolution, tmp_path / "m.onnx")
    lowered, coverage = lower_for_target(onnx_to_relax(path), target, "x86-host")
    assert "2 measured tile shapes" in coverage.database
    x = np.random.default_rng(0).random((1, 3, config.resolution, config.resolution), dtype=np.float32)
    got = relax.VirtualMachine(tvm.compile(lowered, target=target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)

    written = json.loads(tiles_path("x86-host").read_text())
    written["tuned_on"]["mcpu"] = "another-cpu"
    tiles_path("x86-host").write_text(json.dumps(written))
    applied, note = load_tiles("x86-host", target)
    assert applied is None and "not applied" in note and "another-cpu" in note
    _, coverage = lower_for_target(onnx_to_relax(path), target, "x86-host")
    assert "measured tiles not applied" in coverage.database
    assert kernel_db_hash("x86-host", target) == hash_without
