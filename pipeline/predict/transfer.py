"""Few-shot transfer: a new device from another device's predictor plus K measurements.

Across CPUs the ranking of subnets by latency changes far less than the scale, so the
source predictor, recalibrated by an affine map fitted on K measurements (`transfer`),
or recalibrated plus a strongly regularised ridge residual (`transfer+ridge`, when
there are enough measurements to cross-validate the choice), is the natural few-shot
model (HELP reports about 10 measurements suffice). The study compares it with a
from-scratch fit on the same K subnets, over several random draws of the K.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.predict.fit import MIN_CV_SAMPLES, TRANSFER_KINDS, fit_predictor
from pipeline.predict.metrics import error_metrics
from pipeline.predict.predictor import LatencyPredictor

DEFAULT_KS = (5, 10, 20)
METRIC_KEYS = ("rmse_ms", "mape", "within_5pct", "within_10pct", "kendall_tau")


def fit_transfer(source: LatencyPredictor, device: str, encoded: np.ndarray, latency_ms: np.ndarray,
                 measurement_ids: Sequence[str] = ()) -> LatencyPredictor:
    """`source` recalibrated on the target device's measurements (kind chosen by CV when K allows)."""
    kinds = TRANSFER_KINDS if len(latency_ms) >= 2 * MIN_CV_SAMPLES else TRANSFER_KINDS[:1]
    return fit_predictor(device, source.space, encoded, latency_ms, measurement_ids,
                         source=source, kinds=kinds).with_info(source_device=source.device)


def _mean_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in METRIC_KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def transfer_study(source: LatencyPredictor, device: str, encoded: np.ndarray, latency_ms: np.ndarray,
                   ks: Sequence[int] = DEFAULT_KS, draws: int = 5, seed: int = 0) -> dict[str, Any]:
    """For each K: mean held-out metrics of transfer vs from-scratch over `draws` random K-subsets.

    Each draw trains both on the same K measured subnets and tests both on all the others.
    """
    y = np.asarray(latency_ms, dtype=np.float64)
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {"source_device": source.device, "target_device": device, "n_measured": int(len(y)),
                               "draws": draws, "by_k": {}}
    for k in ks:
        if k >= len(y):
            results["by_k"][str(k)] = {"skipped": f"needs more than {k} measured subnets, have {len(y)}"}
            continue
        transfer_runs, scratch_runs = [], []
        for _ in range(draws):
            train = np.zeros(len(y), dtype=bool)
            train[rng.choice(len(y), size=k, replace=False)] = True
            transferred = fit_transfer(source, device, encoded[train], y[train])
            scratch = fit_predictor(device, source.space, encoded[train], y[train])
            transfer_runs.append(error_metrics(y[~train], transferred.predict(encoded[~train])))
            scratch_runs.append(error_metrics(y[~train], scratch.predict(encoded[~train])))
        results["by_k"][str(k)] = {"n_test": int(len(y) - k), "transfer": _mean_metrics(transfer_runs),
                                   "scratch": _mean_metrics(scratch_runs)}
    return results
