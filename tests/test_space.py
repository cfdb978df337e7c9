"""Search space, subnet configs, analytic FLOPs/params and `pipeline info`."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.paths import DATA_DIR
from pipeline.space import ENCODING_SIZE, SearchSpace, SubnetConfig, encode_many, named_configs, resolve_arch
from pipeline.space.arch import count_flops, count_params

#: Published AttentiveNAS table (repository README), MFLOPs.
PUBLISHED_MFLOPS = {"a0": 203, "a1": 279, "a2": 317, "a3": 357, "a4": 444, "a5": 491, "a6": 709}
#: What the official counter (`utils/flops_counter.py`: every leaf module's parameters of the
#: extracted static subnet) reports for A0..A6, and its exact MFLOPs.
OFFICIAL_MPARAMS = {"a0": 9.065, "a1": 9.563, "a2": 11.307, "a3": 12.999, "a4": 11.998, "a5": 12.833,
                    "a6": 15.441}
OFFICIAL_MFLOPS = {"a0": 203.39, "a1": 279.24, "a2": 316.73, "a3": 356.52, "a4": 443.53, "a5": 490.52,
                   "a6": 709.01}


@pytest.fixture(scope="module", params=["attentivenas", "demo"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SearchSpace.load(request.param)


@pytest.fixture(scope="module")
def full() -> SearchSpace:
    return SearchSpace.load("attentivenas")


def _in_space(space: SearchSpace, config: SubnetConfig) -> bool:
    try:
        space.validate(config)
    except ConfigError:
        return False
    return True


# ------------------------------------------------------------------ validation
def test_bad_width_error_names_field_position_value_and_choices(full: SearchSpace) -> None:
    a0 = named_configs()["a0"].to_dict()
    a0["width"][3] = 999
    with pytest.raises(ConfigError) as err:
        full.validate(SubnetConfig.from_dict(a0))
    message = str(err.value)
    assert "width[3] (mb3) = 999" in message
    assert "[32, 40]" in message and "'attentivenas'" in message


@pytest.mark.parametrize("field,index,value,choices", [
    ("resolution", None, 200, "[192, 224, 256, 288]"),
    ("depth", 6, 3, "[1, 2]"),
    ("kernel_size", 0, 7, "[3, 5]"),
    ("expand_ratio", 0, 6, "[1]"),
])
def test_each_field_is_validated(full: SearchSpace, field: str, index: int | None, value: int,
                                 choices: str) -> None:
    raw = named_configs()["a0"].to_dict()
    if index is None:
        raw[field] = value
    else:
        raw[field][index] = value
    with pytest.raises(ConfigError, match=rf"{field}.* = {value} is not allowed.*choices: {re.escape(choices)}"):
        full.validate(SubnetConfig.from_dict(raw))


def test_malformed_configs_are_refused_with_the_reason() -> None:
    raw = named_configs()["a0"].to_dict()
    with pytest.raises(ConfigError, match="lacks \\['depth'\\]"):
        SubnetConfig.from_dict({k: v for k, v in raw.items() if k != "depth"})
    with pytest.raises(ConfigError, match="width must have 9 entries, got 8"):
        SubnetConfig.from_dict({**raw, "width": raw["width"][:8]})
    with pytest.raises(ConfigError, match="kernel_size must be a list of integers"):
        SubnetConfig.from_dict({**raw, "kernel_size": "3,5"})
    with pytest.raises(ConfigError, match="neither a built-in config"):
        resolve_arch("a9")


def test_space_file_lacking_a_key_names_it(tmp_path: Path) -> None:
    raw = yaml.safe_load((DATA_DIR / "demo.yaml").read_text())
    del raw["supernet_config"]["mb4"]["k"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="'mb4' lacks key 'k'"):
        SearchSpace.load(str(path))
    with pytest.raises(ConfigError, match="neither a built-in space"):
        SearchSpace.load("no-such-space")



def test_dataset_classes_are_data_of_the_space_file_not_of_its_name(tmp_path: Path) -> None:
    demo, full = SearchSpace.load("demo"), SearchSpace.load("attentivenas")
    assert (demo.num_classes, full.num_classes) == (10, 1000)
    copy = tmp_path / "my_demo.yaml"
    copy.write_text((DATA_DIR / "demo.yaml").read_text())
    mine = SearchSpace.load(str(copy))
    assert mine.name == "my_demo" and mine.num_classes == 10
    assert SearchSpace.from_dict(mine.to_dict(), mine.name) == mine
    raw = yaml.safe_load((DATA_DIR / "demo.yaml").read_text())
    raw["supernet_config"]["num_classes"] = 37
    assert SearchSpace.from_dict(raw, "x").structure() == demo.structure()  # the head does not shape the supernet
    raw["supernet_config"]["num_classes"] = [10, 20]
    with pytest.raises(ConfigError, match="'num_classes' must be a positive int"):
        SearchSpace.from_dict(raw, "x", source="bad.yaml")

# -------------------------------------------------------------------- sampling
def test_sample_mutate_crossover_stay_in_space(space: SearchSpace) -> None:
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(200)]
    assert all(_in_space(space, c) for c in samples)
    assert len({c.id for c in samples}) > 150  # uniform sampling of a huge space rarely repeats
    for a, b in zip(samples[::2], samples[1::2]):
        mutant = space.mutate(a, 0.5, rng)
        child = space.crossover(a, b, rng)
        assert _in_space(space, mutant) and _in_space(space, child)
        for x, y, z in zip(a.encode(), b.encode(), child.encode()):
            assert z in (x, y)
    assert space.mutate(samples[0], 0.0, rng) == samples[0]


def test_smallest_and_largest_are_the_extremes(space: SearchSpace) -> None:
    small, large = space.smallest(), space.largest()
    assert _in_space(space, small) and _in_space(space, large)
    rng = random.Random(1)
    for _ in range(50):
        c = space.sample(rng)
        assert np.all(small.encode() <= c.encode()) and np.all(c.encode() <= large.encode())
        assert count_flops(space, small) <= count_flops(space, c) <= count_flops(space, large)


def test_full_space_size_and_smallest_is_a0(full: SearchSpace) -> None:
    assert full.size() == 440_301_256_704  # "about 4.4e11 subnets"
    assert full.smallest() == named_configs()["a0"]


# ------------------------------------------------------------- ids, encoding
def test_id_is_stable_across_processes_and_versions() -> None:
    a0 = named_configs()["a0"]
    assert a0.id == "fe059d8b197e"  # recorded once: stores and caches are keyed by it
    code = "from pipeline.space import named_configs; print(named_configs()['a0'].id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == a0.id
    assert SubnetConfig.from_dict(a0.to_dict()).id == a0.id
    assert len({c.id for c in named_configs().values()}) == 7


def test_encode_decode_round_trip(space: SearchSpace) -> None:
    rng = random.Random(2)
    configs = [space.sample(rng) for _ in range(20)]
    matrix = encode_many(configs)
    assert matrix.shape == (20, ENCODING_SIZE) == (20, 31)
    assert [SubnetConfig.decode(row) for row in matrix] == configs
    a0 = named_configs()["a0"]
    assert list(a0.encode()[:10]) == [a0.resolution, *a0.width]
    with pytest.raises(ConfigError, match="31 numbers, got 30"):
        SubnetConfig.decode(matrix[0][:30])


# ----------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("name", sorted(PUBLISHED_MFLOPS))
def test_flops_match_published_table(full: SearchSpace, name: str) -> None:
    assert abs(count_flops(full, named_configs()[name]) / 1e6 - PUBLISHED_MFLOPS[name]) <= 0.5


@pytest.mark.parametrize("name", sorted(OFFICIAL_MPARAMS))
def test_params_and_flops_equal_the_official_counter(full: SearchSpace, name: str) -> None:
    config = named_configs()[name]
    assert round(count_params(full, config) / 1e6, 3) == OFFICIAL_MPARAMS[name]
    assert round(count_flops(full, config) / 1e6, 2) == OFFICIAL_MFLOPS[name]


def test_largest_subnet_and_supernet_size(full: SearchSpace) -> None:
    assert abs(count_flops(full, full.largest()) / 1e6 - 1939) <= 0.5
    assert count_flops(full, named_configs()["a0"]) == 203_389_568


def test_info_json_reports_a0() -> None:
    result = CliRunner().invoke(main, ["info", "a0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert abs(summary["mflops"] - 203.4) <= 0.1
    assert summary["resolution"] == 192 and summary["config"] == named_configs()["a0"].to_dict()
    assert {"mparams", "id"} <= set(summary)


def test_info_bad_arch_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = named_configs()["a0"].to_dict()
    bad["depth"][1] = 9
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = CliRunner().invoke(main, ["info", str(path), "--space", "attentivenas"])
    assert result.exit_code == 2
    assert "depth[1] (mb2) = 9 is not allowed" in result.output
    assert "Traceback" not in result.output
