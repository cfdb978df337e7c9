"""The Relax lowering that makes a model's kernels fast on one device.

Decompose for inference, legalize and fuse exactly as task extraction does (so fused
PrimFuncs match tuning records structurally), then replace each fused PrimFunc by its
tuned schedule from the device's database. What found no record is reported, so a
compile can say that a subnet is (partly) untuned.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
import tvm.tirx
from tvm import relax

from pipeline.kernels.database import device_kernel_dir, has_database, open_database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelCoverage:
    """How many of a module's fused kernels (tuning tasks) found a tuned record."""

    device_name: str
    total: int
    tuned: int
    untuned_tasks: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.tuned == self.total

    def summary(self) -> str:
        """One line for logs and manifests."""
        state = "fully tuned" if self.complete else f"UNTUNED: {', '.join(self.untuned_tasks)}"
        return f"{self.tuned}/{self.total} kernels tuned for {self.device_name} ({state})"

    def to_dict(self) -> dict:
        return {"device": self.device_name, "total": self.total, "tuned": self.tuned,
                "untuned_tasks": list(self.untuned_tasks)}


def fuse_for_tuning(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Inference decomposition + legalization + fusion: the form tasks are extracted from."""
    with target:
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ])(mod)


def _workload_module(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The module MetaSchedule keys a fused PrimFunc's records by."""
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def _coverage(mod: tvm.IRModule, database, target: tvm.target.Target,
              device_name: str) -> KernelCoverage:
    """Which fused PrimFuncs of `mod` have a record in `database`."""
    names = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    untuned = []
    for name in sorted(names):
        func = mod[name]
        found = database is not None and database.query_tuning_record(
            _workload_module(func), target, "main") is not None
        if not found:
            untuned.append(name)
    return KernelCoverage(device_name, len(names), len(names) - len(untuned), tuple(untuned))


def lower_for_target(mod: tvm.IRModule, target: tvm.target.Target,
                     device_name: str) -> tuple[tvm.IRModule, KernelCoverage]:
    """Fuse `mod` and apply `device_name`'s tuned kernels; build the result with `build`.

    Returns the lowered Relax module and how many of its kernels found a record.
    """
    fused = fuse_for_tuning(mod, target)
    database = open_database(device_kernel_dir(device_name)) if has_database(device_name) else None
    coverage = _coverage(fused, database, target, device_name)
    if database is not None:
        with target, database:
            fused = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    log.info("%s", coverage.summary())
    return fused, coverage
