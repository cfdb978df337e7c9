"""Supernet, extraction, static subnets, hook counts and checkpoints (ours and official)."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import reference_file
from torch import nn

from pipeline.errors import CheckpointError
from pipeline.model import (
    Supernet,
    build_static,
    count_module,
    load_checkpoint,
    load_official_state_dict,
    load_supernet,
    save_checkpoint,
)
from pipeline.space import SearchSpace, SubnetConfig, named_configs
from pipeline.space.arch import block_specs, count_flops, count_params

SPACES = ("demo", "attentivenas")


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so that every slice matters (no zero gammas, no unit BN)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are small: one thread avoids spin-waiting when other work shares the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def supernets() -> dict[str, Supernet]:
    """One randomized supernet per space, in eval mode (shared: building the full one takes a while)."""
    return {name: _randomize(Supernet(SearchSpace.load(name))).eval() for name in SPACES}


@pytest.fixture(scope="module")
def official_shapes() -> dict[str, list[int]]:
    return json.loads(reference_file("attentivenas/official_state_dict_shapes.json").read_text())


def _random_configs(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    rng = random.Random(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n - 2)]


# ------------------------------------------------------------ structure, keys
def test_state_dict_keys_and_shapes_are_official(supernets: dict[str, Supernet],
                                                 official_shapes: dict[str, list[int]]) -> None:
    ours = {k: list(v.shape) for k, v in supernets["attentivenas"].state_dict().items()}
    theirs = {k: v for k, v in official_shapes.items() if ".bn_tracking." not in k}
    assert list(ours) == list(theirs)  # same keys, same order
    assert ours == theirs
    params = sum(p.numel() for p in supernets["attentivenas"].parameters())
    assert round(params / 1e6, 2) == 23.93  # published supernet size


# ------------------------------------------------------ FLOPs / params by hooks
@pytest.mark.parametrize("space_name", SPACES)
def test_analytic_counts_equal_hook_counts_of_extracted_module(supernets: dict[str, Supernet],
                                                               space_name: str) -> None:
    supernet = supernets[space_name]
    configs = _random_configs(supernet.space, 12, seed=3)
    if space_name == "attentivenas":
        configs += list(named_configs().values())
    for config in configs:
        cost = count_module(supernet.extract(config), config.resolution)
        assert cost.flops == count_flops(supernet.space, config), config
        assert cost.params == count_params(supernet.space, config), config


# -------------------------------------------------------------- equivalence
def _assert_same_output(supernet: Supernet, config: SubnetConfig, batch: int) -> torch.Tensor:
    x = torch.randn(batch, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(7))
    supernet.set_active(config)
    assert supernet.active_config == config
    with torch.no_grad():
        expected = supernet(x)
        got = supernet.extract(config)(x)
    assert got.shape == (batch, supernet.num_classes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    return expected


def test_extracted_output_equals_supernet_output_demo(supernets: dict[str, Supernet]) -> None:
    supernet = supernets["demo"]
    outputs = [_assert_same_output(supernet, c, batch=3) for c in _random_configs(supernet.space, 12, seed=4)]
    # Different subnets compute different functions (the comparison is not vacuous).
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)
    assert all(o.std() > 1e-3 for o in outputs)


def test_extracted_output_equals_supernet_output_full_space(supernets: dict[str, Supernet]) -> None:
    supernet = supernets["attentivenas"]
    rng = random.Random(5)
    for _ in range(2):
        config = supernet.space.sample(rng)
        small = SubnetConfig.from_dict({**config.to_dict(), "resolution": 192})
        _assert_same_output(supernet, small, batch=1)


def test_supernet_runs_any_input_size(supernets: dict[str, Supernet]) -> None:
    supernet = supernets["demo"]
    config = supernet.space.sample(random.Random(6))
    supernet.set_active(config)
    extracted = supernet.extract(config)
    x = torch.randn(2, 3, 41, 41)  # odd sizes exercise the shortcut pool's padding
    with torch.no_grad():
        torch.testing.assert_close(extracted(x), supernet(x), rtol=1e-5, atol=1e-5)


def test_weight_sharing_takes_first_channels_centre_kernel_first_blocks(supernets: dict[str, Supernet]) -> None:
    supernet = supernets["attentivenas"]
    largest = supernet.space.largest().to_dict()
    # mb3 (stage 2): 4 of 6 blocks, kernel 3 of 5, width 32 of 40, expand 4 of 6.
    raw = {**largest, "depth": largest["depth"][:2] + [4] + largest["depth"][3:]}
    raw["kernel_size"][2], raw["width"][3], raw["expand_ratio"][2] = 3, 32, 4
    config = SubnetConfig.from_dict(raw)
    subnet = supernet.extract(config)
    specs = block_specs(supernet.space, config)
    first = next(i for i, s in enumerate(specs) if s.stage == 2)
    stage_start = sum(max(s.depths) for s in supernet.space.stages[:2])
    assert [s.index for s in specs if s.stage == 2] == [0, 1, 2, 3]
    for j in range(4):
        spec = specs[first + j]
        ours = subnet.blocks[first + j].mobile_inverted_conv
        shared = supernet.blocks[stage_start + j].mobile_inverted_conv
        mid = spec.mid_channels
        assert torch.equal(ours.depth_conv.conv.weight, shared.depth_conv.conv.conv.weight[:mid, :, 1:4, 1:4])
        assert torch.equal(ours.inverted_bottleneck.conv.weight,
                           shared.inverted_bottleneck.conv.conv.weight[:mid, :spec.in_channels])
        assert torch.equal(ours.point_linear.bn.running_var, shared.point_linear.bn.bn.running_var[:32])
        assert torch.equal(ours.depth_conv.se.reduce.weight,
                           shared.depth_conv.se.fc["reduce"].weight[:spec.se_channels, :mid])


def test_training_touches_only_the_active_slices() -> None:
    space = SearchSpace.load("demo")
    supernet = Supernet(space, num_classes=10).train()
    supernet.set_active(space.smallest())
    before = supernet.first_conv.bn.bn.running_mean.clone()
    supernet(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    grad = supernet.first_conv.conv.conv.weight.grad
    small = space.smallest().width[0]
    assert grad[:small].abs().sum() > 0 and torch.all(grad[small:] == 0)
    after = supernet.first_conv.bn.bn.running_mean
    assert not torch.equal(after[:small], before[:small]) and torch.equal(after[small:], before[small:])
    unused = supernet.blocks[1].mobile_inverted_conv.depth_conv.conv.conv.weight  # smallest has depth 1
    assert unused.grad is None


def test_drop_connect_follows_the_official_schedule() -> None:
    space = SearchSpace.load("attentivenas")
    with torch.device("meta"):
        supernet = Supernet(space, drop_connect=0.2)
    rates = [block.drop_connect_rate for block in supernet.blocks]
    last_two = sum(max(s.depths) for s in space.stages[:5])  # mb6 and mb7 only
    assert all(r == 0 for r in rates[:last_two])
    assert rates[last_two:] == [0.2 * i / 37 for i in range(last_two, 37)]
    supernet.set_dropout_rate(0.0, 0.0)
    assert all(block.drop_connect_rate == 0 for block in supernet.blocks)


def test_build_static_has_the_extracted_structure() -> None:
    space = SearchSpace.load("demo")
    config = space.sample(random.Random(8))
    fresh = build_static(space, config, num_classes=10)
    extracted = Supernet(space, num_classes=10).extract(config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in extracted.state_dict().items()}
    assert count_module(fresh, config.resolution) == count_module(extracted, config.resolution)
    assert fresh.config == config and fresh.resolution == config.resolution
    assert fresh(torch.randn(2, 3, config.resolution, config.resolution)).shape == (2, 10)
    assert not extracted.training


# ---------------------------------------------------------------- checkpoints
def _official_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every official key (bn_tracking buffers included), without `module.`."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(12345)
        else:
            state[key] = torch.rand(shape, generator=gen) + (0.5 if key.endswith("running_var") else 0.0)
    return state


def _official_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """The released file's layout: DDP's `module.` prefix inside 'state_dict', next to other entries."""
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 360}


def test_official_checkpoint_round_trip(tmp_path: Path, official_shapes: dict[str, list[int]]) -> None:
    path = tmp_path / "attentive_nas_pretrained.pth.tar"
    written = _official_state(official_shapes)
    torch.save(_official_checkpoint(written), path)
    supernet = load_supernet(path)
    assert supernet.space.name == "attentivenas" and supernet.num_classes == 1000
    loaded = supernet.state_dict()
    for key, tensor in loaded.items():
        assert torch.equal(tensor, written[key]), key
    assert len(loaded) == len([k for k in written if ".bn_tracking." not in k])
    # The same weights through a dict instead of a file, into an existing supernet.
    other = Supernet(SearchSpace.load("attentivenas"))
    load_official_state_dict(other, torch.load(path, weights_only=True))
    assert torch.equal(other.classifier.linear.linear.weight, written["classifier.linear.linear.weight"])


def test_missing_tensor_is_refused_naming_the_key(official_shapes: dict[str, list[int]]) -> None:
    key = "blocks.9.mobile_inverted_conv.depth_conv.se.fc.reduce.bias"
    state = _official_state(official_shapes)
    del state[key]
    with pytest.raises(CheckpointError, match=f"lacks tensor '{key}'"):
        load_official_state_dict(Supernet(SearchSpace.load("attentivenas")), _official_checkpoint(state))


def test_wrong_shape_is_refused_naming_key_and_shapes(official_shapes: dict[str, list[int]]) -> None:
    key = "blocks.27.mobile_inverted_conv.point_linear.conv.conv.weight"
    state = _official_state(official_shapes)
    state[key] = torch.zeros(200, 768, 1, 1)
    with pytest.raises(CheckpointError) as err:
        load_official_state_dict(Supernet(SearchSpace.load("attentivenas")), _official_checkpoint(state))
    assert f"'{key}' has shape [200, 768, 1, 1]" in str(err.value)
    assert "expects [216, 768, 1, 1]" in str(err.value)


def test_unexpected_tensor_is_refused(official_shapes: dict[str, list[int]]) -> None:
    state = _official_state(official_shapes)
    state["blocks.37.shortcut.conv.conv.weight"] = torch.zeros(224, 224, 1, 1)
    with pytest.raises(CheckpointError, match="has tensor 'blocks.37.shortcut.conv.conv.weight'"):
        load_official_state_dict(Supernet(SearchSpace.load("attentivenas")), _official_checkpoint(state))


def test_our_checkpoint_round_trip_knows_its_space(tmp_path: Path) -> None:
    supernet = _randomize(Supernet(SearchSpace.load("demo"), num_classes=10), seed=9)
    path = save_checkpoint(tmp_path / "sub" / "demo.pt", supernet, {"epoch": 3, "lr": [0.1, 0.05]})
    loaded = load_checkpoint(path)
    assert loaded.extra == {"epoch": 3, "lr": [0.1, 0.05]}
    assert loaded.supernet.space == supernet.space and loaded.supernet.num_classes == 10
    # a supernet's space is labelled with its head: what is timed without one is what it ships
    assert Supernet(SearchSpace.load("demo"), num_classes=3).space.num_classes == 3
    for (k, a), (_, b) in zip(supernet.state_dict().items(), loaded.supernet.state_dict().items()):
        assert torch.equal(a, b), k
    assert [p.name for p in path.parent.iterdir()] == ["demo.pt"]  # no temporary file left
    # Loaded for evaluation / BN recalibration (training mode): no dropout, no drop-connect.
    assert loaded.supernet.classifier.dropout_rate == 0
    assert all(block.drop_connect_rate == 0 for block in loaded.supernet.blocks)


def test_refused_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    supernet = Supernet(SearchSpace.load("demo"), num_classes=10)
    path = save_checkpoint(tmp_path / "demo.pt", supernet)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"extra\['config'\] is a SubnetConfig"):
        save_checkpoint(path, supernet, {"config": supernet.space.smallest()})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_checkpoint_of_another_space_says_which(tmp_path: Path) -> None:
    demo = Supernet(SearchSpace.load("demo"))
    ours = save_checkpoint(tmp_path / "demo.pt", demo)
    with pytest.raises(CheckpointError, match="space 'demo', not of space 'attentivenas'.*--space demo"):
        load_supernet(ours, SearchSpace.load("attentivenas"))
    # Official layout without space info: the shapes identify the space.
    bare = tmp_path / "demo_official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in demo.state_dict().items()}}, bare)
    with pytest.raises(CheckpointError, match="fits space 'demo'.*--space demo"):
        load_supernet(bare)
    assert load_supernet(bare, SearchSpace.load("demo")).space.name == "demo"


@pytest.mark.parametrize("content", [b"not a checkpoint at all\n", b"PK\x03\x04truncated zip", b""])
def test_garbage_file_gives_one_line_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint") as err:
        load_supernet(path)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_supernet(tmp_path / "absent.pt")
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match="no 'state_dict' of tensors"):
        load_supernet(path)
    torch.save({"args": argparse.Namespace(lr=0.8), "state_dict": {}}, path)  # pickled objects: not run
    with pytest.raises(CheckpointError, match="holds Python objects.*argparse.Namespace"):
        load_supernet(path)
