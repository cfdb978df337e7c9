"""The demo supernet: the demo space trained on the synthetic set, kept in the cache.

The default `pipeline build` needs a trained supernet without any download or GPU;
`ensure_demo_supernet()` returns it, training it first (a few minutes on 2 CPU cores)
when the cache has none. An interrupted demo training resumes from its last state.
"""
from __future__ import annotations

import fcntl
import logging
import shutil
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path
from pipeline.errors import ConfigError
from pipeline.paths import cache_dir
from pipeline.train.config import TrainConfig
from pipeline.train.loop import TrainResult, train
from pipeline.train.state import STATE_FILE
from pipeline.train.synthetic import SyntheticSpec, generate

log = logging.getLogger(__name__)

#: The demo's data: 10 classes, 200 train + 50 val images each, at the demo space's 64 px.
DEMO_DATA = SyntheticSpec(num_classes=10, train_per_class=200, val_per_class=50, resolution=64, seed=0)


def demo_supernet_path() -> Path:
    """Where the default build looks for the demo supernet (`<cache>/supernets/demo.pt`)."""
    return cache_dir() / "supernets" / "demo.pt"


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
    publish the supernet at `demo_supernet_path()`."""
    cfg = cfg or demo_config()
    if not cfg.data:
        raise ConfigError("the demo recipe needs a data folder for the synthetic set; use demo_config()")
    generate(cfg.data, DEMO_DATA)
    resume = (Path(cfg.checkpoint.dir) / STATE_FILE).is_file()
    if resume:
        log.info("resuming the demo training in %s", cfg.checkpoint.dir)
    result = train(cfg, resume=resume, progress=progress)
    with atomic_path(demo_supernet_path()) as tmp:
        shutil.copyfile(result.checkpoint, tmp)
    for r in result.evaluation:
        log.info("demo supernet: %.2f MFLOPs subnet top-1 %.1f%%", r.mflops, r.top1)
    return result


def ensure_demo_supernet(progress: bool = True) -> Path:
    """The demo supernet's checkpoint path, training it first if the cache has none.

    Concurrent callers (e.g. two builds) serialise on a lock file: one trains, the
    others wait and then find the checkpoint.
    """
    path = demo_supernet_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            log.info("no demo supernet at %s: training it (a few minutes on 2 CPU cores)", path)
            train_demo(progress=progress)
    return path
