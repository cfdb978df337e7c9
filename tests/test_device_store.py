"""The SQLite measurement store: rows committed as they come, keyed lookups, export."""
from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.device.measure import Measurement
from pipeline.device.store import MeasurementRecord, MeasurementStore, RecordKey, default_store_path
from pipeline.errors import ConfigError


def _record(subnet: str, median: float, device: str = "x86-host", kdb: str = "none") -> MeasurementRecord:
    m = Measurement.from_repeats([median * 0.98, median, median * 1.03], number=1, attempts=1, max_spread=0.1)
    key = RecordKey(device, subnet, '{"kind":"llvm"}', "0.27.0.post1", kdb)
    return MeasurementRecord.from_measurement(key, {"resolution": 192}, m, meta={"lib": f"{subnet}.so"})


def test_rows_are_committed_as_added(tmp_path: Path):
    path = tmp_path / "m.sqlite"
    store = MeasurementStore(path)
    store.add(_record("a", 2.0))
    # Another connection (as another process would) sees the row while the writer is still open.
    other = sqlite3.connect(path)
    assert other.execute("SELECT subnet_id, median_ms FROM measurements").fetchall() == [("a", 2.0)]
    other.close()
    store.close()


def test_get_records_and_keys(tmp_path: Path):
    with MeasurementStore(tmp_path / "m.sqlite") as store:
        rec = _record("a", 2.0)
        store.add(rec)
        store.add(_record("a", 2.5, kdb="tuned"))  # same subnet, other kernel db: another row
        store.add(_record("b", 3.0, device="rpi4"))
        store.add(_record("a", 1.5))  # same key: replaces
        assert len(store) == 3
        got = store.get(*rec.key)
        assert got is not None and got.median_ms == 1.5 and got.repeats_ms == pytest.approx((1.47, 1.5, 1.545))
        assert got.config == {"resolution": 192} and got.meta == {"lib": "a.so"}
        assert store.has(rec.key) and not store.has(rec.key._replace(tvm_version="0.28"))
        assert {r.subnet_id for r in store.records(device="x86-host")} == {"a"}
        assert len(store.records()) == 3


def test_export_csv_and_json(tmp_path: Path):
    with MeasurementStore(tmp_path / "m.sqlite") as store:
        store.add(_record("a", 2.0))
        store.add(_record("b", 3.0))
        assert store.export(tmp_path / "out.json", "json") == 2
        assert store.export(tmp_path / "out.csv", "csv") == 2
        with pytest.raises(ConfigError, match="csv"):
            store.export(tmp_path / "out.xml", "xml")
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [r["subnet_id"] for r in rows] == ["a", "b"] and rows[1]["repeats_ms"][1] == 3.0
    with (tmp_path / "out.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert float(table[0]["median_ms"]) == 2.0 and json.loads(table[0]["repeats_ms"])[1] == 2.0


def test_default_path_follows_cache(pipeline_cache: Path):
    assert default_store_path() == pipeline_cache / "measurements.sqlite"
