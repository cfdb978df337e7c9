"""Compile: ONNX export, TVM Relax import and build per device, verified artifacts.

Public API: `export_onnx`, `onnx_to_relax`, `compile_subnet`, `compile_many` ->
`Artifact` (folder, `manifest`, `library`, `onnx`), `verify_on_device`, `Manifest`
(read / set_accuracy / set_latency / write, validated against
`pipeline/data/manifest.schema.json`).
"""
from pipeline.compile.artifact import (Artifact, Preprocessing, VerificationFailed, artifact_dirname,
                                       compile_many, compile_subnet)
from pipeline.compile.build import ToolchainError
from pipeline.compile.cache import CompileCache
from pipeline.compile.frontend import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_to_relax
from pipeline.compile.manifest import Manifest, ManifestError, validate_manifest
from pipeline.compile.numerics import Comparison, NumericsMismatch, compare, fixed_input
from pipeline.compile.verify import verify_on_device

__all__ = [
    "Artifact", "Comparison", "CompileCache", "INPUT_NAME", "Manifest", "ManifestError", "NumericsMismatch",
    "OUTPUT_NAME", "Preprocessing", "ToolchainError", "VerificationFailed", "artifact_dirname", "compare",
    "compile_many", "compile_subnet", "export_onnx", "fixed_input", "onnx_to_relax", "validate_manifest",
    "verify_on_device",
]
