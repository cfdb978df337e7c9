"""Interleaved whole-net A/B of schedule settings: how every kernel change here was judged.

Each variant overrides module-level constants of `pipeline.kernels.schedules`,
`.lower`, `.prefetch` or `.fuse` (e.g. `MAX_ACCUMULATORS`, `PACK_WEIGHTS`) while the
models are compiled, and/or attributes of the target (`"target.fast-math-arcp": true`); `"tiles": false`
leaves the device's measured tiles (`pipeline kernels tiles`) out; all variants' libraries and onnxruntime then run in the same process, in
rounds that alternate between them, so a noisy neighbour slows every side alike.

    taskset -c 1 .venv/bin/python bench/ab.py --models a0 a6 \
        --variant base '{}' --variant acc24 '{"schedules.MAX_ACCUMULATORS": 24}'

Prints the CPU, a table of medians (ms) and each variant's ratio to the first, and writes
bench/results/ab_<label>.json when `--label` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.atomic import write_json
from runtimes import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"


def _override(settings: dict[str, object]) -> dict[str, object]:
    """Apply `{"module.NAME": value}` to pipeline.kernels' modules; returns the old values."""
    from pipeline.kernels import fuse, lower, prefetch, schedules

    modules = {"schedules": schedules, "lower": lower, "prefetch": prefetch, "fuse": fuse}
    old = {}
    if settings.get("tiles") is False:  # compile without the device's measured tiles
        old["lower.load_tiles"] = lower.load_tiles
        lower.load_tiles = lambda *_: (None, "measured tiles left out (bench/ab.py)")
    settings = {k: v for k, v in settings.items() if k != "tiles"}
    for key, value in settings.items():
        module_name, _, name = key.partition(".")
        module = modules[module_name]
        if not hasattr(module, name):
            raise SystemExit(f"{key}: no such setting in pipeline.kernels.{module_name}")
        old[key] = getattr(module, name)
        setattr(module, name, tuple(value) if isinstance(value, list) else value)
    return old


def _model(spec: str, seed: int):
    """(space, config, classes) of `a0`..`a6`, `full:<seed>` (a random full-space subnet)
    or `demo:<seed>@<px>`."""
    import random

    from pipeline.space import SearchSpace, resolve_arch

    if spec.startswith("demo:"):
        import dataclasses

        rest, _, px = spec[5:].partition("@")
        demo = SearchSpace.load("demo")
        config = demo.sample(random.Random(int(rest)))
        return demo, demo.validate(dataclasses.replace(config, resolution=int(px or 64))), 10
    full = SearchSpace.load("attentivenas")
    if spec.startswith("full:"):
        return full, full.sample(random.Random(int(spec[5:]))), 1000
    return full, full.validate(resolve_arch(spec)), 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["a0", "a6"])
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mcpu", default=None, help="compile for this -mcpu instead of the host's")
    parser.add_argument("--label", default=None)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_BIND_THREADS", "0")

    import numpy as np
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    from pipeline.compile import export_onnx, onnx_to_relax
    from pipeline.device import load_profile
    from pipeline.kernels import lower_for_target
    from pipeline.model import build_static

    target = load_profile("x86-host").tvm_target()
    if args.mcpu:
        target = tvm.target.Target({**target.export(), "mcpu": args.mcpu})
    print(f"CPU: {cpu_model()}; target {target}; {args.threads} thread(s); load {os.getloadavg()[0]:.2f}", flush=True)
    variants = [(name, json.loads(text)) for name, text in args.variant]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            torch.manual_seed(0)
            space, config, classes = _model(spec, 0)
            model = build_static(space, config, classes).eval()
            res = config.resolution
            x = np.random.default_rng(0).random((1, 3, res, res), dtype=np.float32)
            path = export_onnx(model, res, Path(tmp) / f"{spec}.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            expected = session.run(None, {"input": x})[0]
            xt = tvm.runtime.tensor(x)
            runners = {"ort": lambda s=session: s.run(None, {"input": x})}
            for name, settings in variants:
                attrs = {k.removeprefix("target."): v for k, v in settings.items() if k.startswith("target.")}
                variant_target = tvm.target.Target({**target.export(), **attrs}) if attrs else target
                old = _override({k: v for k, v in settings.items() if not k.startswith("target.")})
                try:
                    lowered, _ = lower_for_target(onnx_to_relax(path), variant_target, "x86-host")
                    lib = tvm.compile(lowered, target=variant_target)
                finally:
                    _override(old)
                vm = relax.VirtualMachine(lib, tvm.cpu())
                diff = float(np.abs(vm["main"](xt).numpy() - expected).max())
                if diff > 1e-3:
                    print(f"{spec} {name}: output differs from onnxruntime's by {diff:.3g}", flush=True)
                runners[name] = lambda vm=vm: vm["main"](xt)
            times = {k: [] for k in runners}
            for _ in range(args.rounds):
                for key, fn in runners.items():
                    fn()
                    for _ in range(args.runs):
                        start = time.perf_counter()
                        fn()
                        times[key].append(time.perf_counter() - start)
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            base = ms[variants[0][0]]
            results[spec] = ms
            cells = "  ".join(f"{k} {v:7.3f} ({v / base:4.2f})" for k, v in ms.items())
            print(f"{spec:<10} {res:4d}px  {cells}  load {os.getloadavg()[0]:.2f}", flush=True)
    if args.label:
        write_json(RESULTS / f"ab_{args.label}.json", {"cpu": cpu_model(), "target": str(target),
                                                       "threads": args.threads, "variants": dict(variants),
                                                       "ms": results}, indent=1)


if __name__ == "__main__":
    main()
