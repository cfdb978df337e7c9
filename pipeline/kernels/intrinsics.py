"""Register only the CPU tensor intrinsics before MetaSchedule asks for all of them.

`TuneContext` and LocalBuilder's worker each `import tvm.s_tir.tensor_intrin`, whose
package init parses every intrinsic TVM ships (CUDA WMMA/MMA, ROCm, Hexagon, ...) as
TVMScript: 23 s per process on a quiet Zen 4 core, paid by the tuner and again by every
builder worker, so on a loaded 2-core machine a builder worker's first candidate ran past
its timeout. Our targets are CPUs (llvm x86-64 and aarch64): only the x86 and arm_cpu
intrinsics can match their workloads (1.8 s). Registering the package without running
its init makes the later `import tvm.s_tir.tensor_intrin` a no-op.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "tvm.s_tir.tensor_intrin"
CPU_MODULES = ("x86", "arm_cpu")


def register_cpu_intrinsics() -> None:
    """Idempotent; also the builder/runner worker initializer (a picklable module function)."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None:  # a TVM without the package: nothing to register, nothing slow to avoid
            return
        sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)  # its __init__ is not run
    for name in CPU_MODULES:
        importlib.import_module(f"{PACKAGE}.{name}")
