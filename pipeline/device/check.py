"""`pipeline device check`: prove a device works end to end with a tiny kernel.

Compiles a small Relax function for the profile's target, links it with the profile's
compiler, runs it on the device through whatever session the profile opens, compares
the result with numpy, and times the round trip.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.device.export import export_library
from pipeline.device.profile import DeviceProfile
from pipeline.device.session import DeviceSession, open_session
from pipeline.errors import DeviceError

TINY_SHAPE = (32, 32)


def tiny_module():
    """`main(x, y) = relu(x @ y + x)`: matmul, add and an activation, like a layer of a net."""
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Tiny:
        @R.function
        def main(x: R.Tensor((32, 32), "float32"), y: R.Tensor((32, 32), "float32")):
            with R.dataflow():
                out = R.nn.relu(R.add(R.matmul(x, y), x))
                R.output(out)
            return out

    return Tiny


def tiny_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(TINY_SHAPE).astype("float32") for name in ("x", "y")}


def tiny_reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
    x, y = inputs["x"], inputs["y"]
    return np.maximum(x @ y + x, 0)


def build_tiny(profile: DeviceProfile, path: Path) -> Path:
    """Compile and link the tiny kernel for the profile's device."""
    import tvm

    return export_library(tvm.compile(tiny_module(), target=profile.tvm_target()), path, profile)


@dataclass(frozen=True)
class CheckResult:
    device: str
    connection: str
    arch: str
    triple: str
    tvm_version: str
    correct: bool
    max_abs_error: float
    connect_ms: float
    round_trip_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_tiny(session: DeviceSession, lib_path: Path, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Load and run the tiny kernel once; returns output and round-trip ms (upload excluded).

    A function of its own so the VM and remote tensors are gone when the session closes.
    """
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(session.load(lib_path), session.device)
    args = [tvm.runtime.tensor(v, session.device) for v in inputs.values()]
    t0 = time.perf_counter()
    out = vm["main"](*args).numpy()
    return out, (time.perf_counter() - t0) * 1e3


def check_device(profile: DeviceProfile) -> CheckResult:
    """Run the tiny kernel on the device; raises DeviceError if it reports another arch than the profile."""
    inputs = tiny_inputs()
    with tempfile.TemporaryDirectory(prefix="pipeline-check-") as tmp:
        lib_path = build_tiny(profile, Path(tmp) / f"tiny-{profile.name}.so")
        t0 = time.perf_counter()
        with open_session(profile) as session:
            connect_ms = (time.perf_counter() - t0) * 1e3
            info = session.info()
            out, round_trip_ms = _run_tiny(session, lib_path, inputs)
    if info["arch"] != profile.arch:
        raise DeviceError(f"device {profile.name} reports arch {info['arch']} ({info['triple']}) but the profile "
                          f"says {profile.arch}; fix `arch`/`target` in {profile.source}")
    err = float(np.abs(out - tiny_reference(inputs)).max())
    return CheckResult(device=profile.name, connection=profile.connection.kind, arch=info["arch"],
                       triple=info["triple"], tvm_version=info["tvm_version"], correct=err < 1e-3,
                       max_abs_error=err, connect_ms=connect_ms, round_trip_ms=round_trip_ms)
