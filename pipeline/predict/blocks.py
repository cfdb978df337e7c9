"""Single-block modules for the lookup table: one inverted-residual block, built alone.

The block is the model package's own `ResidualBlock`, exported through ONNX and
imported into Relax exactly like a whole subnet, then lowered with the device's kernel
database. So its fused kernels are structurally the same PrimFuncs a subnet containing
that block gets, and tuned records found for one apply to the other.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from pipeline.space.arch import BlockSpec

BLOCK_INPUT = "input"
BLOCK_OUTPUT = "output"
ONNX_OPSET = 17


def block_id(spec: BlockSpec) -> str:
    """Stable 12-hex id of a block key (the store's `subnet_id` for block rows)."""
    blob = json.dumps(list(spec.key), separators=(",", ":"))
    return "blk-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def block_record_config(spec: BlockSpec) -> dict:
    """What a block row stores as its `config`: the key and the shapes behind it."""
    return {"block_key": list(spec.key), "mid_channels": spec.mid_channels, "se_channels": spec.se_channels,
            "out_size": spec.out_size, "act": spec.act}


def block_inputs(spec: BlockSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random input of the block's shape (1 x C_in x H x W)."""
    rng = np.random.default_rng(seed)
    shape = (1, spec.in_channels, spec.in_size, spec.in_size)
    return {BLOCK_INPUT: rng.standard_normal(shape).astype(np.float32)}


def export_block_onnx(spec: BlockSpec, path: Path) -> Path:
    """Export the block (seeded random weights, eval mode) to a simplified ONNX file."""
    import onnx
    import onnxsim
    import torch

    from pipeline.model.static import ResidualBlock

    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = ResidualBlock(spec).eval()
    x = torch.from_numpy(block_inputs(spec)[BLOCK_INPUT])
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (x,), str(path), input_names=[BLOCK_INPUT], output_names=[BLOCK_OUTPUT],
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    onnx.save(simplified if ok else onnx.load(str(path)), str(path))
    return path


def build_block_library(spec: BlockSpec, profile, folder: Path) -> Path:
    """ONNX -> Relax -> the device's lowering and build -> `folder/block.so`."""
    from pipeline.compile import onnx_to_relax
    from pipeline.compile.build import build_library

    onnx_path = export_block_onnx(spec, folder / "block.onnx")
    lib = folder / "block.so"
    build_library(onnx_to_relax(onnx_path), profile, lib)
    return lib
