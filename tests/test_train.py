"""Training: synthetic data, image folders, recipe config, sampler, a short real training
run (learns; larger beats smaller), exact resume, BN-recalibrated evaluation and its CLI."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.model import load_checkpoint
from pipeline.space import SearchSpace
from pipeline.train import (
    ArchSampler, DataError, EvalData, SyntheticSpec, TrainConfig, evaluate, generate_synthetic, load_splits,
    recalibrate_bn, train,
)
from pipeline.train.config import SamplerConfig
from pipeline.train.synthetic import render
from pipeline.train.state import STATE_FILE

SPACE = SearchSpace.load("demo")
#: A tiny set that a few dozen steps can learn: 4 classes at 32 px, little noise, no clutter.
TINY = SyntheticSpec(num_classes=4, train_per_class=64, val_per_class=24, resolution=32, seed=3, noise=4.0, clutter=0)


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), checkpoint__dir=str(out), image_size=32, batch_size=32, threads=1,
                evaluation__recalib_batches=4, evaluation__batch_size=64)
    base.update(overrides)
    return TrainConfig.load("demo", **base)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic"), TINY)


@pytest.fixture(scope="session")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A short real training of the demo space on the tiny set (shared by the tests below)."""
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_data, out, epochs=8, optimizer__lr=0.05)
    return cfg, train(cfg, progress=False)


# --------------------------------------------------------------------- data
def test_synthetic_set_is_deterministic_and_written_as_image_folders(tmp_path: Path) -> None:
    spec = SyntheticSpec(num_classes=3, train_per_class=2, val_per_class=1, resolution=24, seed=7)
    a, b = generate_synthetic(tmp_path / "a", spec), generate_synthetic(tmp_path / "b", spec)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 3 * (2 + 1)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert np.asarray(Image.open(a / files[0])).shape == (24, 24, 3)
    other = SyntheticSpec(num_classes=3, train_per_class=2, val_per_class=1, resolution=24, seed=8)
    assert not np.array_equal(render(spec, "train", 0, 0), render(other, "train", 0, 0))
    train_split, val_split = load_splits(a)
    assert train_split.classes == val_split.classes and len(train_split.classes) == 3
    assert [label for _, label in train_split.samples] == [0, 0, 1, 1, 2, 2]


def test_image_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'train' folder"):
        load_splits(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_splits(tmp_path)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no images"):
        load_splits(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "0.png")
    (tmp_path / "val" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "dog" / "0.png")
    with pytest.raises(DataError, match="different classes"):
        load_splits(tmp_path)
    # a corrupt file is reported with its path when read
    (tmp_path / "train" / "cat" / "1.png").write_bytes(b"garbage")
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "cat")
    cfg = TrainConfig.load("demo", data=str(tmp_path), checkpoint__dir=str(tmp_path / "run"), batch_size=2,
                           threads=1, sampler__method="uniform")
    with pytest.raises(DataError, match="1.png"):
        train(cfg, progress=False)


def test_config_refuses_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    assert TrainConfig.load("attentivenas").sampler.method == "bestup"
    with pytest.raises(ConfigError, match="sampler.metod"):
        TrainConfig.load("demo", sampler__metod="uniform")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nepochs: many\n")
    with pytest.raises(ConfigError, match="'epochs' must be float"):
        TrainConfig.load(bad)
    with pytest.raises(ConfigError, match="uniform"):
        TrainConfig.load("demo", sampler__method="best")


# ------------------------------------------------------------------ sampler
def test_attentive_sampler_keeps_best_or_worst_candidate_in_the_target_bin() -> None:
    picked = {}
    for method in ("bestup", "worstup"):
        sampler = ArchSampler(SPACE, SamplerConfig(method=method, flops_bin_mflops=0.5, prior_samples=500), 10, 0)
        assert abs(sampler.prior.probs.sum() - 1) < 1e-9
        seen: list = []

        def scorer(candidates):
            seen.append(list(candidates))
            return [sampler.mflops(c) for c in candidates]  # "loss" = MFLOPs: best = cheapest

        sandwich = sampler.sandwich(4, scorer)
        assert sandwich[0] == SPACE.largest() and sandwich[-1] == SPACE.smallest()
        assert len(seen) == 2 and all(len(c) == 3 for c in seen)
        for chosen, cands in zip(sandwich[1:3], seen):
            flops = [sampler.mflops(c) for c in cands]
            assert max(flops) - min(flops) < 0.5 + 1e-9  # same 0.5-MFLOP bin
            assert sampler.mflops(chosen) == (min(flops) if method == "bestup" else max(flops))
        picked[method] = sandwich
    # the sampler's state reproduces its draws (what resume relies on)
    sampler = ArchSampler(SPACE, SamplerConfig(method="uniform"), 10, 0)
    state = sampler.state()
    first = [sampler.draw() for _ in range(5)]
    sampler.set_state(json.loads(json.dumps(state)))
    assert [sampler.draw() for _ in range(5)] == first


# ----------------------------------------------------------------- training
def test_short_training_learns_and_larger_subnets_beat_smaller(trained) -> None:
    cfg, result = trained
    smallest, largest = result.evaluation
    assert smallest.config == SPACE.smallest() and largest.config == SPACE.largest()
    chance = 100.0 / TINY.num_classes
    assert smallest.top1 > chance + 10 and largest.top1 > chance + 10, (smallest.top1, largest.top1)
    # the tiny run gives about 40% / 50% (chance 25%): the largest must lead by a clear margin
    assert largest.top1 >= smallest.top1 + 5, (smallest.top1, largest.top1)
    records = [json.loads(line) for line in (Path(cfg.checkpoint.dir) / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == result.steps and {"lr", "images_per_s", "loss_largest"} <= set(steps[0])
    # the other subnets learn from the labels for `label_epochs`, then from the largest
    label_steps = round(cfg.sandwich.label_epochs * result.steps / cfg.epochs)
    assert label_steps > 0
    assert [r["step"] for r in steps if "loss_smallest_ce" in r] == list(range(1, label_steps + 1))
    assert all("loss_smallest_kd" in r for r in steps[label_steps:])
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.extra["train"]["step"] == result.steps and loaded.supernet.num_classes == TINY.num_classes


def test_resume_continues_exactly(tiny_data: Path, tmp_path: Path) -> None:
    # 2 epochs of 4 steps each (256 images / 64); stopped mid-epoch 1 at step 3, resumed.
    common = dict(epochs=2, batch_size=64, sandwich__dropout=0.2, sandwich__drop_connect=0.2,
                  checkpoint__every_steps=2)
    whole = train(tiny_config(tiny_data, tmp_path / "whole", **common), progress=False, evaluate_at_end=False)
    cut_cfg = tiny_config(tiny_data, tmp_path / "cut", **common)
    first = train(cut_cfg, progress=False, max_steps=3, evaluate_at_end=False)
    assert first.steps == 3 and (tmp_path / "cut" / STATE_FILE).is_file()
    resumed = train(cut_cfg, resume=True, progress=False, evaluate_at_end=False)
    assert whole.steps == resumed.steps == 8
    a, b = load_checkpoint(whole.checkpoint).supernet.state_dict(), load_checkpoint(resumed.checkpoint).supernet.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="differs"):
        train(tiny_config(tiny_data, tmp_path / "cut", **{**common, "batch_size": 32}), resume=True, progress=False)


# --------------------------------------------------------------- evaluation
def test_bn_recalibration_averages_the_subnets_batch_statistics(trained, tiny_data: Path) -> None:
    cfg, result = trained
    supernet = load_checkpoint(result.checkpoint).supernet
    config = SPACE.sample(random.Random(5))
    batches = [torch.randn(8, 3, 32, 32) * (i + 1) for i in range(3)]
    stem = supernet.first_conv
    inputs: list[torch.Tensor] = []
    handle = stem.conv.register_forward_hook(lambda m, i, o: inputs.append(o.detach()))
    seen = recalibrate_bn(supernet, config, batches)
    handle.remove()
    assert seen == 24 and not supernet.training
    c = config.width[0]
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    assert torch.allclose(stem.bn.bn.running_mean[:c], expected, atol=1e-5)
    # recalibrated statistics are what make the subnet work: evaluation after it beats chance
    data = EvalData.from_root(tiny_data, 32, recalib_batches=4, batch_size=64)
    [res] = evaluate(supernet, [SPACE.smallest()], data, progress=False)
    assert res.images == TINY.num_classes * TINY.val_per_class and res.top1 > 100 / TINY.num_classes + 10


def test_evaluate_cli_reports_each_subnet(trained, tiny_data: Path) -> None:
    _, result = trained
    out = CliRunner().invoke(main, ["evaluate", str(result.checkpoint), "--data", str(tiny_data), "--arch",
                                    "smallest", "--arch", "largest", "--recalib-batches", "2", "--batch-size",
                                    "64", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["id"] for r in rows] == [SPACE.smallest().id, SPACE.largest().id]
    assert all(0 <= r["top1"] <= 100 and r["images"] == 96 for r in rows)
    bad = CliRunner().invoke(main, ["evaluate", str(result.checkpoint), "--data", str(tiny_data), "--arch", "a0"])
    assert bad.exit_code == 2 and "not allowed in space" in bad.stderr


def test_forest_predictor_estimator(tmp_path: Path) -> None:
    # one tree: resolution (column 0) <= 40 -> 1.0, else 2.0
    np.savez(tmp_path / "forest.npz", tree000_left=np.array([1, -1, -1]), tree000_right=np.array([2, -1, -1]),
             tree000_feature=np.array([0, -2, -2]), tree000_threshold=np.array([40.0, -2, -2]),
             tree000_value=np.array([[1.5], [1.0], [2.0]]))
    sampler = ArchSampler(SPACE, SamplerConfig(method="bestup", estimator="predictor", flops_bin_mflops=0.5,
                                               prior_samples=200, predictor=str(tmp_path / "forest.npz")), 10, 0)
    assert sampler.predictor.predict([SPACE.smallest(), SPACE.largest()]).tolist() == [1.0, 2.0]
    drawn = [sampler.draw() for _ in range(5)]  # no minibatch scorer needed
    assert all(SPACE.validate(c) == c for c in drawn)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ConfigError, match="bad.npz"):
        ArchSampler(SPACE, SamplerConfig(estimator="predictor", predictor=str(tmp_path / "bad.npz")), 10, 0)
