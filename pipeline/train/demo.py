"""The demo supernet: the demo space trained on the synthetic set.

The default `pipeline build` needs a trained supernet without any download or GPU, and
training one takes 10-20 minutes of a 2-core machine, so the package ships the one that
`pipeline train --demo` produced (`pipeline/data/supernets/demo.pt`, recipe
`train_demo.yaml` with its seed; `demo.json` beside it says how it was made and how it
evaluated). `pipeline train --demo` trains anew into the cache (resuming an interrupted
run) and writes the same two files there; a supernet trained that way is the one the
default build then uses.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import ConfigError
from pipeline.paths import DATA_DIR, cache_dir
from pipeline.train.config import TrainConfig
from pipeline.train.loop import LOG_FILE, TrainResult, train
from pipeline.train.state import STATE_FILE
from pipeline.train.synthetic import SyntheticSpec, generate

log = logging.getLogger(__name__)

#: The demo's data: 10 classes, 200 train + 50 val images each, at the demo space's 64 px.
DEMO_DATA = SyntheticSpec(num_classes=10, train_per_class=200, val_per_class=50, resolution=64, seed=0)


#: The shipped demo supernet (and its `demo.json`): what `pipeline train --demo` produced.
SHIPPED_DEMO = DATA_DIR / "supernets" / "demo.pt"
#: Steps whose losses `demo.json` records, for checking that a re-run reproduces the training.
FIRST_STEPS = 3


def demo_supernet_path() -> Path:
    """Where `pipeline train --demo` writes the demo supernet (`<cache>/supernets/demo.pt`)."""
    return cache_dir() / "supernets" / "demo.pt"


def demo_supernet() -> Path:
    """The demo supernet the default build uses: the one `pipeline train --demo` wrote
    into the cache if there is one, else the shipped one."""
    trained = demo_supernet_path()
    return trained if trained.is_file() else SHIPPED_DEMO


def demo_data_dir() -> Path:
    """The synthetic image folders the demo trains on."""
    return cache_dir() / "data" / "synthetic-demo"


def demo_config(recipe: str | Path = "demo", **overrides: Any) -> TrainConfig:
    """A recipe (the `demo` one by default) pointed at the cached synthetic set and run
    folder; `overrides` as in `TrainConfig.load` (None = not overridden)."""
    defaults = {"data": str(demo_data_dir()), "checkpoint__dir": str(cache_dir() / "runs" / "demo")}
    return TrainConfig.load(recipe, **{**defaults, **{k: v for k, v in overrides.items() if v is not None}})


def train_demo(cfg: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """Generate the synthetic set if needed, train (resuming an interrupted run) and
    publish the supernet at `demo_supernet_path()`, with its description beside it."""
    cfg = cfg or demo_config()
    if not cfg.data:
        raise ConfigError("the demo recipe needs a data folder for the synthetic set; use demo_config()")
    generate(cfg.data, DEMO_DATA)
    resume = (Path(cfg.checkpoint.dir) / STATE_FILE).is_file()
    if resume:
        log.info("resuming the demo training in %s", cfg.checkpoint.dir)
    result = train(cfg, resume=resume, progress=progress)
    published = demo_supernet_path()
    with atomic_path(published) as tmp:
        shutil.copyfile(result.checkpoint, tmp)
    write_json(published.with_suffix(".json"), describe_demo(published, Path(cfg.checkpoint.dir) / LOG_FILE), indent=1)
    for r in result.evaluation:
        log.info("demo supernet: %.2f MFLOPs subnet top-1 %.1f%%", r.mflops, r.top1)
    return result


def describe_demo(checkpoint: Path, run_log: Path) -> dict[str, Any]:
    """How a demo supernet was made and how it evaluated (what `demo.json` holds).

    The recipe itself is in the checkpoint (`extra.train.config`); this records what a
    reader wants without loading it: the command, seed, file hash, where and how long it
    trained (from the run log), the smallest and largest subnets' top-1, and the losses
    of the first steps, which a re-run must reproduce (tests/test_demo_supernet.py).
    """
    import torch

    from pipeline.model import load_checkpoint

    trained = load_checkpoint(checkpoint).extra["train"]
    events = [json.loads(line) for line in run_log.read_text().splitlines() if line.strip()]
    steps = [e for e in events if e["event"] == "step"]
    batch = trained["config"]["batch_size"]
    return {
        "command": "pipeline train --demo",
        "recipe": "pipeline/data/train_demo.yaml",
        "seed": trained["config"]["seed"],
        "steps": trained["step"],
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "bytes": checkpoint.stat().st_size,
        "torch": torch.__version__,
        "threads": trained["config"]["threads"],
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "train_seconds": round(sum(batch / e["images_per_s"] for e in steps if e["images_per_s"] > 0)),
        "evaluation": trained["evaluation"],
        "first_steps": [{k: v for k, v in e.items() if k not in ("event", "images_per_s")} for e in steps[:FIRST_STEPS]],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
