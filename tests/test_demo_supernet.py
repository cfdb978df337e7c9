"""The shipped demo supernet: it is what `pipeline train --demo` makes, and says so.

`pipeline/data/supernets/demo.pt` saves every new user the 10-20 minutes of training it;
these tests keep it honest: its description matches the file, it was trained with the
recipe as it is now, and a re-run of that recipe reproduces its first steps.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.model import load_checkpoint
from pipeline.train import TrainConfig, demo_config, demo_supernet, demo_supernet_path, train
from pipeline.train.demo import DEMO_DATA, FIRST_STEPS, SHIPPED_DEMO, demo_data_dir
from pipeline.train.loop import LOG_FILE
from pipeline.train.synthetic import generate

DESCRIPTION = json.loads(SHIPPED_DEMO.with_suffix(".json").read_text())
#: Run-specific settings: where the data and the run folder were.
LOCAL = ("data", "checkpoint")


def _recipe(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in LOCAL}


def test_description_matches_the_file():
    data = SHIPPED_DEMO.read_bytes()
    assert DESCRIPTION["sha256"] == hashlib.sha256(data).hexdigest()
    assert DESCRIPTION["bytes"] == len(data) < 8 * 2**20  # small enough for git and the wheel
    assert DESCRIPTION["command"] == "pipeline train --demo"


def test_trained_with_the_current_demo_recipe():
    """Changing train_demo.yaml without retraining (and re-shipping) the demo supernet fails here."""
    loaded = load_checkpoint(SHIPPED_DEMO)
    trained = loaded.extra["train"]
    assert loaded.supernet.space.name == "demo" and loaded.supernet.num_classes == DEMO_DATA.num_classes
    # saved before space files named their classes: the space is labelled with the head it has
    assert loaded.supernet.space.num_classes == DEMO_DATA.num_classes
    assert _recipe(trained["config"]) == _recipe(TrainConfig.load("demo").to_dict())
    assert DESCRIPTION["seed"] == trained["config"]["seed"]
    assert trained["evaluation"] == DESCRIPTION["evaluation"]
    top1 = {round(e["mflops"], 2): e["top1"] for e in trained["evaluation"]}
    smallest, largest = (top1[k] for k in sorted(top1))
    assert largest > smallest > 100 / DEMO_DATA.num_classes + 30  # trained, far above chance


def test_default_is_the_shipped_one_until_you_train_your_own(pipeline_cache):
    assert demo_supernet() == SHIPPED_DEMO
    demo_supernet_path().parent.mkdir(parents=True)
    demo_supernet_path().write_bytes(SHIPPED_DEMO.read_bytes())
    assert demo_supernet() == demo_supernet_path()


@pytest.mark.slow  # generates the 2,500-image demo set and runs 3 steps: ~25 s of CPU, 1.5 min on a loaded machine
def test_rerunning_the_recipe_reproduces_its_first_steps(pipeline_cache, tmp_path):
    """Same data (the generator is seeded), same recipe and seed: the first steps' losses
    and sampled subnets are the recorded ones (bit-identical on the machine kind the demo
    was trained on; another CPU's float kernels may differ in the last digits)."""
    generate(demo_data_dir(), DEMO_DATA)
    train(demo_config(checkpoint__dir=str(tmp_path / "run")), max_steps=FIRST_STEPS, progress=False)
    rerun = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    steps = [e for e in rerun if e["event"] == "step"]
    assert len(steps) == len(DESCRIPTION["first_steps"]) == FIRST_STEPS
    for mine, recorded in zip(steps, DESCRIPTION["first_steps"]):
        assert mine["step"] == recorded["step"] and mine["mflops_sampled"] == recorded["mflops_sampled"]
        for key in (k for k in recorded if k.startswith("loss")):
            assert mine[key] == pytest.approx(recorded[key], rel=1e-5), key
