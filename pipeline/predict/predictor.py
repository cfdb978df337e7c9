"""The latency predictor of one device: a fitted, saved, vectorised function config -> ms.

Every predictor kind has the same form,

    latency_ms = scale[resolution] * base(config) + offset + model(features(config))

where `base` is the block lookup table's sum (kinds `lut`, `lut+*`), another device's
predictor (kinds `transfer*`) or absent (`ridge`, `trees`), and `model` is a regressor
on the per-subnet features (absent for pure `lut`/`transfer`). So one class serves all
kinds, and selection between them is a choice of parts, not of code paths. The scale is
one number except for the `lut-res*` kinds, which have one per input resolution: blocks
timed one at a time miss what the whole network pays at each input size (on x86-host the
full space's 256 px subnets run 8-10 % under their table sum relative to the others).

Saved as JSON under `cache_dir()/predictors/<device>/rNNNN.json`: one file per fit,
never overwritten, the highest revision is the current one. The file carries its format
version, the metrics it was selected and tested with, and the measurement ids it was
fitted on.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

from pipeline.atomic import create_new
from pipeline.errors import ConfigError, PipelineError
from pipeline.paths import cache_dir
from pipeline.predict.features import COL_RES, SpaceTables, space_tables
from pipeline.predict.lut import BlockLatencyTable
from pipeline.predict.models import LinearModel, TreeEnsemble, model_from_dict
from pipeline.space import SearchSpace

FORMAT = "pipeline.latency-predictor"
FORMAT_VERSION = 1
_REVISION = re.compile(r"r(\d{4,})\.json$")

Base = Union[BlockLatencyTable, "LatencyPredictor", None]


class PredictorNotFound(PipelineError):
    """No predictor has been fitted for a device yet."""


@dataclass(frozen=True)
class LatencyPredictor:
    """scale[resolution] * base + offset + model(features); see the module docstring."""

    device: str
    space: SearchSpace
    kind: str
    scale: float
    offset: float
    base: Base
    model: LinearModel | TreeEnsemble | None
    info: dict[str, Any] = field(default_factory=dict)  # metrics, cv, measurement ids, revision
    resolution_scale: dict[int, float] = field(default_factory=dict)  # `scale` where absent

    @property
    def space_name(self) -> str:
        return self.space.name

    @property
    def tables(self) -> SpaceTables:
        return space_tables(self.space)

    def predict(self, configs) -> np.ndarray:
        """Latency in ms of each config (a list of SubnetConfig or an (N, 31) `encode_many` array)."""
        batch = self.tables.index(configs)  # validated and indexed once for every part
        out = np.full(len(batch), self.offset)
        if self.base is not None:
            out += self.scales(batch) * self.base_predict(batch)
        if self.model is not None:
            out += self.model.predict(self.tables.subnet_features(batch))
        return out

    def interval(self, configs) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) ms per config: the point prediction widened by how wrong the model was
        out of fold, and more so the farther a config lies outside what it was fitted on.

        Half-width = point x q90 (the 90th percentile of the cross-validated relative error;
        twice the training one without CV) x (1 + e), where e is how far the config's
        subnet features (resolution, MFLOPs, parameters, activations, per stage) lie outside
        their range over the fitted subnets, in units of their spread there (0 inside).
        A prediction far outside the samples is thus an interval wide enough to straddle
        a budget, and the build loop measures it before believing it (`pipeline.build.loop`).
        """
        batch = self.tables.index(configs)
        point = self.predict(batch)
        width = self._relative_error() * (1.0 + self.extrapolation(batch))
        return point * np.clip(1.0 - width, 0.05, None), point * (1.0 + width)

    def extrapolation(self, configs) -> np.ndarray:
        """Per config: the largest distance outside the fitted range over the subnet features,
        in units of each feature's spread among the fitted subnets (0: inside the range)."""
        seen = self.info.get("train_features")
        batch = self.tables.index(configs)
        if not seen:
            return np.zeros(len(batch))
        x = self.tables.subnet_features(batch)
        low, high = np.asarray(seen["min"]), np.asarray(seen["max"])
        spread = np.maximum(np.asarray(seen["std"]), 1e-9 + 1e-6 * np.abs(high))
        outside = np.maximum(x - high, low - x).clip(min=0.0) / spread
        return outside.max(axis=1)

    def _relative_error(self) -> float:
        cv = self.info.get("cv", {}).get(self.info.get("selected", self.kind), {})
        if cv.get("q90_rel_error") is not None:
            return float(cv["q90_rel_error"])
        train = self.info.get("train_metrics", {})
        return 2.0 * float(train.get("q90_rel_error") or train.get("max_rel_error") or 0.25)

    def base_predict(self, configs) -> np.ndarray:
        """The base term before scaling: the block table's sum or the source predictor's ms."""
        batch = self.tables.index(configs)
        if isinstance(self.base, BlockLatencyTable):
            return self.base.block_sum(batch)
        if isinstance(self.base, LatencyPredictor):
            return self.base.predict(batch)
        return np.zeros(len(batch))

    def scales(self, configs) -> np.ndarray | float:
        """The base's scale for each config: its resolution's, else the pooled `scale` (a
        scalar when there are no per-resolution scales)."""
        if not self.resolution_scale:
            return self.scale
        resolution = self.tables.index(configs).encoded[:, COL_RES]
        levels, inverse = np.unique(resolution, return_inverse=True)
        return np.array([self.resolution_scale.get(int(r), self.scale) for r in levels])[inverse]

    def with_info(self, **info: Any) -> "LatencyPredictor":
        return replace(self, info={**self.info, **info})

    # ------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict[str, Any]:
        base: dict[str, Any] | None = None
        if isinstance(self.base, BlockLatencyTable):
            base = {"type": "lut", **self.base.to_dict()}
        elif isinstance(self.base, LatencyPredictor):
            base = {"type": "predictor", "predictor": self.base.to_dict()}
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "device": self.device,
            "space": self.space.name, "space_definition": self.space.to_dict(), "kind": self.kind, "scale": self.scale, "offset": self.offset,
            "base": base, "model": None if self.model is None else self.model.to_dict(), "info": self.info,
            "resolution_scale": {str(r): c for r, c in self.resolution_scale.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LatencyPredictor":
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"not a latency predictor of format {FORMAT} v{FORMAT_VERSION} "
                              f"(got {raw.get('format')} v{raw.get('format_version')}); refit it with "
                              "`pipeline predictor fit --device NAME`")
        # the definition travels in the file: a space loaded from a user's YAML is not re-read by name
        space = SearchSpace.from_dict(raw["space_definition"], raw["space"]) if "space_definition" in raw \
            else SearchSpace.load(raw["space"])
        tables = space_tables(space)
        base_raw = raw.get("base")
        base: Base = None
        if base_raw and base_raw["type"] == "lut":
            base = BlockLatencyTable.from_dict(tables, base_raw)
        elif base_raw and base_raw["type"] == "predictor":
            base = cls.from_dict(base_raw["predictor"])
        model = model_from_dict(raw["model"]) if raw.get("model") else None
        return cls(raw["device"], space, raw["kind"], float(raw["scale"]), float(raw["offset"]),
                   base, model, dict(raw.get("info", {})),
                   {int(r): float(c) for r, c in raw.get("resolution_scale", {}).items()})


# ------------------------------------------------------------------ files
def predictors_dir(device: str) -> Path:
    return cache_dir() / "predictors" / device


def _revisions(device: str) -> list[tuple[int, Path]]:
    folder = predictors_dir(device)
    found = [(int(m.group(1)), p) for p in folder.glob("r*.json") if (m := _REVISION.search(p.name))]
    return sorted(found)


def save_predictor(predictor: LatencyPredictor) -> Path:
    """Write the next free revision; returns its path (the info records the revision).

    Each revision file is created exclusively and complete (`create_new`), so two fits
    that finish together get two revisions, never one file written over by the other.
    """
    folder = predictors_dir(predictor.device)
    revisions = _revisions(predictor.device)
    revision = revisions[-1][0] + 1 if revisions else 1
    while True:
        path = folder / f"r{revision:04d}.json"
        data = predictor.with_info(revision=revision).to_dict()
        if create_new(path, json.dumps(data).encode()):
            return path
        revision += 1  # another fit took this one meanwhile


def load_predictor(device_or_path: str | os.PathLike) -> LatencyPredictor:
    """The current (highest revision) predictor of a device, or one predictor file."""
    path = Path(device_or_path)
    if not path.is_file():
        revisions = _revisions(str(device_or_path))
        if not revisions:
            raise PredictorNotFound(f"no latency predictor for device {device_or_path!r} in "
                                    f"{predictors_dir(str(device_or_path))}; run "
                                    f"`pipeline predictor fit --device {device_or_path}` first")
        path = revisions[-1][1]
    try:
        return LatencyPredictor.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ConfigError(f"predictor file {path} is unreadable ({err}); delete it and refit") from err
