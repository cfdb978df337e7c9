"""The training entry point under torchrun: 2 CPU processes, gloo, DistributedDataParallel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.model import load_checkpoint
from pipeline.train import SyntheticSpec, generate_synthetic


def test_two_process_ddp_training_runs_and_saves(tmp_path: Path) -> None:
    data = generate_synthetic(tmp_path / "data", SyntheticSpec(num_classes=3, train_per_class=16, val_per_class=4,
                                                               resolution=32, seed=1))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "space": "demo", "data": str(data), "image_size": 32, "epochs": 1, "batch_size": 8, "workers": 0,
        "threads": 1, "sampler": {"method": "bestup", "flops_bin_mflops": 1.0, "prior_samples": 200},
        "checkpoint": {"dir": str(tmp_path / "run"), "every_steps": 2},
        "evaluation": {"recalib_batches": 1, "batch_size": 16},
    }))
    env = {**os.environ, "PIPELINE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pipeline.train", "--config", str(recipe)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start" and start["world"] == 2
    assert start["steps_per_epoch"] == 48 // (2 * 8) and records[-1]["event"] == "end"
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 3  # written once (process 0), not once per process
    loaded = load_checkpoint(tmp_path / "run" / "supernet.pt")
    assert loaded.extra["train"]["step"] == 3 and loaded.supernet.num_classes == 3
