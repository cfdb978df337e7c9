"""Benchmark (not a test): a measurement batch over a tracker farm, one server vs two in parallel.

Starts a tracker and two RPC servers on 127.0.0.1 (this machine stands in for two boards),
measures the same batch of tiny kernels with one worker and with one worker per server,
and reports wall time and speed-up. On a 2-core machine shared with other work the servers
compete for the same cores, so the speed-up is a lower bound of what separate boards give.
Prints a table and writes bench/results/device_farm.json.

    .venv/bin/python bench/device_farm.py [--jobs 8] [--min-repeat-ms 300]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.device import MeasurePolicy, load_profile
from pipeline.device.check import build_tiny, tiny_inputs
from pipeline.device.profile import TrackerConnection
from pipeline.device.rpcserver import start_rpc_farm
from pipeline.device.store import RecordKey
from pipeline.measure import MeasureJob, measure_batch

RESULTS = Path(__file__).resolve().parent / "results" / "device_farm.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--min-repeat-ms", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
        tracker, servers = start_rpc_farm(Path(tmp), key="bench", servers=2)
        try:
            profile = replace(load_profile("x86-host").with_connection(
                TrackerConnection("127.0.0.1", tracker.port, "bench", timeout_s=60.0)),
                policy=MeasurePolicy(repeat=2, min_repeat_ms=args.min_repeat_ms, max_spread=10.0, threads=1))
            lib = build_tiny(profile, Path(tmp) / "tiny.so")
            jobs = [MeasureJob(RecordKey(profile.name, f"s{i}", "t", "v", "k"), {}, lib, tiny_inputs(i), profile.policy)
                    for i in range(args.jobs)]
            time.sleep(2)  # let both servers register
            rows = []
            for workers in (1, 2):
                t0 = time.perf_counter()
                results = list(measure_batch(profile, jobs, workers=workers, progress=False))
                wall = time.perf_counter() - t0
                rows.append({"workers": workers, "jobs": len(jobs), "ok": sum(r.error is None for r in results),
                             "wall_s": round(wall, 2), "by_worker": sorted({r.worker for r in results})})
        finally:
            for s in servers:
                s.stop()
            tracker.stop()
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"{'workers':>8} {'jobs':>5} {'ok':>4} {'wall s':>8}")
    for r in rows:
        print(f"{r['workers']:>8} {r['jobs']:>5} {r['ok']:>4} {r['wall_s']:>8.2f}")
    print(f"speed-up with 2 servers: {speedup:.2f}x (load average {os.getloadavg()[0]:.1f})")
    write_json(RESULTS, {"rows": rows, "speedup": round(speedup, 2), "min_repeat_ms": args.min_repeat_ms,
                         "loadavg": os.getloadavg()[0], "cpus": os.cpu_count()}, indent=1)


if __name__ == "__main__":
    main()
