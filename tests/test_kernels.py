"""Kernels: workload plan, library schedules, committed x86-host database, tuning resume."""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_seeded_and_tuned, running_farm

from pipeline.compile import onnx_to_relax
from pipeline.device import load_profile
from pipeline.kernels import kernel_db_hash, lower_for_target
from pipeline.kernels.database import TunedOn, device_kernel_dir, has_database, open_database
from pipeline.kernels.lower import PACKED_SUFFIX, fold_constant_layouts, prim_funcs
from pipeline.kernels.pad import pad_channels, padded_channels
from pipeline.kernels.plan import (
    Plan,
    _requirements,
    _satisfies,
    covering_configs,
    plan,
)
from pipeline.kernels.tune import TuneBudget, _records, tune
from pipeline.model import build_static
from pipeline.paths import DATA_DIR
from pipeline.space import SearchSpace


@pytest.fixture(scope="module")
def small_space(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    """The demo space cut to one choice per position at 32 px, two blocks per stage."""
    raw = yaml.safe_load((DATA_DIR / "demo.yaml").read_text())
    cfg = raw["supernet_config"]
    cfg["resolutions"] = [32]
    for section in cfg.values():
        if isinstance(section, dict):
            for key in ("c", "k", "t"):
                if key in section:
                    section[key] = section[key][:1]
            if "d" in section:
                section["d"] = [max(section["d"])]
    path = tmp_path_factory.mktemp("space") / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return SearchSpace.load(path)


@pytest.fixture(scope="module")
def small_plan(small_space: SearchSpace, tmp_path_factory: pytest.TempPathFactory) -> Plan:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(cache))
        target = load_profile("x86-host").tvm_target()
        return plan(small_space, "x86-host", target, num_classes=10, n_random=0, progress=False)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms (build_static zeroes the last gammas)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.rand(m.bias.shape, generator=gen) - 0.5
            m.running_mean = torch.rand(m.running_mean.shape, generator=gen) - 0.5
            m.running_var = torch.rand(m.running_var.shape, generator=gen) + 0.5
    return model.eval()


def _compile_and_compare(space: SearchSpace, config, device: str, tmp_path: Path):
    import tvm
    from tvm import relax

    from pipeline.compile import export_onnx, onnx_to_relax

    model = _randomise(build_static(space, config, 10), seed=1)
    path = export_onnx(model, config.resolution, tmp_path / "m.onnx")
    target = load_profile(device).tvm_target()
    lowered, coverage = lower_for_target(onnx_to_relax(path), target, device)
    vm = relax.VirtualMachine(tvm.compile(lowered, target=target), tvm.cpu())
    x = np.random.default_rng(0).random((1, 3, config.resolution, config.resolution), dtype=np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return coverage, lowered


def test_covering_configs_contain_every_layer_shape():
    space = SearchSpace.load("demo")
    configs = covering_configs(space)
    requirements = _requirements(space)
    assert all(any(_satisfies(c, r) for c in configs) for r in requirements)
    # at least one per (resolution, first-block shape of the busiest stage), far below the space size
    assert 3 * 16 <= len(configs) < 100


def test_plan_deduplicates_tasks(small_plan: Plan):
    summary = small_plan.summary()
    assert summary["tasks"] >= 20  # stem, expand/depthwise/project convs, SE, pools, head
    assert summary["kernel_calls"] > summary["tasks"]  # repeated blocks share tasks
    repeated = [t for t in small_plan.tasks if t.occurrences > 1]
    assert repeated and all(t.flops > 0 for t in small_plan.tasks if "conv2d" in t.name)
    names = [t.name for t in small_plan.tasks]
    assert len(names) == len(set(names))


def test_library_schedules_match_pytorch(small_space, tmp_path, monkeypatch, pipeline_cache):
    """Without a database every kernel gets a library schedule, and the results are right."""
    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "no-kernels"))
    coverage, _ = _compile_and_compare(small_space, small_space.largest(), "x86-host", tmp_path)
    assert coverage.tuned == 0
    assert coverage.library == coverage.total and not coverage.untuned_tasks


def test_library_schedules_match_pytorch_on_a_full_space_subnet(tmp_path, monkeypatch, pipeline_cache):
    """Shapes the demo space lacks: 7x7 and 6x6 maps (register tile across a whole row),
    weight-dominated 1x1 convs (channel tile outermost), channel counts that are no
    multiple of the SIMD width, SE gates broadcast over big maps, the classifier GEMV."""
    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "no-kernels"))
    space = SearchSpace.load("attentivenas")
    config = space.validate(space.smallest())
    coverage, lowered = _compile_and_compare(space, config, "x86-host", tmp_path)
    assert coverage.library == coverage.total and not coverage.untuned_tasks
    # 1x1 convolutions read their weights prepacked (and the logits above stay right)
    packed = [gv.name_hint for gv in lowered.functions if gv.name_hint.endswith(PACKED_SUFFIX)]
    assert len(packed) >= 10
    # the weight-dominated ones prefetch their next weight panel
    assert any("llvm.prefetch" in f.script() for f in prim_funcs(lowered).values())
    # at AVX-512's 16 lanes an untuned compile pads the 24/216-channel convolutions to 32/224
    # (AVX2's 8 lanes divide them); padding keeps the logits exact (checked above where it applies)
    _, changed = pad_channels(fold_constant_layouts(onnx_to_relax(tmp_path / "m.onnx")), lanes=16)
    assert changed > 0
    assert [padded_channels(c, 16) for c in (8, 16, 24, 200, 1000)] == [8, 16, 32, 208, 1008]


def _fused_kernels(tmp_path: Path, kind: str) -> list:
    """The demo space's largest subnet compiled for this CPU with library schedules and
    checked against PyTorch; returns (unscheduled kernel, extents) of its kernels of `kind`."""
    from pipeline.kernels import schedules
    from pipeline.kernels.kinds import kernel_kind
    from pipeline.kernels.lower import fuse_for_device

    space = SearchSpace.load("demo")
    coverage, _ = _compile_and_compare(space, space.validate(space.largest()), "x86-host", tmp_path)
    assert coverage.library == coverage.total and not coverage.untuned_tasks
    target = load_profile("x86-host").tvm_target()
    _, unscheduled, _ = fuse_for_device(onnx_to_relax(tmp_path / "m.onnx"), target, None,
                                        schedules.ScheduleParams.for_target(target))
    return [(f, kernel_kind(f)[2]) for f in unscheduled.values() if kernel_kind(f)[0] == kind]


def test_block_fused_into_one_kernel_keeps_the_logits(tmp_path, monkeypatch, pipeline_cache):
    """With `fuse.FUSE_BLOCKS` on (the map threshold lowered so the demo's blocks qualify,
    two output rows per band so every map has several), each stride-2 block's expansion,
    depthwise convolution and projection become one kernel that computes the expansion
    and the depthwise rows band by band, bands in parallel on this machine's cores: the
    logits still match PyTorch, and the expansion rows two bands share are computed right
    in both."""
    from pipeline.kernels import fuse, schedules

    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "no-kernels"))
    monkeypatch.setattr(fuse, "FUSE_BLOCKS", True)
    monkeypatch.setattr(fuse, "MIN_MAP_BYTES", 0)
    monkeypatch.setattr(schedules, "BAND_ROWS", 2)
    fused = _fused_kernels(tmp_path, "block")
    assert fused
    for _, extents in fused:  # "[1, H, W, C] x [1, 1, K] then [1, H/2, W/2, C] x [k, k, 1] then ...": stride 2 only
        expanded, reduced, projected = (yaml.safe_load(part.split(" x ")[0]) for part in extents.split(" then "))
        assert expanded[1] == 2 * reduced[1] and expanded[3] == reduced[3] and projected[1] == reduced[1], extents


def test_depthwise_fused_with_its_projection_keeps_the_logits(tmp_path, monkeypatch, pipeline_cache):
    """With every depthwise convolution that only its block's projection reads fused with
    it (the map threshold lowered so the demo's blocks qualify, one row per band so every
    map has several, bands in parallel on this machine's cores), the logits still match
    PyTorch, at stride 1 and 2, 3x3 and 5x5."""
    from pipeline.kernels import fuse, schedules

    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "no-kernels"))
    monkeypatch.setattr(fuse, "DEPTHWISE_PROJECT_MIN_MAP_BYTES", 0)
    monkeypatch.setattr(schedules, "DEPTHWISE_BAND_BYTES", 1)
    seen = set()
    for func, extents in _fused_kernels(tmp_path, "depthwise+project"):
        # "[1, H, W, C] x [k, k, 1] then [1, H, W, D] x [1, 1, C]"
        (convolved, window), (projected, reduced) = ([yaml.safe_load(p) for p in part.split(" x ")]
                                                     for part in extents.split(" then "))
        assert convolved[1:3] == projected[1:3] and reduced == [1, 1, convolved[3]], extents
        seen.add((int(func.params[0].shape[1]) // convolved[1], window[0]))  # (stride, window)
    assert {1, 2} <= {stride for stride, _ in seen} and {3, 5} <= {k for _, k in seen}, seen


def test_avx512_tiles_keep_the_logits_on_any_x86(tmp_path, monkeypatch, pipeline_cache):
    """The schedules an AVX-512 CPU gets (16 lanes, 32 registers: 2 or 3 vectors per
    position, predicated last tiles), compiled for this CPU whatever it has (LLVM splits
    the vectors where AVX-512 is missing): the logits still match PyTorch."""
    from pipeline.kernels import schedules

    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "no-kernels"))
    monkeypatch.setattr(schedules, "simd_lanes", lambda target: 16)
    monkeypatch.setattr(schedules, "simd_registers", lambda target: 32)
    tiles = []
    wide = schedules._wide_register_tile
    monkeypatch.setattr(schedules, "_wide_register_tile", lambda *a: tiles.append((a, wide(*a))) or tiles[-1][1])
    space = SearchSpace.load("attentivenas")
    config = space.validate(space.smallest())
    coverage, _ = _compile_and_compare(space, config, "x86-host", tmp_path)
    assert coverage.library == coverage.total
    chosen = [(width, tile) for (width, _, _), tile in tiles if tile is not None]
    assert any(tile[1] == 48 for _, tile in chosen)  # 3 vectors per position
    assert any(width % tile[0] for width, tile in chosen)  # a predicated last tile


def test_a_residual_block_alone_pads_at_16_lanes_and_keeps_its_numbers(tmp_path):
    """A lookup-table block is compiled alone: its residual adds the function's input, a
    computed tensor nothing padded. At AVX-512's width (16 lanes, whatever this CPU has) the
    24-channel block is padded to 32; the input gets zero channels appended and the block's
    first 24 output channels equal ONNX Runtime's."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from pipeline.predict.blocks import BLOCK_INPUT, block_inputs, export_block_onnx
    from pipeline.predict.features import distinct_blocks

    space = SearchSpace.load("demo")
    spec = next(b for b in distinct_blocks(space, [space.largest()])
                if b.stride == 1 and b.in_channels == b.out_channels and padded_channels(b.out_channels, 16)
                != b.out_channels)
    path = export_block_onnx(spec, tmp_path / "block.onnx")
    padded, changed = pad_channels(fold_constant_layouts(onnx_to_relax(path)), lanes=16)
    assert changed > 0
    x = block_inputs(spec)[BLOCK_INPUT]
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {BLOCK_INPUT: x})[0]
    vm = relax.VirtualMachine(tvm.compile(padded, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert got.shape[1] == padded_channels(spec.out_channels, 16) > spec.out_channels
    np.testing.assert_allclose(got[:, :spec.out_channels], expected, rtol=1e-4, atol=1e-4)
    assert not got[:, spec.out_channels:].any()


def test_lowered_sigmoid_and_swish_hold_their_error_over_the_whole_float_range(tmp_path):
    """The fast sigmoid is a clamped rational polynomial: within 3e-7 of the exact value
    from -40 to 40 (past the clamp too), never outside [0, 1], and swish (x * sigmoid(x),
    what every AttentiveNAS layer applies) within that error times |x| (plus rounding)."""
    import tvm
    from tvm import relax

    x = np.concatenate([np.linspace(-40, 40, 80001), [-1e30, -88.0, 88.0, 1e30]]).astype(np.float32)

    class Both(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.sigmoid(t), torch.nn.functional.silu(t)

    path = tmp_path / "sigmoid.onnx"
    torch.onnx.export(Both(), (torch.from_numpy(x),), path, input_names=["x"], dynamo=False)
    lowered, _ = lower_for_target(onnx_to_relax(path), tvm.target.Target("llvm"), "x86-host")
    vm = relax.VirtualMachine(tvm.compile(lowered, target="llvm"), tvm.cpu())
    sigmoid, swish = (t.numpy() for t in vm["main"](tvm.runtime.tensor(x)))
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert np.abs(sigmoid - exact).max() < 3e-7
    assert sigmoid.min() >= 0.0 and sigmoid.max() <= 1.0 + 2e-7
    assert (sigmoid[x >= 16.5] == 1.0).all() and (swish[x >= 16.5] == x[x >= 16.5]).all()  # saturates exactly
    # swish = x * sigmoid(x): the sigmoid's error scaled by |x|, plus the product's rounding
    finite = np.abs(x) <= 40
    exact_swish = x[finite].astype(np.float64) * exact[finite]
    assert (np.abs(swish[finite] - exact_swish) <= 3e-7 * np.abs(x[finite]) + 1e-7).all()


def _other_cpu(target) -> str:
    """An x86 -mcpu other than `target`'s (with another feature set)."""
    return "haswell" if TunedOn.of(target).mcpu == "znver5" else "znver5"


def test_committed_x86_database_applies_only_on_the_cpu_it_was_tuned_on(tmp_path, monkeypatch, pipeline_cache):
    """The committed database stamped for another CPU is not applied (library schedules,
    coverage and hash say so); the same tables stamped for this CPU are applied to a random
    demo subnet, and both compiles match PyTorch. Not every kernel: its records predate the
    rational sigmoid, so swish kernels no longer match a tuned workload and get library
    schedules (until `pipeline kernels tune` is run again on the CPU the records are for)."""
    import shutil

    import tvm

    assert has_database("x86-host"), f"no committed database in {device_kernel_dir('x86-host')}"
    assert TunedOn.read("x86-host") is not None, "the committed database states no CPU"
    kernels = tmp_path / "kernels"
    shutil.copytree(device_kernel_dir("x86-host"), kernels / "x86-host")
    monkeypatch.setenv("PIPELINE_KERNELS", str(kernels))
    target = load_profile("x86-host").tvm_target()
    space = SearchSpace.load("demo")
    config = space.sample(random.Random(7))
    hash_without = kernel_db_hash("no-such-device", target)

    TunedOn.of(tvm.target.Target({"kind": "llvm", "mcpu": _other_cpu(target)})).write(kernels / "x86-host")
    coverage, _ = _compile_and_compare(space, config, "x86-host", tmp_path)
    assert coverage.tuned == 0 and coverage.library == coverage.total, coverage.summary()
    assert "not applied" in coverage.database and _other_cpu(target) in coverage.database
    assert kernel_db_hash("x86-host", target) == hash_without  # what compiled does not depend on it

    TunedOn.of(target).write(kernels / "x86-host")
    coverage, _ = _compile_and_compare(space, config, "x86-host", tmp_path)
    assert coverage.tuned > coverage.total // 2 and not coverage.untuned_tasks, coverage.summary()
    assert coverage.tuned + coverage.library == coverage.total
    assert "this CPU" in coverage.database
    assert kernel_db_hash("x86-host", target) != hash_without


def test_publish_stamps_the_cpu_and_tuning_on_another_cpu_starts_empty(tmp_path, monkeypatch, pipeline_cache):
    import tvm

    from pipeline.kernels.database import RECORD_FILE, WORKLOAD_FILE, database_status, publish, tuning_dir

    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "kernels"))
    target = load_profile("x86-host").tvm_target()
    working = tmp_path / "working"
    working.mkdir()
    (working / WORKLOAD_FILE).write_text("")
    (working / RECORD_FILE).write_text("")
    publish("x86-host", working, target)
    assert TunedOn.read("x86-host") == TunedOn.of(target)
    assert database_status("x86-host", target)[0]
    other = tvm.target.Target({"kind": "llvm", "mcpu": _other_cpu(target)})
    assert not database_status("x86-host", other)[0]
    assert tuning_dir("x86-host", other) != tuning_dir("x86-host", target)
    assert not (tuning_dir("x86-host", other) / WORKLOAD_FILE).exists()  # not filled from another CPU's tables
    assert (tuning_dir("x86-host", target) / WORKLOAD_FILE).exists()


def test_database_without_a_cpu_stamp_is_not_applied(tmp_path, monkeypatch):
    import shutil

    from pipeline.kernels.database import database_status

    kernels = tmp_path / "kernels"
    shutil.copytree(device_kernel_dir("x86-host"), kernels / "x86-host")
    (kernels / "x86-host" / "tuned-on.json").unlink()
    monkeypatch.setenv("PIPELINE_KERNELS", str(kernels))
    applies, note = database_status("x86-host", load_profile("x86-host").tvm_target())
    assert not applies and "states no CPU" in note


@pytest.mark.parametrize("where", ["local", "rpc"])
def test_library_seeds_are_timed_as_one_batch_and_committed(where, small_plan: Plan, request, tmp_path: Path):
    """The seeds go through the measurement layer (`pipeline.measure`): each task's library
    schedule is timed on the device and committed as its record with real device times."""
    profile = load_profile("x86-host") if where == "local" else request.getfixturevalue("local_rpc_server")
    light = sorted(small_plan.tasks, key=lambda t: t.flops)
    tasks = [next(t for t in light if "mean" in t.name), next(t for t in light if "matmul" in t.name)]
    sub = Plan(small_plan.space, small_plan.device, small_plan.configs, tasks)
    seeded = tune(sub, profile, TuneBudget(trials_per_task=0), database_dir=tmp_path / "db", progress=False)
    assert [o.trials_after for o in seeded] == [1, 1]
    database = open_database(tmp_path / "db")
    for outcome, task in zip(seeded, sorted(tasks, key=lambda t: -t.weighted_flops)):
        (record,) = _records(database, task)
        assert outcome.library_us == pytest.approx(1e6 * np.mean([float(x) for x in record.run_secs]))
        assert 0 < outcome.library_us < 1e6


@pytest.mark.slow  # MetaSchedule's builder/runner pools: a minute on a quiet machine, ten on a loaded one
def test_tuning_appends_records_and_resumes(small_plan: Plan, tmp_path: Path):
    profile = load_profile("x86-host")
    light = sorted(small_plan.tasks, key=lambda t: t.flops)
    tasks = [next(t for t in light if "mean" in t.name), next(t for t in light if "matmul" in t.name)]
    sub = Plan(small_plan.space, small_plan.device, small_plan.configs, tasks)
    folder = tmp_path / "db"

    seeded = tune(sub, profile, TuneBudget(trials_per_task=0), database_dir=folder, progress=False)
    assert [o.trials_after for o in seeded] == [1, 1]  # the measured library schedules
    assert all(o.library_us and o.library_us > 0 for o in seeded)

    tuned = tune(sub, profile, TuneBudget(trials_per_task=2, max_tasks=1, trials_per_iter=2),
                 database_dir=folder, progress=False)
    assert tuned[0].trials_before == 1 and tuned[0].trials_after > 1  # appended, seed kept
    assert tuned[0].library_us is None  # not re-measured on restart

    again = tune(sub, profile, TuneBudget(trials_per_task=2, max_tasks=1, trials_per_iter=2),
                 database_dir=folder, progress=False)
    assert again[0].trials_after == again[0].trials_before == tuned[0].trials_after  # budget met: nothing rerun
    database = open_database(folder)
    task = next(t for t in tasks if t.name == tuned[0].name)
    assert len(_records(database, task)) == tuned[0].trials_after


def test_tuning_over_rpc_appends_measured_records(small_plan: Plan, local_rpc_server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    """The remote path: library seed and MetaSchedule trials measured through an RPC session."""
    monkeypatch.setenv("PIPELINE_KERNELS", str(tmp_path / "kernels"))
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    task = next(t for t in sorted(small_plan.tasks, key=lambda t: t.flops) if "mean" in t.name)
    sub = Plan(small_plan.space, small_plan.device, small_plan.configs, [task])
    folder = tmp_path / "db"

    tuned = tune(sub, local_rpc_server, TuneBudget(trials_per_task=2, trials_per_iter=2),
                 database_dir=folder, timeout_s=60.0, progress=False)
    records = assert_seeded_and_tuned(tuned[0], folder, task)
    assert len(records) == tuned[0].trials_after
    assert not list(temp.iterdir())  # no candidate library left behind


def test_tuning_on_emulated_arm64_cross_compiles_candidates(small_plan: Plan, emulated_arm64, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    """A remote device of another ISA: the library seed and MetaSchedule's candidates are
    built for aarch64, linked by the cross compiler and timed on the emulated board."""
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    task = next(t for t in sorted(small_plan.tasks, key=lambda t: t.flops) if "mean" in t.name)
    sub = Plan(small_plan.space, emulated_arm64.name, small_plan.configs, [task])
    folder = tmp_path / "db"

    tuned = tune(sub, emulated_arm64, TuneBudget(trials_per_task=2, trials_per_iter=2),
                 database_dir=folder, timeout_s=120.0, progress=False)
    records = assert_seeded_and_tuned(tuned[0], folder, task)
    assert all("aarch64" in str(r.target) for r in records)


def test_tuning_through_a_tracker(small_plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A device farm: the profile names a tracker and a key; candidates run on the server it hands out."""
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    task = next(t for t in sorted(small_plan.tasks, key=lambda t: t.flops) if "mean" in t.name)
    sub = Plan(small_plan.space, small_plan.device, small_plan.configs, [task])
    with running_farm(tmp_path / "farm", key="tune", servers=1) as (profile, logs):
        tuned = tune(sub, profile, TuneBudget(trials_per_task=2, trials_per_iter=2),
                     database_dir=tmp_path / "db", timeout_s=60.0, progress=False)
    assert_seeded_and_tuned(tuned[0], tmp_path / "db", task)
    assert "load_module" in logs[0].read_text()  # the timings ran on the farm's server


@pytest.mark.slow  # emulated arm64 (qemu): the device comes up in about a minute
def test_library_schedules_emit_correct_neon_code_for_every_layer_kind(emulated_arm64, tmp_path, pipeline_cache,
                                                                       monkeypatch):
    """The same schedules at NEON's width (4 lanes): a demo subnet with every layer kind
    (stem, 1x1 expand/project, depthwise 3x3 and 5x5, alone, fused with their projection
    and fused into whole blocks (the fusions' map thresholds lowered so the demo's small
    maps qualify), SE,
    pool, classifier, element-wise residual adds and activations) cross-compiled for
    aarch64 with library schedules only, run on the emulated device and compared with
    PyTorch. Numbers only: no timing."""
    from dataclasses import replace

    import tvm

    from pipeline.compile import export_onnx, onnx_to_relax
    from pipeline.kernels import fuse
    from pipeline.compile.numerics import compare
    from pipeline.compile.verify import run_on_device
    from pipeline.device import export_library, open_session
    from pipeline.kernels.kinds import kernel_kind
    from pipeline.kernels.lower import fuse_for_device
    from pipeline.kernels.schedules import ScheduleParams

    space = SearchSpace.load("demo")
    kernels = tuple(max(c) if i % 2 else min(c) for i, c in enumerate(space.choices()["kernel_size"]))
    config = space.validate(replace(space.largest(), resolution=32, kernel_size=kernels))
    model = _randomise(build_static(space, config, 10), seed=3)
    path = export_onnx(model, config.resolution, tmp_path / "m.onnx")
    target = emulated_arm64.tvm_target()
    params = ScheduleParams.for_target(target)
    assert params.lanes == 4
    monkeypatch.setattr(fuse, "DEPTHWISE_PROJECT_MIN_MAP_BYTES", 0)
    monkeypatch.setattr(fuse, "MIN_MAP_BYTES", 0)
    _, unscheduled, _ = fuse_for_device(onnx_to_relax(path), target, None, params)
    kinds = {kernel_kind(f)[0] for f in unscheduled.values()}
    assert {"stem", "pointwise", "depthwise", "depthwise+project", "block", "SE", "pool", "classifier",
            "elementwise"} <= kinds, kinds
    windows = {kind: {extents.split(" x ")[1].split(" then ")[0] for k, _, extents in map(kernel_kind, unscheduled.values())
                      if k == kind} for kind in ("depthwise", "depthwise+project")}
    # NHWC depthwise reduces (kh, kw, 1)
    assert "[3, 3, 1]" in windows["depthwise"] and {"[3, 3, 1]", "[5, 5, 1]"} <= windows["depthwise+project"], windows

    lowered, coverage = lower_for_target(onnx_to_relax(path), target, emulated_arm64.name)
    assert coverage.library == coverage.total and not coverage.untuned_tasks, coverage.summary()
    # the late 1x1 kernels prefetch their next weight panel (`prfm`), and the numbers below hold
    assert any("llvm.prefetch" in f.script() for f in prim_funcs(lowered).values())
    lib = export_library(tvm.compile(lowered, target=target), tmp_path / "m.so", emulated_arm64)
    x = np.random.default_rng(0).random((1, 3, config.resolution, config.resolution), dtype=np.float32)
    with open_session(emulated_arm64) as session:
        got = run_on_device(session, lib, x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    result = compare(want, got)
    assert result.ok, (result.max_abs_diff, result.tolerance)


def test_packed_weights_are_contiguous_channel_panels():
    """Panel p of a packed HWIO weight holds output channels p*panel .. (p+1)*panel - 1,
    each input channel's slice of them contiguous."""
    from pipeline.kernels.schedules import pack_weights

    weight = np.arange(1 * 1 * 3 * 8, dtype=np.float32).reshape(1, 1, 3, 8)
    packed = pack_weights(weight, 4)
    assert packed.shape == (2, 1, 1, 3, 4) and packed.flags.c_contiguous
    np.testing.assert_array_equal(packed[1, 0, 0, 2], weight[0, 0, 2, 4:8])
    np.testing.assert_array_equal(packed[0, 0, 0, :, 0], weight[0, 0, :, 0])


def test_matrix_vector_kernel_split_between_cores_adds_its_partial_sums_right(tmp_path):
    """An SE convolution (1x1 on a 1x1 map, 1296 -> 328 channels) scheduled for 2 cores
    splits its reduction (`_schedule_split_gemv`: two partial sums, then their sum) and
    gives the single-core schedule's result."""
    import tvm
    from torch import nn

    from pipeline.kernels.lower import fuse_for_device
    from pipeline.kernels.schedules import ScheduleParams, schedule_primfunc

    path = tmp_path / "se.onnx"
    torch.onnx.export(nn.Sequential(nn.Conv2d(1296, 328, 1), nn.ReLU()).eval(), (torch.randn(1, 1296, 1, 1),),
                      str(path), input_names=["input"], dynamo=False)
    target = load_profile("x86-host").tvm_target()
    one = ScheduleParams.for_target(target)
    _, funcs, _ = fuse_for_device(onnx_to_relax(path), target, None, one)
    func = next(f for name, f in funcs.items() if "conv" in name)
    outputs = {}
    for cores in (1, 2):
        scheduled = schedule_primfunc(func, ScheduleParams(one.lanes, cores, one.registers))
        assert ("_rf" in scheduled.script()) == (cores == 2)  # the partial sums' buffer
        lib = tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)
        rng = np.random.default_rng(0)
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype("float32"))
                for p in scheduled.params]
        lib(*args)
        outputs[cores] = args[-1].numpy()
    assert outputs[1].any()
    np.testing.assert_allclose(outputs[2], outputs[1], rtol=1e-5, atol=1e-4)


def test_simd_width_comes_from_the_cpu_features():
    """LLVM's vector width query says 512 bits for every x86 CPU; the features do not."""
    import tvm

    from pipeline.kernels.schedules import ScheduleParams, simd_lanes

    def lanes(**spec) -> int:
        return simd_lanes(tvm.target.Target({"kind": "llvm", **spec}))

    assert lanes(mcpu="znver1") == lanes(mcpu="haswell") == 8  # AVX2
    assert lanes(mcpu="znver5") == lanes(mcpu="skylake-avx512") == 16
    assert lanes(mtriple="aarch64-linux-gnu", mattr=["+neon"]) == 4
    assert lanes(mcpu="x86-64") == 4  # SSE2 only
    assert ScheduleParams.for_target(load_profile("rpi4").tvm_target()).lanes == 4


def test_register_tiles_fit_the_register_file():
    """AVX2 names 16 vector registers, AVX-512 and NEON 32: a tile's accumulators, its
    weight vectors and the input register fit in them (3 x 4 vectors spilled on AVX2),
    and on 16 registers a depthwise tile (one input load per multiply-add) takes positions."""
    import tvm

    from pipeline.kernels.schedules import register_tile, simd_registers

    def registers(**spec) -> int:
        return simd_registers(tvm.target.Target({"kind": "llvm", **spec}))

    assert registers(mcpu="znver3") == registers(mcpu="x86-64") == 16
    assert registers(mcpu="znver5") == registers(mtriple="aarch64-linux-gnu", mattr=["+neon"]) == 32
    for width, channels in [(2304, 96), (36, 1152), (196, 384), (49, 1296), (2304, 24), (9216, 64), (81, 200),
                            (49, 216)]:
        positions, tile = register_tile(width, channels, 8, 16)
        vectors = tile // 8
        assert channels % tile == 0
        assert width % positions == 0 or -(-width // positions) * positions <= 1.125 * width  # predicated tail
        assert positions * vectors + vectors + 1 <= 15 and positions <= 9
    assert register_tile(2304, 96, 8, 16) == (6, 16)  # the AVX2 sgemm micro-kernel's 6 x 16
    assert register_tile(49, 1248, 8, 16) == (6, 16)  # 7x7 map: 9 tiles, the last predicated
    assert register_tile(81, 200, 8, 16) == (9, 8)  # 25 vectors: one wide, 9 positions
    assert register_tile(7, 64, 8, 16) == (7, 8)  # predicating 6 of 12 would waste 5 positions
    assert register_tile(48, 96, 8, 16, broadcast=False, taps=25) == (8, 8)  # 5x5: positions
    assert register_tile(48, 96, 8, 16, broadcast=False, taps=9) == (4, 16)  # 3x3: whole 64-byte lines
    assert register_tile(64, 192, 8, 16, broadcast=False, taps=9, stride=2) == (2, 32)
    assert register_tile(7, 1296, 8, 16, broadcast=False) == (7, 8)
    assert register_tile(1, 96, 8, 16, broadcast=False) == (1, 32)  # one position: vectors for 4 accumulators
    # AVX-512: 2 or 3 vectors, up to 14 accumulators, predicated where that holds more
    assert register_tile(2304, 96, 16, 32) == (7, 32)  # 330 tiles, the last predicated
    assert register_tile(81, 224, 16, 32) == (7, 32)  # 9x9 map: 12 tiles of 7, 3 positions wasted
    assert register_tile(81, 1296, 16, 32) == (4, 48)  # 81 vectors: 3 per position
    assert register_tile(324, 112, 16, 32) == (12, 16)  # 7 vectors: the general rule
    assert register_tile(2304, 96, 4, 32) == (3, 16)  # NEON keeps the general rule (not timed there)


@pytest.mark.parametrize("size", [32, 33])
def test_nchw_input_transpose_is_vectorised_along_the_image_rows(size):
    """The network's NCHW input becomes NHWC (3 channels innermost, shorter than a
    vector): the schedule loads 16 pixels of a row at once and stores them 3 apart; a
    row that 16 does not divide keeps the general schedule. Both give the transpose."""
    import tvm
    from tvm import te

    from pipeline.kernels.schedules import ScheduleParams, schedule_primfunc

    image = te.placeholder((1, 3, size, size), name="image")
    nhwc = te.compute((1, size, size, 3), lambda n, h, w, c: image[n, c, h, w], name="nhwc")
    func = schedule_primfunc(te.create_prim_func([image, nhwc]), ScheduleParams(lanes=16, cores=2))
    script = func.script()
    along_rows = "for c in T.unroll(3):" in script and "for w_1 in T.vectorized(16):" in script
    assert along_rows == (size % 16 == 0), script
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target="llvm")
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros((1, size, size, 3), np.float32))
    lib(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), x.transpose(0, 2, 3, 1))


def test_weight_heavy_pointwise_kernel_prefetches_its_next_panel_and_keeps_its_numbers(tmp_path, monkeypatch):
    """A late-stage expansion (224 -> 1296 channels at 9x9: more weights than activations)
    gets the next-panel prefetch (`kernels.prefetch`) at 1 and 2 cores, an early one (16 ->
    64 at 56x56) does not, and the prefetching kernel computes what the one without does."""
    import tvm
    from torch import nn

    from pipeline.kernels import schedules
    from pipeline.kernels.lower import fuse_for_device
    from pipeline.kernels.schedules import PACKED_WEIGHTS_ATTR, ScheduleParams, pack_weights, schedule_primfunc

    target = load_profile("x86-host").tvm_target()
    one = ScheduleParams.for_target(target)

    def kernel(cin: int, cout: int, size: int):
        path = tmp_path / f"{cin}_{cout}.onnx"
        torch.onnx.export(nn.Conv2d(cin, cout, 1).eval(), (torch.randn(1, cin, size, size),), str(path),
                          input_names=["input"], dynamo=False)
        _, funcs, _ = fuse_for_device(onnx_to_relax(path), target, None, one)
        return next(f for name, f in funcs.items() if "conv" in name)

    assert "llvm.prefetch" not in schedule_primfunc(kernel(16, 64, 56), one, pack_weights=True).script()
    heavy = kernel(224, 1296, 9)
    rng = np.random.default_rng(0)
    for cores in (1, 2):
        params = ScheduleParams(one.lanes, cores, one.registers)
        outputs = {}
        for prefetch in (True, False):
            monkeypatch.setattr(schedules, "PREFETCH_PANELS", prefetch)
            scheduled = schedule_primfunc(heavy, params, pack_weights=True)
            assert ("llvm.prefetch" in scheduled.script()) == prefetch
            panels = {int(k): int(v) for k, v in scheduled.attrs[PACKED_WEIGHTS_ATTR].items()}
            lib = tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)
            raw = [rng.standard_normal([int(d) for d in p.shape]).astype("float32") for p in heavy.params]
            args = [tvm.runtime.tensor(pack_weights(a, panels[i]) if i in panels else a) for i, a in enumerate(raw)]
            lib(*args)
            outputs[prefetch] = args[-1].numpy()
            rng = np.random.default_rng(0)  # the same inputs for both
        assert outputs[True].any()
        np.testing.assert_array_equal(outputs[True], outputs[False])


@pytest.mark.parametrize("tiles, every", [(5, 1), (7, 2), (12, 4)])
def test_the_prefetch_covers_each_line_of_the_next_panel_once(tiles, every):
    """Over one panel's position tiles and (every `every`-th) reduction steps, the
    prefetches that run (their condition true) address every cache line of the next
    panel exactly once, and the last panel prefetches nothing. With more tiles than the
    panel has lines per reduction step, the prefetches spread over every tile."""
    import tvm
    from tvm.sym.analyzer import Analyzer

    from pipeline.kernels.prefetch import CACHE_LINE, PanelPrefetch, prefetch_every

    panels, reduction, panel = 3, 8, 48
    assert prefetch_every(reduction, panel, tiles) == every
    weight = tvm.tirx.decl_buffer((panels, 1, 1, reduction, panel), "float32", name="w")
    p, t, k = (tvm.tirx.Var(n, "int64") for n in "ptk")
    statement = PanelPrefetch(weight, k, p, t, reduction // every).statement()
    address = statement.then_case.value.args[1].args[0]  # call_llvm_intrin(id, address_of(w[...]), ...)
    per_line = CACHE_LINE // 4
    for current in range(panels):
        lines = []
        for tile in range(tiles):
            for step in range(reduction // every):
                analyzer = Analyzer()
                for var, value in ((p, current), (t, tile), (k, step)):
                    analyzer.bind(var, tvm.tirx.const(value, "int64"))
                if int(analyzer.simplify(statement.condition)):
                    index = [int(analyzer.simplify(i)) for i in address.indices]
                    lines.append(int(np.ravel_multi_index(index, [int(d) for d in weight.shape])) // per_line)
        first = (current + 1) * reduction * panel // per_line
        want = list(range(first, first + reduction * panel // per_line)) if current + 1 < panels else []
        assert sorted(lines) == want


def test_the_lowering_fingerprint_covers_every_module_that_shapes_a_kernel():
    """A compiled kernel depends on the lowering modules and on every pipeline.kernels
    module they import at load time (the database's code aside: which records apply is
    hashed from the records); a module left out of the fingerprint would let the compile
    cache serve kernels built by older code."""
    import ast

    from pipeline.kernels import database

    folder = Path(database.__file__).parent
    sources = set(database._LOWERING_SOURCES)
    for name in sources:
        tree = ast.parse((folder / name).read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline.kernels."):
                module = node.module.rsplit(".", 1)[1]
                assert module == "database" or f"{module}.py" in sources, (name, module)
