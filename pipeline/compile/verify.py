"""Run a compiled artifact on its device and compare with PyTorch.

The check runs where the app will run (locally, over RPC, on the emulated arm64
device), because a library can be right on the host and wrong on the target (a
mis-set triple, an unsupported instruction, a bad cross-link). The input is the fixed
seeded tensor of `numerics.fixed_input`, so a verification is reproducible.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.compile.numerics import compare
from pipeline.errors import PipelineError, is_device_failure

log = logging.getLogger(__name__)

INPUT_SEED = 0


def run_on_device(session: Any, lib_path: Path, x: np.ndarray) -> np.ndarray:
    """Load `lib_path` through `session` (`.load(path)`, `.device`) and run `main` on `x`."""
    import tvm
    from tvm import relax

    lib = session.load(lib_path)
    vm = relax.VirtualMachine(lib, session.device)
    out = vm["main"](tvm.runtime.tensor(x, session.device))
    if not hasattr(out, "numpy"):  # a tuple of outputs; the models here have one
        out = out[0]
    return out.numpy()


def verify_on_device(session: Any, lib_path: Path, x: np.ndarray, reference: np.ndarray,
                     device_name: str) -> dict[str, Any]:
    """The manifest's `verification` record; `verified` is True only if outputs match.

    A crash on the device (`is_device_failure`: TVM runtime or link errors) or outputs
    that do not match count as a failed verification, with the error kept; any other
    exception is a bug and propagates with its traceback (no artifact is emitted either way).
    """
    record: dict[str, Any] = {"verified": False, "device": device_name, "max_abs_diff": None,
                              "tolerance": None, "input_seed": INPUT_SEED, "error": None}
    try:
        output = run_on_device(session, lib_path, x)
        result = compare(reference, output)
    except Exception as err:  # noqa: BLE001 - sorted just below
        if not (is_device_failure(err) or isinstance(err, PipelineError)):
            raise
        log.error("verification of %s on %s failed: %s", lib_path, device_name, err)
        record["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        return record
    record.update(verified=result.ok, max_abs_diff=result.max_abs_diff, tolerance=result.tolerance)
    if not result.ok:
        record["error"] = (f"max abs diff {result.max_abs_diff:.3g} exceeds tolerance "
                           f"{result.tolerance:.3g}")
    log.info("verified %s on %s: max abs diff %.3g (tolerance %.3g) -> %s", lib_path.name,
             device_name, result.max_abs_diff, result.tolerance, "ok" if result.ok else "FAILED")
    return record
