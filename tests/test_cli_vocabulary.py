"""One CLI vocabulary: `--space` and `--device` mean the same and default the same way in
every command (the rule is in `pipeline --help` and each option's help)."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.cli.options import DEFAULT_DEVICE, DEVICE_RULE, SPACE_RULE
from pipeline.device import load_profile
from pipeline.space import SearchSpace, named_configs


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def _option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts), None)


COMMANDS = _commands(main)


def test_every_space_and_device_option_follows_the_one_rule() -> None:
    with_space = {n: _option(c, "--space") for n, c in COMMANDS.items() if _option(c, "--space")}
    with_device = {n: _option(c, "--device") for n, c in COMMANDS.items() if _option(c, "--device")}
    assert {"info", "compile", "profile", "predictor fit", "kernels plan", "kernels tune", "build",
            "train"} <= set(with_space)
    assert {"compile", "profile", "predictor fit", "predictor eval", "predictor transfer", "kernels plan",
            "kernels tune", "search", "build", "measurements export"} <= set(with_device)
    for name, opt in with_space.items():
        assert SPACE_RULE in opt.help and opt.default is None and opt.metavar == "NAME|FILE", name
    for name, opt in with_device.items():
        assert DEVICE_RULE in opt.help and opt.metavar == "NAME|FILE", name
        expected = {"build": (), "measurements export": None, "search": (DEFAULT_DEVICE,)}.get(name, DEFAULT_DEVICE)
        assert opt.default == expected, name
    top = CliRunner().invoke(main, ["--help"])
    assert top.exit_code == 0
    flat = " ".join(top.output.split())
    assert " ".join(SPACE_RULE.split()) in flat and " ".join(DEVICE_RULE.split()) in flat


def test_profile_has_one_option_for_what_it_measures() -> None:
    profile = COMMANDS["profile"]
    assert not any(_option(profile, f) for f in ("--blocks", "--all-blocks", "--only-blocks", "--no-blocks"))
    runner = CliRunner()
    for bad, why in (("cells", "give one or more of subnets, blocks, space-blocks"),
                     ("blocks,space-blocks", "overlap")):
        result = runner.invoke(main, ["profile", "--measure", bad])
        assert result.exit_code == 2 and why in result.output, result.output


def test_space_default_follows_what_the_command_is_given(tmp_path: Path) -> None:
    runner = CliRunner()
    a0 = json.loads(runner.invoke(main, ["info", "a0", "--json"]).output)
    assert a0["space"] == "attentivenas"  # A0..A6 are AttentiveNAS configs
    demo_config = tmp_path / "small.json"
    demo_config.write_text(json.dumps(SearchSpace.load("demo").smallest().to_dict()))
    assert json.loads(runner.invoke(main, ["info", str(demo_config), "--json"]).output)["space"] == "demo"
    full_config = tmp_path / "a0.json"
    full_config.write_text(json.dumps(named_configs()["a0"].to_dict()))
    refused = runner.invoke(main, ["info", str(full_config)])
    assert refused.exit_code == 2 and "space demo by default; pass --space" in refused.output
    assert json.loads(runner.invoke(main, ["info", str(full_config), "--space", "attentivenas",
                                           "--json"]).output)["space"] == "attentivenas"


def test_device_is_a_name_or_a_profile_file_everywhere(tmp_path: Path, pipeline_cache: Path) -> None:
    """A profile file names the same device as its name: name-keyed commands find its state."""
    raw = yaml.safe_load(Path(load_profile("x86-host").source).read_text())
    profile_file = tmp_path / "my-host.yaml"
    profile_file.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    for device in ("x86-host", str(profile_file)):
        result = runner.invoke(main, ["predictor", "eval", "--device", device])
        assert result.exit_code == 2 and "no latency predictor for device 'x86-host'" in result.output, device
    missing = runner.invoke(main, ["compile", "a0", "--device", "pixel9"])
    assert missing.exit_code == 2 and "pixel9" in missing.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
