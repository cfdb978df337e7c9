"""The measurement store: one SQLite row per measured (device, subnet, target, TVM, kernels).

Every `add` commits at once, so a killed run loses at most the measurement in flight
and a re-run skips what is stored (`has`/`get`). WAL mode lets a predictor fit read the
file while a measurement run writes it.
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from pipeline.atomic import atomic_path
from pipeline.device.measure import Measurement
from pipeline.errors import ConfigError
from pipeline.paths import cache_dir

EXPORT_FORMATS = ("csv", "json")


def default_store_path() -> Path:
    """`cache_dir()/measurements.sqlite`."""
    return cache_dir() / "measurements.sqlite"


class RecordKey(NamedTuple):
    """What makes two measurements the same measurement."""

    device: str
    subnet_id: str
    target: str
    tvm_version: str
    kernel_db_hash: str


@dataclass(frozen=True)
class MeasurementRecord:
    """One stored measurement. `config` is the subnet config dict; times in ms."""

    device: str
    subnet_id: str
    target: str
    tvm_version: str
    kernel_db_hash: str
    config: dict[str, Any]
    median_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    min_ms: float
    repeats_ms: tuple[float, ...]
    remeasured: bool
    spread_ok: bool
    measured_at: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> RecordKey:
        return RecordKey(self.device, self.subnet_id, self.target, self.tvm_version, self.kernel_db_hash)

    @classmethod
    def from_measurement(cls, key: RecordKey, config: dict[str, Any], m: Measurement,
                         meta: dict[str, Any] | None = None) -> "MeasurementRecord":
        return cls(*key, config=dict(config), median_ms=m.median_ms, mean_ms=m.mean_ms, std_ms=m.std_ms,
                   iqr_ms=m.iqr_ms, min_ms=m.min_ms, repeats_ms=m.repeats_ms, remeasured=m.remeasured,
                   spread_ok=m.spread_ok, meta=dict(meta or {}))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["repeats_ms"] = list(self.repeats_ms)
        return out


_COLUMNS = [f.name for f in fields(MeasurementRecord)]
_JSON_COLUMNS = ("config", "repeats_ms", "meta")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    device TEXT NOT NULL, subnet_id TEXT NOT NULL, target TEXT NOT NULL,
    tvm_version TEXT NOT NULL, kernel_db_hash TEXT NOT NULL,
    config TEXT NOT NULL, median_ms REAL NOT NULL, mean_ms REAL NOT NULL, std_ms REAL NOT NULL,
    iqr_ms REAL NOT NULL, min_ms REAL NOT NULL, repeats_ms TEXT NOT NULL,
    remeasured INTEGER NOT NULL, spread_ok INTEGER NOT NULL, measured_at REAL NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (device, subnet_id, target, tvm_version, kernel_db_hash)
)"""


class MeasurementStore:
    """SQLite-backed store of measurements; use as a context manager or call `close()`."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ writing
    def add(self, record: MeasurementRecord) -> None:
        """Store (or replace) one measurement and commit it now."""
        row = record.to_dict()
        values = [json.dumps(row[c]) if c in _JSON_COLUMNS else row[c] for c in _COLUMNS]
        with self._db:  # one transaction, committed on exit
            self._db.execute(f"INSERT OR REPLACE INTO measurements ({', '.join(_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(_COLUMNS))})", values)

    # ------------------------------------------------------------------ reading
    def get(self, device: str, subnet_id: str, target: str, tvm_version: str,
            kernel_db_hash: str) -> MeasurementRecord | None:
        """The stored measurement with exactly this key, or None."""
        rows = self._select("WHERE device=? AND subnet_id=? AND target=? AND tvm_version=? AND kernel_db_hash=?",
                            (device, subnet_id, target, tvm_version, kernel_db_hash))
        return next(rows, None)

    def has(self, key: RecordKey) -> bool:
        return self.get(*key) is not None

    def records(self, device: str | None = None) -> list[MeasurementRecord]:
        """All measurements (of one device if given), oldest first."""
        if device is None:
            return list(self._select("", ()))
        return list(self._select("WHERE device=?", (device,)))

    def reference_times(self, device: str, reference_id: str) -> list[float]:
        """The `reference_ms` of every row of `device` timed beside `reference_id` (one
        query, no record parsed: the measurement layer asks before every batch)."""
        rows = self._db.execute("SELECT json_extract(meta, '$.reference_ms') FROM measurements WHERE device=? "
                                "AND json_extract(meta, '$.reference_id')=? AND json_extract(meta, '$.reference_ms') "
                                "IS NOT NULL", (device, reference_id))
        return [float(ms) for (ms,) in rows]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]

    def _select(self, where: str, params: tuple) -> Iterator[MeasurementRecord]:
        cursor = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM measurements {where} ORDER BY measured_at",
                                  params)
        for row in cursor:
            raw = dict(zip(_COLUMNS, row))
            for c in _JSON_COLUMNS:
                raw[c] = json.loads(raw[c])
            raw["repeats_ms"] = tuple(raw["repeats_ms"])
            raw["remeasured"], raw["spread_ok"] = bool(raw["remeasured"]), bool(raw["spread_ok"])
            yield MeasurementRecord(**raw)

    # ------------------------------------------------------------------ export
    def export(self, path: str | os.PathLike, fmt: str, device: str | None = None) -> int:
        """Write the records as CSV (nested fields JSON-encoded) or a JSON list; returns the count."""
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"export format must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
        records = [r.to_dict() for r in self.records(device)]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            if fmt == "json":
                json.dump(records, fh, indent=1)
            else:
                writer = csv.DictWriter(fh, fieldnames=_COLUMNS)
                writer.writeheader()
                for rec in records:
                    writer.writerow({k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in rec.items()})
        return len(records)
