"""`pipeline profile`: which subnets (and blocks) to measure on a device, and measuring them.

Sampling plan: the smallest and largest subnet, then greedy farthest-point sampling
over a large seeded random pool, in a space where the subnet's (log) FLOPs counts as
much as all its choices together. That fills the FLOPs range evenly (what the error of
a latency model depends on most) while spreading over every choice, and it is a
sequence: the plan for N is the first N of the plan for N + M, so raising `--subnets`
only adds subnets and everything already measured is reused.

Measuring: subnets are compiled in batches (in parallel worker processes through
`pipeline.compile.compile_many`, with the device's tuned kernels when it has them), and
each batch is measured only after its compilation finished, one subnet at a time, so
that compiler processes never share the CPU with a timing run. Each measurement is
committed to the store when it is taken; stored ones are skipped, so a re-run resumes.
Blocks for the lookup table go through the same loop into their own store file.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.paths import cache_dir
from pipeline.progress import progress_bar
from pipeline.space import SearchSpace, SubnetConfig, encode_many
from pipeline.space.arch import BlockSpec

log = logging.getLogger(__name__)

#: Random candidates the plan picks from. Fixed (not scaled with n) so that the plan
#: for n is a prefix of the plan for any larger n.
POOL_SIZE = 4000


# ----------------------------------------------------------------- the plan
def sampling_plan(space: SearchSpace, n: int, seed: int = 0) -> list[SubnetConfig]:
    """`n` distinct subnets: extremes first, then farthest-point over (log FLOPs, choices)."""
    from pipeline.predict.features import space_tables

    if n <= 0:
        return []
    rng = random.Random(seed)
    extremes = [space.smallest(), space.largest()]
    pool = list({c.id: c for c in extremes + [space.sample(rng) for _ in range(POOL_SIZE)]}
                .values())
    encoded = encode_many(pool)
    # choices scaled to [0, 1] per column (constant columns drop out)
    lo, hi = encoded.min(axis=0), encoded.max(axis=0)
    varying = hi > lo
    choices = (encoded[:, varying] - lo[varying]) / (hi - lo)[varying]
    log_flops = np.log(space_tables(space).subnet_features(encoded)[:, 1])
    flops_axis = (log_flops - log_flops.min()) / max(np.ptp(log_flops), 1e-12)
    # FLOPs weighs as much as the whole choice vector (whose diameter is sqrt(#columns))
    points = np.column_stack([choices, flops_axis * np.sqrt(choices.shape[1])])
    chosen = [0, 1][: min(n, 2)]
    dist = np.min([np.linalg.norm(points - points[i], axis=1) for i in chosen], axis=0)
    while len(chosen) < min(n, len(pool)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return [pool[i] for i in chosen]


# --------------------------------------------------------------- the loop
@dataclass(frozen=True)
class ProfileSummary:
    """What a profile run did: planned, already stored, newly measured, and the store file."""

    device: str
    planned: int
    skipped: int
    measured: int
    store: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def current_key_fields(profile) -> tuple[str, str, str]:
    """(target, TVM version, kernel database hash) that measurements taken now are stored under."""
    import tvm

    from pipeline.kernels import kernel_db_hash

    return str(profile.tvm_target()), tvm.__version__, kernel_db_hash(profile.name, profile.tvm_target())


def block_store_path() -> Path:
    """Block measurements live apart from subnet measurements: `cache_dir()/block_measurements.sqlite`."""
    return cache_dir() / "block_measurements.sqlite"


@dataclass(frozen=True)
class Reference:
    """A fixed subnet timed right before every measurement (contention tracker).

    On a shared machine other processes slow a timing run by up to several times for
    seconds at a stretch; the same slowdown hits a reference timed a moment earlier, so
    `median_ms / reference_ms` cancels most of it. The fit uses that ratio (see
    `pipeline.predict.workflow.load_dataset`); raw times stay in the store.
    """

    subnet_id: str
    library: Path
    inputs: dict

    def measure(self, session, policy) -> float:
        from pipeline.device import measure

        return measure(session, self.library, self.inputs, policy).median_ms


def compile_reference(space: SearchSpace, profile, workers: int | None = None) -> Reference:
    """The space's largest subnet compiled for the device (a compile-cache hit after the first time)."""
    from pipeline.compile import INPUT_NAME, compile_many, fixed_input

    config = space.largest()
    (artifact,) = compile_many(space, [config], profile, cache_dir() / "profile" / profile.name,
                               workers=workers, verify=False)
    return Reference(config.id, artifact.library, {INPUT_NAME: fixed_input(config.resolution)})


def _measure_and_store(session, store, key, config: dict, lib: Path, inputs: dict, policy,
                       meta: dict, reference: Reference | None) -> None:
    from pipeline.device import MeasurementRecord, measure

    if reference is not None:
        meta = {**meta, "reference_id": reference.subnet_id, "reference_ms": reference.measure(session, policy)}
    result = measure(session, lib, inputs, policy)
    meta = {**meta, "load_avg_1min": os.getloadavg()[0]}
    store.add(MeasurementRecord.from_measurement(key, config, result, meta))
    log.debug("%s: %.3f ms (spread %.1f%%)", key.subnet_id, result.median_ms, 100 * result.spread)


def profile_subnets(device: str, space: SearchSpace, configs: Sequence[SubnetConfig],
                    store_path: str | os.PathLike | None = None, workers: int | None = None,
                    batch_size: int | None = None) -> ProfileSummary:
    """Compile and measure every config not yet stored for `device`.

    Each measurement is preceded by one of the reference subnet and committed at once.
    """
    from pipeline.compile import INPUT_NAME, compile_many, fixed_input
    from pipeline.device import MeasurementStore, RecordKey, load_profile, open_session

    profile = load_profile(device)
    fields = current_key_fields(profile)
    workers = workers or os.cpu_count() or 1
    batch_size = batch_size or 2 * workers
    out_root = cache_dir() / "profile" / profile.name
    with MeasurementStore(store_path) as store:
        todo = [c for c in configs if not store.has(RecordKey(profile.name, c.id, *fields))]
        log.info("%s: %d planned, %d stored, %d to compile and measure", device, len(configs),
                 len(configs) - len(todo), len(todo))
        if todo:
            reference = compile_reference(space, profile, workers)
            with open_session(profile) as session, progress_bar(total=len(todo), desc=f"profile {device}",
                                                                 unit="subnet") as bar:
                for start in range(0, len(todo), batch_size):
                    batch = todo[start:start + batch_size]
                    artifacts = compile_many(space, batch, profile, out_root, workers=workers, verify=False)
                    for config, artifact in zip(batch, artifacts):
                        build = artifact.manifest["build"]
                        coverage = build.get("kernel_coverage") or {}
                        # keyed by what the library was actually built with (the code may change mid-run)
                        key = RecordKey(profile.name, config.id, build["target"], fields[1], build["kernel_db_hash"])
                        _measure_and_store(session, store, key,
                                           config.to_dict(), artifact.library,
                                           {INPUT_NAME: fixed_input(config.resolution)}, profile.policy,
                                           {"space": space.name, "source": "profile",
                                            "kernels_tuned": coverage.get("tuned"),
                                            "kernels_total": coverage.get("total"),
                                            "compile_seconds": build.get("compile_seconds")}, reference)
                        bar.update()
        return ProfileSummary(device, len(configs), len(configs) - len(todo), len(todo), str(store.path))


def _stored_artifact(device: str, subnet_id: str, kernel_db_hash: str) -> Path | None:
    """The profile run's library of a subnet, if it was built with exactly that kernel hash."""
    import json

    folder = cache_dir() / "profile" / device / f"{subnet_id}-{device}"
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    lib = folder / "model.so"
    return lib if manifest["build"]["kernel_db_hash"] == kernel_db_hash and lib.is_file() else None


def remeasure_stored(device: str, space: SearchSpace, store_path: str | os.PathLike | None = None
                     ) -> ProfileSummary:
    """Time again every stored subnet of `device` whose library is still on disk, beside the reference.

    No recompilation: each record is replaced under its own key by a new timing of the very
    library it was measured from (the manifest's kernel hash must match), e.g. to add the
    contention reference to measurements taken before it existed or on a busy machine.
    """
    from pipeline.compile import INPUT_NAME, fixed_input
    from pipeline.device import MeasurementStore, load_profile, open_session

    profile = load_profile(device)
    largest = space.largest()
    with MeasurementStore(store_path) as store:
        records = [r for r in store.records(device) if _stored_artifact(device, r.subnet_id, r.kernel_db_hash)]
        done = 0
        with open_session(profile) as session:
            for r in progress_bar(records, desc=f"remeasure {device}", unit="subnet"):
                ref_lib = _stored_artifact(device, largest.id, r.kernel_db_hash)
                reference = Reference(largest.id, ref_lib, {INPUT_NAME: fixed_input(largest.resolution)}) \
                    if ref_lib else None
                config = SubnetConfig.from_dict(r.config)
                _measure_and_store(session, store, r.key, r.config, _stored_artifact(device, r.subnet_id,
                                                                                      r.kernel_db_hash),
                                   {INPUT_NAME: fixed_input(config.resolution)}, profile.policy,
                                   {**r.meta, "remeasured_from_artifact": True}, reference)
                done += 1
        return ProfileSummary(device, len(records), 0, done, str(store.path))


def profile_blocks(device: str, space: SearchSpace, blocks: Sequence[BlockSpec],
                   store_path: str | os.PathLike | None = None) -> ProfileSummary:
    """Build and measure each distinct block not yet stored (the lookup table's entries)."""
    from pipeline.device import MeasurementStore, RecordKey, load_profile, open_session
    from pipeline.predict.blocks import block_id, block_inputs, block_record_config, build_block_library

    profile = load_profile(device)
    fields = current_key_fields(profile)
    unique = list({b.key: b for b in blocks}.values())
    with MeasurementStore(store_path or block_store_path()) as store:
        todo = [b for b in unique if not store.has(RecordKey(profile.name, block_id(b), *fields))]
        log.info("%s: %d distinct blocks, %d stored, %d to build and measure", device, len(unique),
                 len(unique) - len(todo), len(todo))
        if todo:
            reference = compile_reference(space, profile)
            with open_session(profile) as session:
                for spec in progress_bar(todo, desc=f"blocks {device}", unit="block"):
                    folder = Path(tempfile.mkdtemp(prefix="block-", dir=cache_dir()))
                    try:
                        lib = build_block_library(spec, profile, folder)
                        _measure_and_store(session, store, RecordKey(profile.name, block_id(spec), *fields),
                                           block_record_config(spec), lib, block_inputs(spec), profile.policy,
                                           {"source": "blocks", "space": space.name}, reference)
                    finally:
                        shutil.rmtree(folder, ignore_errors=True)
        return ProfileSummary(device, len(unique), len(unique) - len(todo), len(todo), str(store.path))
