"""Numerical comparison shared by every check in this package.

The ONNX check (onnxruntime vs PyTorch) and the on-device check (TVM vs PyTorch) must
judge "same numbers" the same way, so both go through `compare`. The tolerance scales
with the reference's magnitude because logits of an untrained or large net can be in
the tens, where a fixed 1e-4 would flag ordinary fp32 reassociation noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError

#: fp32 kernels (TVM, onnxruntime, PyTorch) reorder sums differently; this is the
#: slack allowed on top of an absolute floor, as a fraction of max |reference|.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


class NumericsMismatch(PipelineError):
    """An exported or compiled model does not reproduce the PyTorch outputs."""


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing one output against its PyTorch reference."""

    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def fixed_input(resolution: int, seed: int = 0) -> np.ndarray:
    """The deterministic 1x3xRxR float32 input every check uses (reproducible runs)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, resolution, resolution), dtype=np.float32)


def compare(reference: np.ndarray, output: np.ndarray,
            atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Comparison:
    """Max abs difference and the tolerance it is judged against."""
    reference = np.asarray(reference, dtype=np.float64)
    output = np.asarray(output, dtype=np.float64)
    if reference.shape != output.shape:
        raise NumericsMismatch(
            f"output shape {output.shape} differs from the PyTorch shape {reference.shape}; "
            "the export or import changed the model's structure")
    diff = float(np.max(np.abs(reference - output))) if reference.size else 0.0
    if not np.isfinite(diff):
        diff = float("inf")
    tolerance = atol + rtol * float(np.max(np.abs(reference), initial=0.0))
    return Comparison(max_abs_diff=diff, tolerance=tolerance)
