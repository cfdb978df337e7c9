"""Subnet -> verified artifact folder (`model.so`, `model.onnx`, `manifest.json`).

The work is split by cost. In this process: extract the static subnet, export and check
ONNX (seconds), compute the PyTorch reference, and look up the compile cache. In worker
processes (`workers`): the TVM build (tens of seconds per subnet). Back here: one device
session verifies every library, and only a verified artifact lands at its final path; a
failed one is left beside it as `<name>.failed/` for inspection and an error is raised.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import pipeline
from pipeline.atomic import link_or_copy
from pipeline.compile.build import check_toolchain
from pipeline.compile.cache import LIBRARY, ONNX, CacheKey, CompileCache, code_digest, weights_digest
from pipeline.compile.frontend import INPUT_NAME, OUTPUT_NAME, export_onnx_checked, torch_reference
from pipeline.compile.manifest import MANIFEST_NAME, Manifest, file_entry
from pipeline.compile.numerics import fixed_input
from pipeline.compile.subnet import check_supernet_space, static_module
from pipeline.compile.verify import INPUT_SEED, verify_on_device
from pipeline.compile.workers import BuildJob, run_jobs
from pipeline.errors import PipelineError
from pipeline.progress import progress_bar
from pipeline.space import SearchSpace, SubnetConfig
from pipeline.space.arch import count_flops, count_params

log = logging.getLogger(__name__)

ONNX_OPSET = 17
#: C++ app example (README) that loads an artifact with the TVM runtime.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


class VerificationFailed(PipelineError):
    """A compiled library did not reproduce PyTorch on the device."""


@dataclass(frozen=True)
class Preprocessing:
    """How an app turns an 8-bit RGB image into the model's input (AttentiveNAS eval transform)."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1 / 255
    resize: str = "bilinear resize of the shorter side to round(R / 0.875), then centre-crop R x R"

    def to_manifest(self, resolution: int) -> dict[str, Any]:
        return {"resolution": resolution, "resize": self.resize, "color": "RGB", "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "layout": "NCHW"}


@dataclass(frozen=True)
class Artifact:
    """One artifact folder and its manifest."""

    folder: Path
    manifest: Manifest
    cache_hit: bool

    @property
    def library(self) -> Path:
        return self.folder / LIBRARY

    @property
    def onnx(self) -> Path:
        return self.folder / ONNX

    @property
    def verified(self) -> bool:
        return self.manifest.verified


def artifact_dirname(config: SubnetConfig, device_name: str, name: str | None = None) -> str:
    """Folder name of an artifact: `<name or subnet id>-<device>`."""
    return f"{name or config.id}-{device_name}"


# ------------------------------------------------------------------ preparation
@dataclass(frozen=True)
class _Prepared:
    """Everything known about one subnet before its (possibly cached) build."""

    config: SubnetConfig
    name: str | None
    out_dir: Path
    key: CacheKey
    reference: np.ndarray
    weights_source: str
    checkpoint: str | None
    staged: Path | None       # ONNX exported here when the cache missed
    onnx_diff: float | None   # known now on a miss; read from the cache entry on a hit


def _prepare(space: SearchSpace, config: SubnetConfig, name: str | None, out_dir: Path, profile: Any,
             supernet: Any, checkpoint: str | None, num_classes: int, cache: CompileCache) -> _Prepared:
    import tvm

    from pipeline.kernels import kernel_db_hash

    config = space.validate(config)
    module = static_module(space, config, supernet, num_classes)
    key = CacheKey(
        config=json.dumps(config.to_dict(), sort_keys=True), space=space.name,
        weights=weights_digest(module), target=str(profile.tvm_target()),
        cross_compiler=profile.cross_compiler, tvm_version=tvm.__version__,
        kernel_db_hash=kernel_db_hash(profile.name, profile.tvm_target()), pipeline_version=pipeline.__version__,
        code=code_digest(), onnx_opset=ONNX_OPSET)
    reference = torch_reference(module, fixed_input(config.resolution, INPUT_SEED))
    staged, onnx_diff = None, None
    if cache.lookup(key) is None:
        staged = cache.staging()
        try:
            onnx_diff = export_onnx_checked(module, config.resolution, staged / ONNX, ONNX_OPSET)[1].max_abs_diff
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return _Prepared(config, name, out_dir, key, reference,
                     "checkpoint" if supernet is not None else "random-init", checkpoint, staged, onnx_diff)


def _jobs(items: list[_Prepared], profile: Any, cache: CompileCache) -> list[BuildJob]:
    """One build per distinct cache key among the misses."""
    jobs: dict[str, BuildJob] = {}
    for item in items:
        if item.staged is not None and item.key.digest not in jobs:
            jobs[item.key.digest] = BuildJob(item.key, str(item.staged), profile, str(cache.root), item.onnx_diff)
    log.info("%d subnet(s) for %s: %d cached, %d to compile", len(items), profile.name,
             sum(item.staged is None for item in items), len(jobs))
    return list(jobs.values())


# --------------------------------------------------------------- emission
def _manifest_data(item: _Prepared, space: SearchSpace, profile: Any, entry: dict[str, Any],
                   folder: Path, num_classes: int, preprocessing: Preprocessing) -> dict[str, Any]:
    import tvm

    cfg = item.config
    r = cfg.resolution
    return {
        "schema_version": 1,
        "pipeline_version": pipeline.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "subnet": {"id": cfg.id, "name": item.name, "space": space.name, "config": cfg.to_dict(),
                   "mflops": round(count_flops(space, cfg, num_classes) / 1e6, 3),
                   "params": int(count_params(space, cfg, num_classes)), "num_classes": num_classes},
        "weights": {"source": item.weights_source, "checkpoint": item.checkpoint, "digest": item.key.weights},
        "input": {"name": INPUT_NAME, "shape": [1, 3, r, r], "dtype": "float32", "layout": "NCHW",
                  "preprocessing": preprocessing.to_manifest(r)},
        "output": {"name": OUTPUT_NAME, "shape": [1, num_classes], "dtype": "float32",
                   "meaning": "class logits (apply softmax for probabilities)"},
        "build": {"device": profile.name, "target": item.key.target, "tvm_version": tvm.__version__,
                  "kernel_db_hash": item.key.kernel_db_hash, "kernel_coverage": entry["kernel_coverage"],
                  "cross_compiler": profile.cross_compiler, "cache_key": item.key.digest,
                  "compile_seconds": entry["compile_seconds"], "onnx_opset": ONNX_OPSET,
                  "onnx_max_abs_diff": entry["onnx_max_abs_diff"]},
        "files": {n: file_entry(folder / n) for n in (LIBRARY, ONNX)},
        "verification": {"verified": False, "device": None, "max_abs_diff": None, "tolerance": None,
                         "input_seed": INPUT_SEED, "error": "not verified"},
        "accuracy": None,
        "latency": {"predicted_ms": None, "measured_ms": None},
    }


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.rename(src, dst)


def _check_out_dir(out_dir: Path) -> None:
    """Only an artifact folder (or nothing) may be replaced: never a user's own folder."""
    if out_dir.exists() and (not out_dir.is_dir() or
                             (any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file())):
        raise PipelineError(f"{out_dir} exists and is not an artifact folder; choose another --out")


def _emit(item: _Prepared, space: SearchSpace, profile: Any, cache: CompileCache, session: Any,
          num_classes: int, preprocessing: Preprocessing) -> Artifact:
    entry = cache.lookup(item.key)
    if entry is None:
        raise PipelineError(f"compile cache entry {item.key.digest} vanished during the run; run again")
    staging = item.out_dir.with_name(f".{item.out_dir.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for name in (LIBRARY, ONNX):
            link_or_copy(cache.path(item.key) / name, staging / name)
        manifest = Manifest(_manifest_data(item, space, profile, entry, staging, num_classes, preprocessing))
        if session is not None:
            x = fixed_input(item.config.resolution, INPUT_SEED)
            manifest.set_verification(verify_on_device(session, staging / LIBRARY, x, item.reference, profile.name))
        manifest.write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    cache_hit = item.staged is None
    if session is not None and not manifest.verified:
        failed = item.out_dir.with_name(f"{item.out_dir.name}.failed")
        _replace_dir(staging, failed)
        return Artifact(failed, manifest, cache_hit)
    _replace_dir(staging, item.out_dir)
    shutil.rmtree(item.out_dir.with_name(f"{item.out_dir.name}.failed"), ignore_errors=True)  # now stale
    return Artifact(item.out_dir, manifest, cache_hit)


# -------------------------------------------------------------------- API
def _resolve_profile(profile: Any) -> Any:
    from pipeline.device import load_profile

    return load_profile(profile) if isinstance(profile, (str, os.PathLike)) else profile


def compile_many(space: SearchSpace, configs: Sequence[SubnetConfig], profile: Any, out_root: str | Path,
                 supernet: Any = None, num_classes: int | None = None, *, names: Sequence[str | None] | None = None,
                 out_dirs: Sequence[str | Path] | None = None, checkpoint: str | None = None,
                 workers: int | None = None, verify: bool = True, session: Any = None,
                 preprocessing: Preprocessing = Preprocessing()) -> list[Artifact]:
    """Compile `configs` for `profile` (a name or `DeviceProfile`) into `out_root/<id>-<device>/`.

    With a supernet (anything with `.space`, `.num_classes` and `.extract(config)` ->
    static module, e.g. `pipeline.model.Supernet`) its weights are used and `num_classes`
    is taken from it; without, seeded random weights (for latency work) with a
    `num_classes` head (default: the space's dataset's, `SearchSpace.num_classes`). Cache
    misses are built in `workers` spawned processes (default: CPU count). With `verify`,
    every library runs on the device (`session`, or one opened from the profile) and a
    mismatch raises `VerificationFailed` after all subnets are processed (good ones are
    still emitted; bad ones go to `<folder>.failed/`). Without `verify`, manifests say `verified: false`.
    """
    profile = _resolve_profile(profile)
    check_toolchain(profile)
    if supernet is not None:
        check_supernet_space(space, supernet, checkpoint)
        num_classes = supernet.num_classes
    elif num_classes is None:
        num_classes = space.num_classes
    names = list(names) if names is not None else [None] * len(configs)
    if out_dirs is None:
        out_dirs = [Path(out_root) / artifact_dirname(c, profile.name, n) for c, n in zip(configs, names)]
    out_dirs = [Path(d) for d in out_dirs]
    for d in out_dirs:
        _check_out_dir(d)
    cache = CompileCache()

    with ExitStack() as stack:
        if verify and session is None:
            # Opened first so that an unreachable device fails in seconds, not after the build.
            from pipeline.device import open_session

            session = stack.enter_context(open_session(profile))
        items: list[_Prepared] = []
        try:
            for c, n, d in progress_bar(list(zip(configs, names, out_dirs)), desc="export", unit="subnet",
                                        disable=len(configs) < 2):
                items.append(_prepare(space, c, n, d, profile, supernet, checkpoint, num_classes, cache))
            run_jobs(_jobs(items, profile, cache), workers or os.cpu_count() or 1)
        finally:  # builds that did not reach the cache leave no temporary folders behind
            for item in items:
                if item.staged is not None and item.staged.exists():
                    shutil.rmtree(item.staged, ignore_errors=True)
        artifacts = [_emit(item, space, profile, cache, session if verify else None, num_classes, preprocessing)
                     for item in items]
    failed = [a for a in artifacts if verify and not a.verified]
    if failed:
        first = failed[0].manifest["verification"]
        raise VerificationFailed(
            f"{len(failed)} artifact(s) failed verification on {profile.name} (first: {failed[0].folder}: "
            f"{first['error']}); they were not emitted — report this with that folder")
    return artifacts


def compile_subnet(space: SearchSpace, config: SubnetConfig, profile: Any, out_dir: str | Path,
                   supernet: Any = None, num_classes: int | None = None, *, name: str | None = None,
                   checkpoint: str | None = None, verify: bool = True, session: Any = None,
                   preprocessing: Preprocessing = Preprocessing()) -> Artifact:
    """Compile one subnet into the artifact folder `out_dir` (see `compile_many`)."""
    (artifact,) = compile_many(space, [config], profile, Path(out_dir).parent, supernet, num_classes,
                               names=[name], out_dirs=[out_dir], checkpoint=checkpoint, workers=1,
                               verify=verify, session=session, preprocessing=preprocessing)
    return artifact
