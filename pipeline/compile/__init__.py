"""Compile: ONNX export, TVM Relax import and build per device, verified artifacts."""
from pipeline.compile.frontend import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_to_relax
from pipeline.compile.numerics import Comparison, NumericsMismatch, compare, fixed_input

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_to_relax",
           "Comparison", "NumericsMismatch", "compare", "fixed_input"]
