"""From the measurement store to a saved, tested predictor (`pipeline predictor fit|eval`).

Only measurements of code as it would be built now count: the device's current target,
TVM version and kernel database hash (a predictor fitted on untuned latencies would
teach the search the wrong lesson once the kernels are tuned). The held-out split is a
hash of the subnet id, so a subnet stays on the same side as the store grows and a
later `fit` never trains on what an earlier one was tested on.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.measure import block_store_path
from pipeline.measure.jobs import quiet_time
from pipeline.predict.features import space_tables
from pipeline.predict.fit import fit_predictor
from pipeline.predict.lut import BlockLatencyTable
from pipeline.predict.metrics import error_metrics, plot_predicted_vs_measured
from pipeline.predict.predictor import LatencyPredictor, load_predictor, predictors_dir, save_predictor
from pipeline.space import SearchSpace, SubnetConfig, encode_many

if TYPE_CHECKING:
    from pipeline.device import DeviceProfile

log = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Dataset:
    """Measured subnets of one device: ids, configs, encoded (N, 31) and median latency (ms).

    `reference_quiet_ms`: per reference subnet the rows were timed beside, its quiet-machine
    time (`pipeline.measure.jobs.quiet_time`), to which the latencies were corrected; None
    when they are raw. A model fitted on corrected latencies predicts the device on a quiet
    machine, so a caller judging raw timings scales by one of those references timed now."""

    device: str
    ids: tuple[str, ...]
    configs: tuple[SubnetConfig, ...]
    encoded: np.ndarray
    latency_ms: np.ndarray
    key_fields: tuple[str, str, str]
    #: classes of the head every measured library had (what a fit on this data predicts)
    num_classes: int
    reference_quiet_ms: dict[str, float] | None = None
    #: per row, the reference's time beside it (NaN for a row timed without one)
    reference_ms: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> "Dataset":
        idx = np.flatnonzero(mask)
        return replace(self, ids=tuple(self.ids[i] for i in idx), configs=tuple(self.configs[i] for i in idx),
                       encoded=self.encoded[idx], latency_ms=self.latency_ms[idx],
                       reference_ms=None if self.reference_ms is None else self.reference_ms[idx])

    def __len__(self) -> int:
        return len(self.ids)


KeyFields = tuple[str, str, str]


def _fields(profile: "DeviceProfile", key_fields: KeyFields | None) -> KeyFields:
    from pipeline.compile.keys import current_key_fields  # the compiler stack loads only when asked

    return tuple(key_fields) if key_fields else current_key_fields(profile)


def stored_key_fields(device: str, store_path: str | os.PathLike | None = None) -> list[tuple[KeyFields, int]]:
    """(target, TVM version, kernel hash) groups of the device's stored measurements, largest first.

    For looking at (or deliberately fitting on) measurements of code that is no longer
    current, e.g. while the kernel library is still changing.
    """
    from pipeline.device import MeasurementStore

    with MeasurementStore(store_path) as store:
        counts = Counter((r.target, r.tvm_version, r.kernel_db_hash) for r in store.records(device))
    return counts.most_common()


def reference_normalised(latency_ms: np.ndarray, reference_ms: np.ndarray, reference_ids: Sequence[str],
                         quiet_ms: Mapping[str, float] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Latencies corrected for machine contention, each x (its reference's quiet time /
    that reference's time beside it), so corrected values estimate quiet-machine latencies
    whichever reference a row was timed beside (a store can hold rows of several: another
    head, the cheaper reference a slow device's policy names); plus each reference's quiet time.

    `quiet_ms`: the quiet times to correct to, per reference, instead of the rows' own (the
    10th percentile of their reference timings). Rows from another store or run are only
    comparable with a model's data when corrected to the model's quiet time: on this host
    two runs over the same 30 subnets estimated 88.6 and 99.4 ms (the second never saw a
    quiet minute), which put the second 9 % off the model however good it was."""
    ids = np.asarray(reference_ids, dtype=object)
    corrected = np.empty_like(latency_ms, dtype=np.float64)
    quiet: dict[str, float] = {}
    for ref in dict.fromkeys(reference_ids):
        rows = ids == ref
        quiet[ref] = quiet_ms[ref] if quiet_ms and ref in quiet_ms else quiet_time(reference_ms[rows])
        corrected[rows] = latency_ms[rows] * (quiet[ref] / reference_ms[rows])
    return corrected, quiet


def load_dataset(profile: "DeviceProfile", space: SearchSpace, store_path: str | os.PathLike | None = None,
                 key_fields: KeyFields | None = None, normalise: bool = True, num_classes: int | None = None,
                 quiet_ms: Mapping[str, float] | None = None) -> Dataset:
    """The device's stored subnet measurements whose configs belong to the space.

    Only measurements under `key_fields` (default: the current target, TVM version and
    kernel hash) of subnets with a `num_classes` head (default: the space's dataset's)
    count; the dataset's ids are the subnets' config ids. With `normalise`, when measurements were taken beside the
    reference subnet (`pipeline.measure.Reference`; every row `pipeline.measure` stores
    is), only those are used, contention-corrected by `reference_normalised` (to `quiet_ms`
    where given: a model's `reference_quiet_ms`, to compare these rows with its predictions).
    """
    from pipeline.compile.keys import measured_id
    from pipeline.device import MeasurementStore

    device = profile.name
    fields = _fields(profile, key_fields)
    num_classes = num_classes or space.num_classes
    ids, configs, latency, reference = [], [], [], []
    with MeasurementStore(store_path) as store:
        for rec in store.records(device):
            if (rec.target, rec.tvm_version, rec.kernel_db_hash) != fields:
                continue
            try:
                config = space.validate(SubnetConfig.from_dict(rec.config))
            except ConfigError:
                continue
            if rec.subnet_id != measured_id(config.id, num_classes):
                continue
            ids.append(config.id)
            configs.append(config)
            latency.append(rec.median_ms)
            reference.append((rec.meta.get("reference_ms"), rec.meta.get("reference_id", "")))
    log.info("%s: %d measured subnets of space %s (%d-class head) under kernel hash %s", device, len(ids),
             space.name, num_classes, fields[2][:12])
    data = Dataset(device, tuple(ids), tuple(configs), encode_many(configs), np.asarray(latency, dtype=np.float64),
                   fields, num_classes,
                   reference_ms=np.asarray([np.nan if ms is None else ms for ms, _ in reference], dtype=np.float64))
    with_reference = np.array([ms is not None for ms, _ in reference], dtype=bool)
    if normalise and with_reference.any():
        if not with_reference.all():
            log.info("%s: using the %d of %d measurements taken beside the reference (contention-corrected); "
                     "`pipeline profile --remeasure` re-times the others", device, with_reference.sum(), len(ids))
        data = data.subset(with_reference)
        kept = [r for r in reference if r[0] is not None]
        latency_ms, quiet = reference_normalised(data.latency_ms, data.reference_ms, [i for _, i in kept], quiet_ms)
        data = replace(data, latency_ms=latency_ms, reference_quiet_ms=quiet)
    return data


def is_held_out(subnet_id: str, test_fraction: float, seed: int = 0) -> bool:
    """Stable membership of the test split, by a hash of the id."""
    h = int(hashlib.sha1(f"{seed}:{subnet_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < test_fraction


def split(data: Dataset, test_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) by `is_held_out`."""
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test fraction must be in [0, 1), got {test_fraction}")
    mask = np.array([is_held_out(i, test_fraction, seed) for i in data.ids], dtype=bool)
    return data.subset(~mask), data.subset(mask)


def load_block_table(profile: "DeviceProfile", space: SearchSpace, store_path: str | os.PathLike | None = None,
                     key_fields: KeyFields | None = None) -> BlockLatencyTable | None:
    """The device's measured blocks (under `key_fields`, default current) laid onto the space, or None."""
    from pipeline.device import MeasurementStore

    path = Path(store_path) if store_path else block_store_path()
    if not path.is_file():
        return None
    fields = _fields(profile, key_fields)
    with MeasurementStore(path) as store:
        records = [r for r in store.records(profile.name) if (r.target, r.tvm_version, r.kernel_db_hash) == fields]
    if not records:
        return None
    latency = np.array([r.median_ms for r in records])
    reference = [r.meta.get("reference_ms") for r in records]
    if None not in reference:
        latency = reference_normalised(latency, np.asarray(reference, dtype=np.float64),
                                       [r.meta.get("reference_id", "") for r in records])[0]
    return BlockLatencyTable.build(space_tables(space),
                                   {tuple(r.config["block_key"]): ms for r, ms in zip(records, latency)})


def report(predictor: LatencyPredictor, test: Dataset, plot_path: Path | None) -> dict[str, Any]:
    """The error report on held-out measurements, as one JSON-able dict (plus the PNG)."""
    predicted = predictor.predict(test.encoded)
    metrics = error_metrics(test.latency_ms, predicted)
    out = {"device": predictor.device, "space": predictor.space_name, "kind": predictor.kind,
           "revision": predictor.info.get("revision"), "n_train": predictor.info.get("n_train"),
           "n_test": metrics.pop("n"), **metrics, "plot": None}
    if plot_path is not None and len(test):
        title = f"{predictor.device}: {predictor.kind}, n_train={out['n_train']}, n_test={out['n_test']}"
        out["plot"] = str(plot_predicted_vs_measured(test.latency_ms, predicted, plot_path, title))
    if isinstance(predictor.base, BlockLatencyTable) and len(test):
        out["lut_coverage"] = float(predictor.base.coverage(test.encoded).mean())
    return out


def fit_device(profile: "DeviceProfile", space: SearchSpace, test_fraction: float = DEFAULT_TEST_FRACTION,
               store_path: str | os.PathLike | None = None, block_store: str | os.PathLike | None = None,
               kinds: Sequence[str] | None = None, max_train: int | None = None, seed: int = 0,
               save: bool = True, plot: bool = True, num_classes: int | None = None
               ) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Fit on the train split (CV-selected kind), test on the held-out split, save with both."""
    data = load_dataset(profile, space, store_path, num_classes=num_classes)
    train, test = split(data, test_fraction, seed)
    if max_train is not None:
        train = train.subset(np.arange(len(train)) < max_train)
    lut = load_block_table(profile, space, block_store)
    predictor = fit_predictor(profile.name, space, train.encoded, train.latency_ms, train.ids, lut=lut,
                              kinds=kinds, seed=seed)
    predictor = predictor.with_info(key_fields=list(data.key_fields), num_classes=data.num_classes,
                                    test_fraction=test_fraction, test_ids=list(test.ids))
    plot_path = predictors_dir(profile.name) / "fit.png" if plot else None
    result = report(predictor, test, plot_path)
    predictor = predictor.with_info(test_metrics={k: result[k] for k in ("n_test", "rmse_ms", "mape", "within_5pct",
                                                                        "within_10pct", "kendall_tau")})
    if save:
        path = save_predictor(predictor)
        result.update(revision=int(path.stem[1:]), predictor_file=str(path))
    result["cv"] = predictor.info["cv"]
    return predictor, result


def evaluate_device(profile: "DeviceProfile", store_path: str | os.PathLike | None = None, plot: bool = True
                    ) -> dict[str, Any]:
    """The saved predictor against every stored measurement it was not fitted on (in its own space)."""
    predictor = load_predictor(profile.name)
    data = load_dataset(profile, predictor.space, store_path, num_classes=predictor.info.get("num_classes"))
    used = set(predictor.info.get("measurement_ids", ()))
    test = data.subset(np.array([i not in used for i in data.ids], dtype=bool))
    return report(predictor, test, predictors_dir(profile.name) / "eval.png" if plot else None)
