"""Compile: ONNX export checks, x86 artifacts verified locally and over RPC, cache, manifests, bad input.

Every compile here is real (onnxsim, onnxruntime, TVM, host compiler); devices are the
in-process host and a real TVM RPC server on 127.0.0.1 (`local_rpc_server`).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from dataclasses import replace

import jsonschema
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.compile import (CompileCache, Manifest, ManifestError, NumericsMismatch, ToolchainError,
                              VerificationFailed, compile_many, compile_subnet, export_onnx, onnx_to_relax)
from pipeline.compile.cache import LIBRARY, CacheKey, weights_digest
from pipeline.compile.manifest import SCHEMA_PATH, file_entry
from pipeline.device import load_profile
from pipeline.errors import CheckpointError
from pipeline.kernels import kernel_db_hash
from pipeline.model import Supernet, save_checkpoint
from pipeline.space import SearchSpace


@pytest.fixture(scope="module")
def demo() -> SearchSpace:
    return SearchSpace.load("demo")


@pytest.fixture(scope="module")
def warm_cache(demo, tmp_path_factory) -> Path:
    """A compile cache holding the demo space's smallest subnet (10 classes, seeded weights) for x86-host.

    Tests copy it rather than share it, so one test's tampering cannot leak into another.
    """
    root = tmp_path_factory.mktemp("warm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CACHE", str(root / "cache"))
        compile_subnet(demo, demo.smallest(), "x86-host", root / "art", num_classes=10, verify=False)
    return root / "cache"


@pytest.fixture
def cache_copy(warm_cache, pipeline_cache) -> Path:
    """A private copy of `warm_cache` as this test's `PIPELINE_CACHE`."""
    shutil.copytree(warm_cache, pipeline_cache, dirs_exist_ok=True)
    return pipeline_cache


def _schema_errors(folder) -> list[str]:
    schema = json.loads(SCHEMA_PATH.read_text())
    data = json.loads((folder / "manifest.json").read_text())
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]


def _small_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.BatchNorm2d(8), torch.nn.Hardswish(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()


class _CountsCalls(torch.nn.Module):
    """Output depends on Python state that tracing freezes: ONNX disagrees with PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.mean(dim=(2, 3)) * float(self.calls)


# --------------------------------------------------------------------------- frontend
def test_export_onnx_names_shape_and_relax_import(tmp_path):
    path = export_onnx(_small_net(), 32, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert model.opset_import[0].version >= 17
    assert inp.name == "input" and out.name == "logits"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 32, 32]
    mod = onnx_to_relax(path)
    assert [p.name for p in mod["main"].params] == ["input"]  # weights are bound, not inputs


def test_export_onnx_refuses_a_graph_that_differs_from_pytorch(tmp_path):
    with pytest.raises(NumericsMismatch, match="onnxruntime differs from PyTorch"):
        export_onnx(_CountsCalls(), 16, tmp_path / "bad.onnx")


# ------------------------------------------------------------------------- artifacts
def test_cli_compile_hits_the_cache_and_verifies(demo, cache_copy, tmp_path):
    """`warm_cache` compiled this subnet through the library: the CLI reuses it and verifies."""
    config_file = tmp_path / "small.json"
    config_file.write_text(json.dumps(demo.smallest().to_dict()))
    entries = sorted((cache_copy / "compile").glob("??/*"))
    assert len(entries) == 1
    args = ["compile", str(config_file), "--space", "demo", "--device", "x86-host",
            "--num-classes", "10", "--out", str(tmp_path / "art")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "art" / "small-x86-host"
    assert result.output.strip().splitlines()[-1] == str(folder)
    assert "from the compile cache" in result.output
    assert sorted((cache_copy / "compile").glob("??/*")) == entries
    assert _schema_errors(folder) == []
    manifest = Manifest.read(folder)
    assert manifest.verified and manifest["verification"]["device"] == "x86-host"
    assert manifest["verification"]["max_abs_diff"] < 1e-3
    assert manifest["subnet"]["config"] == demo.smallest().to_dict() and manifest["subnet"]["name"] == "small"
    assert manifest["input"]["name"] == "input" and manifest["input"]["shape"] == [1, 3, 32, 32]
    assert manifest["output"]["shape"] == [1, 10]
    assert manifest["build"]["kernel_db_hash"] == kernel_db_hash("x86-host", load_profile("x86-host").tvm_target())
    coverage = manifest["build"]["kernel_coverage"]
    assert coverage["database"]  # applied, not applied (and why), or none
    assert coverage["total"] > 0
    assert coverage["tuned"] + coverage["library"] + len(coverage["untuned_tasks"]) == coverage["total"]
    for name in ("model.so", "model.onnx"):
        assert manifest["files"][name] == file_entry(folder / name)

    again = CliRunner().invoke(main, args + ["--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output.strip().splitlines()[-1])
    assert summary["cache_hit"] is True and summary["verified"] is True
    assert summary["manifest"]["build"]["cache_key"] == manifest["build"]["cache_key"]


def test_compile_many_in_workers_verified_over_rpc(demo, pipeline_cache, tmp_path, local_rpc_server):
    small = demo.smallest()
    configs = [small, replace(small, kernel_size=(3, 5, 5, 5, 5, 5, 5), depth=(2, 1, 1, 1, 1, 1, 1))]
    supernet = Supernet(demo, num_classes=7)
    artifacts = compile_many(demo, configs, local_rpc_server, tmp_path / "out", supernet=supernet, workers=2)
    assert [a.folder.name for a in artifacts] == [f"{c.id}-x86-host" for c in configs]
    for artifact, config in zip(artifacts, configs):
        assert artifact.verified and not artifact.cache_hit
        assert _schema_errors(artifact.folder) == []
        assert artifact.manifest["weights"]["source"] == "checkpoint"
        assert artifact.manifest["output"]["shape"] == [1, 7]
        assert artifact.manifest["subnet"]["id"] == config.id


def test_failed_verification_is_never_emitted_as_good(demo, cache_copy, tmp_path):
    import tvm

    # Corrupt the cache: the subnet's entry now holds another net with the same output shape.
    impostor = _small_net()
    impostor[-1] = torch.nn.Linear(8, 10)
    executable = tvm.compile(onnx_to_relax(export_onnx(impostor, 32, tmp_path / "i.onnx")),
                             target=load_profile("x86-host").tvm_target())
    (entry,) = CompileCache().root.glob("??/*")
    executable.export_library(str(entry / LIBRARY))
    out = tmp_path / "emitted"
    with pytest.raises(VerificationFailed, match="failed verification on x86-host"):
        compile_subnet(demo, demo.smallest(), "x86-host", out, num_classes=10)
    assert not out.exists()
    failed = Manifest.read(tmp_path / "emitted.failed")
    assert failed.verified is False
    assert failed["verification"]["max_abs_diff"] > failed["verification"]["tolerance"]


def test_manifest_updates_are_validated(demo, cache_copy, tmp_path):
    artifact = compile_subnet(demo, demo.smallest(), "x86-host", tmp_path / "a", num_classes=10, verify=False)
    assert artifact.cache_hit and not artifact.verified  # unverified artifacts say so
    manifest = Manifest.read(artifact.folder)
    manifest.set_accuracy(71.5, source="supernet-eval", dataset="synthetic")
    manifest.set_latency(predicted_ms=1.25)
    manifest.set_latency(measured_ms=1.5, measurement={"median_ms": 1.5, "repeats_ms": [1.4, 1.5, 1.6]})
    manifest.write(artifact.folder)
    back = Manifest.read(artifact.folder)
    assert back["latency"]["predicted_ms"] == 1.25 and back["latency"]["measured_ms"] == 1.5
    assert back["accuracy"]["top1"] == 71.5 and _schema_errors(artifact.folder) == []
    with pytest.raises(ManifestError, match="accuracy"):
        manifest.set_accuracy(140.0, source="typo")
    assert Manifest.read(artifact.folder)["accuracy"]["top1"] == 71.5


# ------------------------------------------------------------------------- bad input
def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_unknown_device_and_config_outside_space_are_one_line(pipeline_cache, tmp_path):
    assert "no device profile 'pixel9'" in _one_line_error(["compile", "a0", "--device", "pixel9"])
    assert "resolution = 192 is not allowed in space 'demo'" in _one_line_error(
        ["compile", "a0", "--device", "x86-host", "--space", "demo"])


def test_missing_cross_compiler_names_the_package(pipeline_cache, tmp_path):
    profile_file = tmp_path / "riscbox.yaml"
    source = load_profile("arm64-emulated").source
    profile_file.write_text(open(source).read().replace("aarch64-linux-gnu-g++", "aarch64-nowhere-linux-gnu-g++"))
    line = _one_line_error(["compile", "a0", "--device", str(profile_file), "--out", str(tmp_path)])
    assert "apt-get install g++-aarch64-nowhere-linux-gnu" in line
    with pytest.raises(ToolchainError):
        compile_subnet(SearchSpace.load(), SearchSpace.load().smallest(), load_profile(profile_file), tmp_path / "x")


def test_supernet_of_another_space_is_refused(demo, pipeline_cache, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "demo.pt", Supernet(demo, 10))
    line = _one_line_error(["compile", "a0", "--device", "x86-host", "--space", "attentivenas",
                            "--supernet", str(checkpoint), "--out", str(tmp_path)])
    assert "supernet of space 'demo'" in line and "--space demo" in line
    full = SearchSpace.load("attentivenas")
    with pytest.raises(CheckpointError, match="built for space 'demo', not 'attentivenas'; pass --space demo"):
        compile_subnet(full, full.smallest(), "x86-host", tmp_path / "x", supernet=Supernet(demo, 10))


# --------------------------------------------------------------------------- arm64
@pytest.mark.slow
def test_demo_subnet_cross_compiled_and_verified_on_emulated_arm64(demo, pipeline_cache, tmp_path, emulated_arm64):
    config = replace(demo.smallest(), resolution=48)
    artifact = compile_subnet(demo, config, emulated_arm64, tmp_path / "arm", num_classes=10)
    assert artifact.verified, artifact.manifest["verification"]
    assert artifact.manifest["verification"]["device"] == "arm64-emulated"
    assert artifact.manifest["build"]["cross_compiler"] == "aarch64-linux-gnu-g++"
    assert '"mtriple":"aarch64-linux-gnu"' in artifact.manifest["build"]["target"]
    assert artifact.library.read_bytes()[:4] == b"\x7fELF" and artifact.library.read_bytes()[18] == 183  # EM_AARCH64
    assert _schema_errors(artifact.folder) == []


# ----------------------------------------------------------------------- app side
def test_cpp_app_built_against_the_wheel_runs_the_artifact(demo, cache_copy, tmp_path):
    """The C++ snippet of the README compiles against the wheels' headers and reproduces Python."""
    import sysconfig

    import tvm
    from tvm import relax

    from pipeline.compile import fixed_input
    from pipeline.compile.artifact import EXAMPLES_DIR

    site = Path(sysconfig.get_paths()["purelib"])
    binary = tmp_path / "run_model"
    subprocess.run(
        ["g++", "-std=c++17", str(EXAMPLES_DIR / "run_model.cc"), "-o", str(binary),
         f"-I{site}/tvm_ffi/include", f"-I{site}/tvm_ffi/3rdparty/dlpack/include",
         f"-L{site}/tvm/lib", f"-L{site}/tvm_ffi/lib", "-ltvm_runtime", "-ltvm_ffi",
         f"-Wl,-rpath,{site}/tvm/lib", f"-Wl,-rpath,{site}/tvm_ffi/lib"], check=True)
    artifact = compile_subnet(demo, demo.smallest(), "x86-host", tmp_path / "a", num_classes=10, verify=False)
    x = fixed_input(32)
    x.tofile(tmp_path / "input.f32")
    run = subprocess.run([str(binary), str(artifact.library), "32", "10", str(tmp_path / "input.f32")],
                         check=True, capture_output=True, text=True)
    logits = np.array([float(v) for v in run.stdout.splitlines()[0].split()], dtype=np.float32)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact.library)), tvm.cpu())
    expected = vm["main"](tvm.runtime.tensor(x)).numpy()[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert run.stdout.splitlines()[1] == f"class {int(np.argmax(expected))}"


def test_cache_key_covers_every_input():
    """Any change to what a library depends on gives another key; weights count by value."""
    base = CacheKey(config="{}", space="demo", weights="w", target="t", cross_compiler=None, tvm_version="0.27",
                    kernel_db_hash=None, pipeline_version="0.1.0", code="c", onnx_opset=17)
    changed = {"config": '{"resolution":32}', "space": "other", "weights": "w2", "target": "t2",
               "cross_compiler": "aarch64-linux-gnu-g++", "tvm_version": "0.28", "kernel_db_hash": "h",
               "pipeline_version": "0.2.0", "code": "c2", "onnx_opset": 18}
    digests = {replace(base, **{field: value}).digest for field, value in changed.items()}
    assert len(digests) == len(changed) and base.digest not in digests
    net = _small_net()
    before = weights_digest(net)
    assert weights_digest(_small_net()) != before  # fresh random weights
    with torch.no_grad():
        net[1].running_var[0] += 1e-3  # a buffer, not a parameter, still changes the library
    assert weights_digest(net) != before


def test_worker_pool_is_kept_across_settings_and_replaced_for_tvm_ones(monkeypatch):
    """Builds of successive batches reuse one pool (a spawned worker costs a TVM + torch
    import). `PIPELINE_*` settings travel with each call: a change (each test, each build
    of another cache) reaches the workers without a new pool, and one unset in the caller
    is unset there. A `TVM_*` change starts a new pool. Results come back in call order."""
    import os

    from pipeline.compile.workers import run_in_workers, shutdown_pool, worker_pool

    monkeypatch.setenv("PIPELINE_POOL_TEST", "a")
    monkeypatch.setenv("PIPELINE_POOL_GONE", "x")
    try:
        seen = set(run_in_workers(os.getpid, [()] * 4, 2, "pids", "call"))
        pool = worker_pool(2)
        seen |= set(run_in_workers(os.getpid, [()] * 4, 2, "pids", "call"))
        assert worker_pool(2) is pool and os.getpid() not in seen  # kept, and not this process
        monkeypatch.setenv("PIPELINE_POOL_TEST", "b")
        monkeypatch.delenv("PIPELINE_POOL_GONE")
        calls = [("PIPELINE_POOL_TEST",), ("PIPELINE_POOL_GONE",)] * 3 + [("HOME",)]
        assert run_in_workers(os.getenv, calls, 2, "env", "call") == ["b", None] * 3 + [os.environ.get("HOME")]
        assert worker_pool(2) is pool
        monkeypatch.setenv("TVM_POOL_TEST", "1")
        assert worker_pool(2) is not pool
        assert not set(run_in_workers(os.getpid, [()] * 4, 2, "pids", "call")) & seen  # new workers
    finally:
        shutdown_pool()


_POOL_THEN_WAIT = """
import os, sys, time
from pipeline.compile.workers import run_in_workers
print(" ".join(map(str, sorted(set(run_in_workers(os.getpid, [(), (), (), ()], 2, "pids", "call"))))), flush=True)
time.sleep(600)
"""


def test_compile_workers_end_when_their_parent_is_killed(tmp_path: Path):
    """`kill -9` of a process holding the kept worker pool: its workers go too, within seconds."""
    import os
    import signal
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _POOL_THEN_WAIT], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and proc.pid not in workers
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"

    deadline = time.monotonic() + 20
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(map(alive, workers)), f"workers {workers} outlived their parent"
