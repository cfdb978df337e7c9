"""Workload extraction: the distinct tuning tasks of a whole search space on one device.

Every subnet is built from a finite set of layer shapes: the stem at each resolution,
each stage's blocks (input/output channels, kernel, expand ratio, stride, input size)
and the head. `covering_configs` builds a handful of subnets that together contain every
such shape (a greedy packing of shape requirements into configs), the plan adds the
smallest, the largest and a few random subnets, and each goes through the same path as a
compile (static subnet -> ONNX -> Relax -> `lower.fuse_for_tuning`) so that the tasks are
exactly the fused kernels compiled subnets contain. Tasks are deduplicated by structural
equality of the workload (what MetaSchedule keys records by).

Per-subnet results are cached as they come (`cache_dir()/kernels/plans/`), so an
interrupted plan resumes.
"""
from __future__ import annotations

import json
import logging
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tvm
import tvm_ffi

from pipeline.atomic import write_json
from pipeline.kernels.database import lowering_fingerprint
from pipeline.paths import cache_dir
from pipeline.progress import progress_bar
from pipeline.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)

Requirement = dict  # {"resolution": r, ("width", i): c, ("kernel_size", s): k, ("expand_ratio", s): t, ("deep", s): True}


def _requirements(space: SearchSpace) -> list[Requirement]:
    """One requirement per distinct layer shape of the space (stem, block, head)."""
    reqs: list[Requirement] = []
    widths = space.width_choices()
    for res in space.resolutions:
        for w0 in widths[0]:
            reqs.append({"resolution": res, ("width", 0): w0})
        for s, stage in enumerate(space.stages):
            for k in stage.kernel_sizes:
                for t in stage.expand_ratios:
                    for c_out in widths[s + 1]:
                        for c_in in widths[s]:
                            reqs.append({"resolution": res, ("width", s): c_in, ("width", s + 1): c_out,
                                         ("kernel_size", s): k, ("expand_ratio", s): t})
                        if max(stage.depths) > 1:
                            reqs.append({"resolution": res, ("width", s + 1): c_out, ("kernel_size", s): k,
                                         ("expand_ratio", s): t, ("deep", s): True})
        for w7 in widths[7]:
            for w8 in widths[8]:
                reqs.append({"resolution": res, ("width", 7): w7, ("width", 8): w8})
    return reqs


def _compatible(assignment: dict, req: Requirement) -> bool:
    return all(assignment.get(key, value) == value for key, value in req.items())


def _satisfies(config: SubnetConfig, req: Requirement) -> bool:
    for key, value in req.items():
        if key == "resolution":
            if config.resolution != value:
                return False
        elif key[0] == "deep":
            if config.depth[key[1]] < 2:
                return False
        elif getattr(config, key[0])[key[1]] != value:
            return False
    return True


def _config_from(space: SearchSpace, assignment: dict) -> SubnetConfig:
    """The smallest config that honours `assignment` (deep stages get their max depth)."""
    base = space.smallest()
    ch = space.choices()

    def pick(name: str, n: int) -> tuple[int, ...]:
        return tuple(assignment.get((name, i), getattr(base, name)[i]) for i in range(n))

    depth = tuple(max(ch["depth"][s]) if assignment.get(("deep", s)) else base.depth[s]
                  for s in range(len(space.stages)))
    return space.validate(SubnetConfig(
        resolution=assignment.get("resolution", base.resolution),
        width=pick("width", len(ch["width"])), depth=depth,
        kernel_size=pick("kernel_size", len(space.stages)),
        expand_ratio=pick("expand_ratio", len(space.stages)),
    ))


def covering_configs(space: SearchSpace) -> list[SubnetConfig]:
    """Subnets that together contain every layer shape of `space` (greedy packing)."""
    pending = _requirements(space)
    configs: list[SubnetConfig] = []
    while pending:
        assignment: dict = {}
        for req in pending:
            if _compatible(assignment, req):
                assignment.update(req)
        config = _config_from(space, assignment)
        configs.append(config)
        pending = [r for r in pending if not _satisfies(config, r)]
    return configs


def plan_configs(space: SearchSpace, n_random: int, seed: int = 0) -> list[SubnetConfig]:
    """Covering subnets, then smallest, largest and `n_random` random ones (no repeats)."""
    rng = random.Random(seed)
    configs = covering_configs(space) + [space.smallest(), space.largest()]
    configs += [space.sample(rng) for _ in range(n_random)]
    return list(dict.fromkeys(configs))


def subnet_module(space: SearchSpace, config: SubnetConfig, num_classes: int) -> tvm.IRModule:
    """The Relax module a compile of `config` starts from (weights are random)."""
    from pipeline.compile import export_onnx, onnx_to_relax
    from pipeline.model import build_static

    model = build_static(space, config, num_classes).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, config.resolution, Path(tmp) / "subnet.onnx")
        return onnx_to_relax(path)


def subnet_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list[tuple[str, tvm.IRModule, int]]:
    """(name, workload module, occurrences) of each fused kernel of `mod`."""
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    from pipeline.kernels.lower import fuse_for_tuning

    fused = fuse_for_tuning(mod, target)
    return [(t.task_name, t.dispatched[0], int(t.weight)) for t in extract_tasks(fused, target)]


@dataclass
class PlannedTask:
    """One distinct tuning task of the space."""

    name: str
    mod: tvm.IRModule
    flops: float  # floating-point operations of one call (TVM's estimate)
    occurrences: int = 0  # calls over all plan subnets
    subnets: set[str] = field(default_factory=set)  # ids of plan subnets that use it

    @property
    def weighted_flops(self) -> float:
        return self.flops * self.occurrences

    def to_dict(self) -> dict:
        return {"name": self.name, "flops": self.flops, "occurrences": self.occurrences,
                "subnets": len(self.subnets)}


@dataclass
class Plan:
    """The distinct tasks of a space on a target, and the subnets they came from."""

    space: str
    device: str
    configs: list[SubnetConfig]
    tasks: list[PlannedTask]

    def summary(self) -> dict:
        flops = sum(t.weighted_flops for t in self.tasks)
        return {"space": self.space, "device": self.device, "subnets": len(self.configs),
                "tasks": len(self.tasks), "kernel_calls": sum(t.occurrences for t in self.tasks),
                "gflops": round(flops / 1e9, 3)}


class _TaskIndex:
    """Deduplicates workloads by structural equality (hash buckets + equality check)."""

    def __init__(self) -> None:
        self.tasks: list[PlannedTask] = []
        self._buckets: dict[int, list[PlannedTask]] = {}

    def add(self, name: str, mod: tvm.IRModule, occurrences: int, subnet_id: str) -> None:
        from tvm.s_tir.analysis import estimate_tir_flops

        bucket = self._buckets.setdefault(tvm_ffi.structural_hash(mod), [])
        task = next((t for t in bucket if tvm_ffi.structural_equal(t.mod, mod)), None)
        if task is None:
            task = PlannedTask(name=f"{len(self.tasks):03d}_{name}", mod=mod, flops=float(estimate_tir_flops(mod)))
            bucket.append(task)
            self.tasks.append(task)
        task.occurrences += occurrences
        task.subnets.add(subnet_id)


def _subnet_cache(space: SearchSpace, device_name: str, num_classes: int) -> Path:
    folder = cache_dir() / "kernels" / "plans" / f"{space.name}-{device_name}-{num_classes}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def plan(space: SearchSpace, device_name: str, target: tvm.target.Target, num_classes: int | None = None,
         n_random: int = 8, seed: int = 0, progress: bool = True) -> Plan:
    """Extract and deduplicate the tasks of `space` for `target` (resumable)."""
    num_classes = space.num_classes if num_classes is None else num_classes
    configs = plan_configs(space, n_random, seed)
    cache = _subnet_cache(space, device_name, num_classes)
    index = _TaskIndex()
    target_key = json.dumps([str(target), lowering_fingerprint()])
    for config in progress_bar(configs, desc=f"plan {space.name} on {device_name}", unit="subnet", disable=not progress):
        entries = _cached_tasks(cache / f"{config.id}.json", target_key)
        if entries is None:
            entries = subnet_tasks(subnet_module(space, config, num_classes), target)
            _write_tasks(cache / f"{config.id}.json", target_key, entries)
        for name, mod, occurrences in entries:
            index.add(name, mod, occurrences, config.id)
    result = Plan(space.name, device_name, configs, index.tasks)
    log.info("plan: %s", result.summary())
    return result


def _cached_tasks(path: Path, target_key: str) -> list[tuple[str, tvm.IRModule, int]] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("target") != target_key:
        return None
    return [(e["name"], tvm.ir.load_json(e["mod"]), e["occurrences"]) for e in data["tasks"]]


def _write_tasks(path: Path, target_key: str, entries: list[tuple[str, tvm.IRModule, int]]) -> None:
    data = {"target": target_key,
            "tasks": [{"name": n, "mod": tvm.ir.save_json(m), "occurrences": w} for n, m, w in entries]}
    write_json(path, data)  # atomic: a killed plan never leaves a half-written entry
