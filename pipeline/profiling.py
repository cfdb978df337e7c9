"""`pipeline profile`: which subnets (and blocks) to measure on a device, and measuring them.

Sampling plan: the smallest and largest subnet, then greedy farthest-point sampling
over a large seeded random pool, in a space where the subnet's (log) FLOPs counts as
much as all its choices together. That fills the FLOPs range evenly (what the error of
a latency model depends on most) while spreading over every choice, and it is a
sequence: the plan for N is the first N of the plan for N + M, so raising `--subnets`
only adds subnets and everything already measured is reused.

Measuring: subnets are compiled in batches (in parallel worker processes through
`pipeline.compile.compile_many`, with the device's tuned kernels when it has them), and
each batch is measured only after its compilation finished, through
`pipeline.measure.measure_batch` (serially, or over every server behind a tracker key),
so that compiler processes never share the CPU with a timing run. Each measurement is
committed to the store when it is taken, beside the contention reference; stored ones
are skipped, so a re-run resumes. Blocks for the lookup table go through the same loop
into their own store file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from pipeline.compile.keys import BARE_ID_CLASSES, current_key_fields, measured_id
from pipeline.device.store import RecordKey
from pipeline.measure import MeasureJob, Reference, block_store_path, measure_batch
from pipeline.paths import cache_dir
from pipeline.space import SearchSpace, SubnetConfig, encode_many
from pipeline.space.arch import BlockSpec

if TYPE_CHECKING:
    from pipeline.compile import Artifact
    from pipeline.device import DeviceProfile, DeviceSession, MeasurementStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Random candidates the plan picks from. Fixed (not scaled with n) so that the plan
#: for n is a prefix of the plan for any larger n.
POOL_SIZE = 4000


# ----------------------------------------------------------------- the plan
def sampling_plan(space: SearchSpace, n: int, seed: int = 0) -> list[SubnetConfig]:
    """`n` distinct subnets: extremes first, then farthest-point over (log FLOPs, choices),
    taking turns between input resolutions.

    The turns matter because a latency model's error is largely per resolution (blocks
    timed alone miss what a whole network pays at each input size, `lut-res` kinds fit a
    factor per resolution): plain farthest-point sampling favours the corner resolutions
    (the full space's first 20 held 9 at 192 px, 8 at 288 px, 2 at 256, 1 at 224)."""
    from pipeline.predict.features import COL_RES, space_tables

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
    resolution = encoded[:, COL_RES]
    chosen = [0, 1][: min(n, 2)]
    dist = np.min([np.linalg.norm(points - points[i], axis=1) for i in chosen], axis=0)
    free = np.ones(len(pool), dtype=bool)
    free[chosen] = False
    while len(chosen) < min(n, len(pool)):
        # the resolution with the fewest chosen (then the farthest candidate), its farthest candidate
        turn = min((r for r in np.unique(resolution[free])),
                   key=lambda r: (np.sum(resolution[chosen] == r), -dist[free & (resolution == r)].max()))
        candidates = np.flatnonzero(free & (resolution == turn))
        nxt = int(candidates[np.argmax(dist[candidates])])
        chosen.append(nxt)
        free[nxt] = False
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return [pool[i] for i in chosen]


# --------------------------------------------------------------- the loop
@dataclass(frozen=True)
class ProfileSummary:
    """What a profile run did: planned, already stored, newly measured (and by which server:
    behind a tracker, whether the farm was used), and the store file."""

    device: str
    planned: int
    skipped: int
    measured: int
    store: str
    servers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, device: str, planned: int, skipped: int, stored: Counter[str], store: str) -> "ProfileSummary":
        """The summary of a run that stored `stored` rows per server."""
        return cls(device, planned, skipped, stored.total(), store, dict(stored))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compile_for_timing(space: SearchSpace, configs: Sequence[SubnetConfig], profile: "DeviceProfile",
                   num_classes: int | None, workers: int | None) -> list["Artifact"]:
    """`configs` compiled with seeded weights and a `num_classes` head (default: the
    space's) into `<cache>/profile/<device>/<measured id>-<device>/`, unverified."""
    from pipeline.compile import compile_many

    num_classes = num_classes or space.num_classes
    return compile_many(space, configs, profile, cache_dir() / "profile" / profile.name, num_classes=num_classes,
                        names=[measured_id(c.id, num_classes) for c in configs], workers=workers, verify=False)


def reference_config(space: SearchSpace, profile: "DeviceProfile") -> SubnetConfig:
    """The subnet the device's policy names as its contention reference."""
    return space.smallest() if profile.policy.reference_for(space.name) == "smallest" else space.largest()


def compile_reference(space: SearchSpace, profile: "DeviceProfile", workers: int | None = None,
                      num_classes: int | None = None) -> Reference:
    """The device's reference subnet of the space (`reference_config`) compiled for it with
    a `num_classes` head (a compile-cache hit after the first time)."""
    from pipeline.compile import INPUT_NAME, fixed_input

    config = reference_config(space, profile)
    (artifact,) = compile_for_timing(space, [config], profile, num_classes, workers)
    return Reference(artifact_measured_id(artifact), artifact.library, {INPUT_NAME: fixed_input(config.resolution)})


def artifact_measured_id(artifact: "Artifact") -> str:
    """The store id of a timing of `artifact`: its subnet with the head it was compiled with."""
    subnet = artifact.manifest["subnet"]
    return measured_id(subnet["id"], subnet["num_classes"])


def subnet_job(profile: "DeviceProfile", space: SearchSpace, config: SubnetConfig, artifact: "Artifact",
               source: str, **meta: Any) -> MeasureJob:
    """The job timing a compiled subnet, keyed by what its library was actually built with
    (the kernel database or the code may change while a run goes on)."""
    from pipeline.compile import INPUT_NAME, fixed_input

    build = artifact.manifest["build"]
    coverage = build.get("kernel_coverage") or {}
    key = RecordKey(profile.name, artifact_measured_id(artifact), build["target"], current_key_fields(profile)[1],
                    build["kernel_db_hash"])
    return MeasureJob(key, config.to_dict(), artifact.library, {INPUT_NAME: fixed_input(config.resolution)},
                      profile.policy, {"space": space.name, "source": source,
                                       "num_classes": artifact.manifest["subnet"]["num_classes"],
                                       "kernels_tuned": coverage.get("tuned"),
                                       "kernels_total": coverage.get("total"),
                                       "compile_seconds": build.get("compile_seconds"), **meta})


def _in_batches(todo: Sequence[T], batch_size: int, prepare: Callable[[Sequence[T]], list[MeasureJob]],
                profile: "DeviceProfile", store: "MeasurementStore", reference: Reference,
                session: "DeviceSession | None", desc: str, skip_stored: bool = True) -> Counter[str]:
    """Prepare (compile) and measure `todo` a batch at a time; returns how many were stored,
    per server (worker) that timed them.

    One session serves every batch (the caller's, or one opened here): a session per
    batch re-connected and re-uploaded the reference (a few MB) each time."""
    from pipeline.device import open_session

    stored: Counter[str] = Counter()
    with contextlib.nullcontext(session) if session is not None else open_session(profile) as sess:
        for start in range(0, len(todo), batch_size):
            jobs = prepare(todo[start:start + batch_size])
            stored.update(r.worker for r in measure_batch(profile, jobs, store, reference, sess,
                                                          skip_stored=skip_stored,
                                                          desc=f"{desc} {start + len(jobs)}/{len(todo)}")
                          if r.measurement is not None)
    return stored


def profile_subnets(profile: "DeviceProfile", space: SearchSpace, configs: Sequence[SubnetConfig],
                    store_path: str | os.PathLike | None = None, workers: int | None = None,
                    batch_size: int | None = None, session: "DeviceSession | None" = None,
                    reference: Reference | None = None, source: str = "profile", again: bool = False,
                    num_classes: int | None = None) -> ProfileSummary:
    """Compile and measure every config not yet stored for the profile's device (`again`:
    every config, each new timing replacing its row).

    Each measurement is preceded by one of the reference (compiled here if not given) and
    committed at once; `session`, if given, is used for serial measuring. `source` (e.g.
    "build") is recorded in each row's metadata. Subnets are timed with a `num_classes`
    head (default: the space's dataset's), what the artifacts built from them will have.
    """
    from pipeline.device import MeasurementStore

    fields = current_key_fields(profile)
    workers = workers or os.cpu_count() or 1
    num_classes = num_classes or space.num_classes
    with MeasurementStore(store_path) as store:
        todo = [c for c in configs
                if again or not store.has(RecordKey(profile.name, measured_id(c.id, num_classes), *fields))]
        log.info("%s: %d planned, %d stored, %d to compile and measure", profile.name, len(configs),
                 len(configs) - len(todo), len(todo))
        stored: Counter[str] = Counter()
        if todo:
            reference = reference or compile_reference(space, profile, workers, num_classes)

            def prepare(batch: Sequence[SubnetConfig]) -> list[MeasureJob]:
                artifacts = compile_for_timing(space, batch, profile, num_classes, workers)
                return [subnet_job(profile, space, c, a, source) for c, a in zip(batch, artifacts)]

            stored = _in_batches(todo, batch_size or 2 * workers, prepare, profile, store, reference, session,
                                 f"profile {profile.name}", skip_stored=not again)
        return ProfileSummary.of(profile.name, len(configs), len(configs) - len(todo), stored, str(store.path))


def _stored_artifact(device: str, subnet_id: str, kernel_db_hash: str) -> Path | None:
    """The profile run's library of a subnet, if it was built with exactly that kernel hash."""
    folder = cache_dir() / "profile" / device / f"{subnet_id}-{device}"
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    lib = folder / "model.so"
    return lib if manifest["build"]["kernel_db_hash"] == kernel_db_hash and lib.is_file() else None


def remeasure_stored(profile: "DeviceProfile", space: SearchSpace, store_path: str | os.PathLike | None = None
                     ) -> ProfileSummary:
    """Time again every stored subnet of the device whose library is still on disk, beside the reference.

    No recompilation: each record is replaced under its own key by a new timing of the very
    library it was measured from (the manifest's kernel hash must match), e.g. to add the
    contention reference to measurements taken before it existed or on a busy machine.
    Records whose kernel hash and head have no stored reference library are left as they are.
    """
    from pipeline.compile import INPUT_NAME, fixed_input
    from pipeline.device import MeasurementStore

    reference_subnet = reference_config(space, profile)
    done: Counter[str] = Counter()
    with MeasurementStore(store_path) as store:
        records = [r for r in store.records(profile.name)
                   if _stored_artifact(profile.name, r.subnet_id, r.kernel_db_hash)]
        groups: dict[tuple[str, int], list] = {}
        for r in records:
            head = r.meta.get("num_classes", BARE_ID_CLASSES)
            groups.setdefault((r.kernel_db_hash, head), []).append(r)
        for (kernel_hash, head), group in groups.items():
            ref_id = measured_id(reference_subnet.id, head)
            ref_lib = _stored_artifact(profile.name, ref_id, kernel_hash)
            if ref_lib is None:
                log.warning("%s: no reference library built with kernels %s and a %d-class head; %d record(s) "
                            "left as they are", profile.name, kernel_hash[:12], head, len(group))
                continue
            reference = Reference(ref_id, ref_lib, {INPUT_NAME: fixed_input(reference_subnet.resolution)})
            jobs = [MeasureJob(r.key, r.config, _stored_artifact(profile.name, r.subnet_id, kernel_hash),
                               {INPUT_NAME: fixed_input(SubnetConfig.from_dict(r.config).resolution)},
                               profile.policy, {**r.meta, "remeasured_from_artifact": True}) for r in group]
            done.update(res.worker for res in measure_batch(profile, jobs, store, reference, skip_stored=False,
                                                            desc=f"remeasure {profile.name}")
                        if res.measurement is not None)
        return ProfileSummary.of(profile.name, len(records), 0, done, str(store.path))


def profile_blocks(profile: "DeviceProfile", space: SearchSpace, blocks: Sequence[BlockSpec],
                   store_path: str | os.PathLike | None = None, session: "DeviceSession | None" = None,
                   reference: Reference | None = None, batch_size: int = 16, workers: int | None = None
                   ) -> ProfileSummary:
    """Build (in `workers` processes) and measure each distinct block not yet stored (the
    lookup table's entries)."""
    from pipeline.compile.workers import run_in_workers
    from pipeline.device import MeasurementStore
    from pipeline.predict.blocks import block_id, block_inputs, block_record_config, build_block_library

    fields = current_key_fields(profile)
    unique = list({b.key: b for b in blocks}.values())
    with MeasurementStore(store_path or block_store_path()) as store:
        todo = [b for b in unique if not store.has(RecordKey(profile.name, block_id(b), *fields))]
        log.info("%s: %d distinct blocks, %d stored, %d to build and measure", profile.name, len(unique),
                 len(unique) - len(todo), len(todo))
        stored: Counter[str] = Counter()
        if todo:
            reference = reference or compile_reference(space, profile)
            with tempfile.TemporaryDirectory(prefix="blocks-", dir=cache_dir()) as tmp:

                def prepare(batch: Sequence[BlockSpec]) -> list[MeasureJob]:
                    libraries = run_in_workers(build_block_library,
                                               [(b, profile, Path(tmp) / block_id(b)) for b in batch],
                                               workers or os.cpu_count() or 1, "build blocks", "block")
                    return [MeasureJob(RecordKey(profile.name, block_id(b), *fields), block_record_config(b),
                                       lib, block_inputs(b), profile.policy, {"source": "blocks", "space": space.name})
                            for b, lib in zip(batch, libraries)]

                stored = _in_batches(todo, batch_size, prepare, profile, store, reference, session,
                                     f"blocks {profile.name}")
        return ProfileSummary.of(profile.name, len(unique), len(unique) - len(todo), stored, str(store.path))
