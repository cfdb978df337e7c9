"""What a benchmark result must say about the machine it ran on (CPU, load), in one place."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_info() -> dict:
    """CPU model, cores, 1/5/15-minute load averages: a busy shared machine shows here."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
            "loadavg": [round(v, 2) for v in os.getloadavg()], "node": platform.node()}


def describe(info: dict) -> str:
    return (f"{info['cpu']}, {info['cpus']} CPUs (this process on {info['affinity']}), "
            f"load average {info['loadavg']}")
