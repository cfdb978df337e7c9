"""Fitting predictor kinds on measured subnets and choosing among them by cross-validation.

A kind names its parts: `ridge`, `trees` (a model on features alone), `lut` (the block
table's sum, scaled, plus a constant), `lut+ridge`, `lut+trees` (the table plus a model
of what it misses), `lut-res`, `lut-res+ridge` (the same with the table's scale per input
resolution, see `per_resolution_scales`), `transfer`, `transfer+ridge` (another device's predictor,
recalibrated, plus optionally a residual model). Every fit weights squared errors by
1/measured^2 so that it minimises relative error, the quantity budgets are judged by.
`rank` (asked for by name, not among the defaults) is linear on the features but
trained with a pairwise ranking loss and then calibrated to ms (`pipeline.predict.rank`).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
from sklearn.model_selection import KFold

from pipeline.errors import ConfigError
from pipeline.predict.features import COL_RES, as_encoded, space_tables
from pipeline.predict.lut import BlockLatencyTable
from pipeline.predict.metrics import error_metrics
from pipeline.predict.models import fit_ridge, fit_trees
from pipeline.predict.predictor import LatencyPredictor
from pipeline.predict.rank import fit_pairwise_linear
from pipeline.space import SearchSpace

log = logging.getLogger(__name__)

FEATURE_KINDS = ("ridge", "trees")
LUT_KINDS = ("lut", "lut+ridge", "lut+trees", "lut-res", "lut-res+ridge")
TRANSFER_KINDS = ("transfer", "transfer+ridge")
#: Trained to order subnets (pairwise loss), then calibrated to ms; only when asked for.
RANK_KINDS = ("rank",)
_FITS = {"ridge": fit_ridge, "trees": fit_trees, "rank": fit_pairwise_linear}
#: Below this many training subnets there is nothing to cross-validate with.
MIN_CV_SAMPLES = 4


def default_kinds(lut: BlockLatencyTable | None) -> tuple[str, ...]:
    """Candidate kinds for a from-scratch fit: the table-based ones only when a table exists."""
    return FEATURE_KINDS + (LUT_KINDS if lut is not None else ())


def _affine(base: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Weighted least squares y ~ scale * base + offset (offset 0 when the base is constant)."""
    if np.ptp(base) < 1e-12:
        return float(np.sum(weight * y * base) / max(np.sum(weight * base * base), 1e-12)), 0.0
    design = np.column_stack([base, np.ones_like(base)]) * np.sqrt(weight)[:, None]
    (scale, offset), *_ = np.linalg.lstsq(design, y * np.sqrt(weight), rcond=None)
    return float(scale), float(offset)


#: How strongly a resolution's scale is pulled to the shared one: as if each resolution had
#: this many more subnets lying exactly on the shared scale. With 1-2 subnets at a
#: resolution its own scale moves half-way or less; with 10 it is nearly free.
RESOLUTION_PRIOR_SUBNETS = 1.0


def per_resolution_scales(resolution: np.ndarray, base: np.ndarray, y: np.ndarray,
                          weight: np.ndarray) -> tuple[float, dict[int, float], float]:
    """Weighted least squares y ~ (s + d[resolution]) * base + offset with a ridge penalty on
    each d worth RESOLUTION_PRIOR_SUBNETS subnets of average weighted size; returns
    (s, {resolution: s + d}, offset).

    The shared scale is fitted with the deviations, not before them: one subnet far off at
    a rarely sampled resolution then moves that resolution's scale, not everyone's."""
    levels = np.unique(resolution)
    design = np.column_stack([base] + [base * (resolution == r) for r in levels] + [np.ones_like(base)])
    root = np.sqrt(weight)
    prior = np.sqrt(RESOLUTION_PRIOR_SUBNETS * float(np.mean(weight * base**2)))
    pull = np.zeros((len(levels), design.shape[1]))
    pull[:, 1:-1] = prior * np.eye(len(levels))
    solution, *_ = np.linalg.lstsq(np.vstack([design * root[:, None], pull]),
                                   np.concatenate([y * root, np.zeros(len(levels))]), rcond=None)
    shared, deviations, offset = solution[0], solution[1:-1], solution[-1]
    return float(shared), {int(r): float(shared + d) for r, d in zip(levels, deviations)}, float(offset)


def fit_kind(kind: str, device: str, space: SearchSpace, configs, latency_ms: np.ndarray,
             lut: BlockLatencyTable | None = None, source: LatencyPredictor | None = None) -> LatencyPredictor:
    """Fit one predictor kind on measured configs (list of SubnetConfig or encoded array)."""
    encoded = as_encoded(configs)
    y = np.asarray(latency_ms, dtype=np.float64)
    weight = 1.0 / y**2
    base_name, _, model_name = kind.partition("+")
    if base_name in FEATURE_KINDS + RANK_KINDS:
        base_name, model_name = "", base_name
    bases = {"": None, "lut": lut, "lut-res": lut, "transfer": source}
    if base_name not in bases or model_name not in ("", *FEATURE_KINDS) and kind not in RANK_KINDS:
        raise ConfigError(f"unknown predictor kind {kind!r}; one of "
                          f"{', '.join(FEATURE_KINDS + LUT_KINDS + TRANSFER_KINDS + RANK_KINDS)}")
    base = bases[base_name]
    if base_name and base is None:
        raise ConfigError(f"predictor kind {kind!r} needs a "
                          f"{'block table' if base_name.startswith('lut') else 'source predictor'}")
    predictor = LatencyPredictor(device, space, kind, 0.0, 0.0, base, None)
    residual = y
    if base is not None:
        base_ms = predictor.base_predict(encoded)
        if base_name == "lut-res":
            scale, scales, offset = per_resolution_scales(encoded[:, COL_RES], base_ms, y, weight)
            predictor = replace(predictor, scale=scale, offset=offset, resolution_scale=scales)
        else:
            scale, offset = _affine(base_ms, y, weight)
            predictor = replace(predictor, scale=scale, offset=offset)
        residual = y - predictor.predict(encoded)
    if model_name:
        features = space_tables(space).subnet_features(encoded)
        predictor = replace(predictor, model=_FITS[model_name](features, residual, weight))
    return predictor


def cross_validate(kinds: Sequence[str], device: str, space: SearchSpace, configs, latency_ms: np.ndarray,
                   lut: BlockLatencyTable | None = None, source: LatencyPredictor | None = None,
                   folds: int = 5, seed: int = 0) -> dict[str, dict]:
    """Out-of-fold error metrics of each kind (K-fold, pooled over folds)."""
    encoded = as_encoded(configs)
    y = np.asarray(latency_ms, dtype=np.float64)
    splitter = KFold(n_splits=min(folds, len(y)), shuffle=True, random_state=seed)
    results = {}
    for kind in kinds:
        oof = np.zeros_like(y)
        for train, test in splitter.split(encoded):
            model = fit_kind(kind, device, space, encoded[train], y[train], lut, source)
            oof[test] = model.predict(encoded[test])
        results[kind] = error_metrics(y, oof)
    return results


def _feature_range(space: SearchSpace, encoded: np.ndarray) -> dict[str, list[float]]:
    """Per subnet feature: min, max and spread over the fitted subnets."""
    features = space_tables(space).subnet_features(encoded)
    return {"min": features.min(axis=0).tolist(), "max": features.max(axis=0).tolist(),
            "std": features.std(axis=0).tolist()}


def fit_predictor(device: str, space: SearchSpace, configs, latency_ms: np.ndarray,
                  measurement_ids: Sequence = (), lut: BlockLatencyTable | None = None,
                  source: LatencyPredictor | None = None, kinds: Sequence[str] | None = None,
                  folds: int = 5, seed: int = 0) -> LatencyPredictor:
    """Cross-validate the candidate kinds, refit the best (lowest CV MAPE) on everything.

    The result's `info` holds the CV table, the selected kind, n_train and the
    measurement ids, so a saved predictor says what it was fitted on and how it did.
    """
    encoded = as_encoded(configs)
    y = np.asarray(latency_ms, dtype=np.float64)
    if len(y) < 2:
        raise ConfigError(f"need at least 2 measured subnets to fit a predictor for {device}, got {len(y)}; "
                          f"run `pipeline profile --device {device} --subnets N` first")
    if kinds is None:
        kinds = TRANSFER_KINDS if source is not None else default_kinds(lut)
    cv: dict[str, dict] = {}
    if len(y) >= MIN_CV_SAMPLES and len(kinds) > 1:
        cv = cross_validate(kinds, device, space, encoded, y, lut, source, folds, seed)
        selected = min(kinds, key=lambda k: cv[k]["mape"])
    else:
        selected = kinds[0]
    log.info("%s: selected %s among %s (CV MAPE %s)", device, selected, list(kinds),
             {k: round(v["mape"], 4) for k, v in cv.items()})
    predictor = fit_kind(selected, device, space, encoded, y, lut, source)
    return predictor.with_info(
        selected=selected, cv=cv, n_train=int(len(y)), measurement_ids=list(measurement_ids),
        train_features=_feature_range(space, encoded),  # where the model has seen data (`interval`)
        fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        train_metrics=error_metrics(y, predictor.predict(encoded)))
