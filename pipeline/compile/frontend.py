"""PyTorch -> ONNX -> TVM Relax.

ONNX is the hand-off format because it is what app developers can also run elsewhere
(the artifact ships `model.onnx`) and because TVM 0.27 has no PyTorch importer that
binds weights as constants. The export is checked against PyTorch with onnxruntime
right away, so a wrong graph is caught before any TVM time is spent on it.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from pipeline.compile.numerics import Comparison, NumericsMismatch, compare, fixed_input

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def torch_reference(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Outputs of `module` in eval mode on `x` (the ground truth for every check)."""
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def export_onnx(module: torch.nn.Module, resolution: int, path: str | Path,
                opset: int = 17, simplify: bool = True) -> Path:
    """Export `module` for a fixed 1x3xRxR input, simplify, and check it with onnxruntime.

    Raises `NumericsMismatch` when onnxruntime's output differs from PyTorch's by more
    than the tolerance of `pipeline.compile.numerics.compare`.
    """
    return export_onnx_checked(module, resolution, path, opset, simplify)[0]


def export_onnx_checked(module: torch.nn.Module, resolution: int, path: str | Path,
                        opset: int = 17, simplify: bool = True) -> tuple[Path, Comparison]:
    """`export_onnx`, also returning the onnxruntime-vs-PyTorch comparison (for manifests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    x = fixed_input(resolution)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and handles
        # every op of the supernet; the dynamo exporter is not installed here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    model = onnx.load(str(path))
    if simplify:
        model = _simplify(model)
        onnx.save(model, str(path))
    onnx.checker.check_model(model)
    result = check_onnx(path, module, resolution)
    log.info("exported %s (opset %d): onnxruntime vs PyTorch max abs diff %.3g (tolerance %.3g)",
             path, opset, result.max_abs_diff, result.tolerance)
    return path, result


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise NumericsMismatch("onnx-simplifier could not validate the simplified graph; "
                               "export with simplify=False to inspect the raw graph")
    return simplified


def check_onnx(path: str | Path, module: torch.nn.Module, resolution: int) -> Comparison:
    """Run the ONNX file with onnxruntime on the fixed input and compare with PyTorch."""
    import onnxruntime as ort

    x = fixed_input(resolution)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    result = compare(torch_reference(module, x), output)
    if not result.ok:
        raise NumericsMismatch(
            f"{path}: onnxruntime differs from PyTorch by {result.max_abs_diff:.3g} "
            f"(tolerance {result.tolerance:.3g}); export with simplify=False or a newer opset")
    return result


def onnx_to_relax(model_or_path: onnx.ModelProto | str | Path):
    """Import an ONNX model into a Relax IRModule with the weights bound as constants.

    Bound weights (`keep_params_in_input=False`) make `main` take only the image, which
    is what an app calls and what lets the compiler fold and fuse around the weights.
    """
    from tvm.relax.frontend.onnx import from_onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    return from_onnx(model, keep_params_in_input=False)
