"""Where a device's tuning records live and how they are opened and fingerprinted.

One MetaSchedule JSON database per device in `kernels/<device>/` (records are looked up
by workload only, never by target, so two devices must never share a database).
The fingerprint goes into artifact manifests and the compile cache key: retuning a
device changes every artifact built for it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.paths import kernels_dir

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
_LOWERING_SOURCES = ("lower.py", "schedules.py")


def device_kernel_dir(device_name: str) -> Path:
    """Folder of `device_name`'s tuning database (may not exist yet)."""
    return kernels_dir() / device_name


def has_database(device_name: str) -> bool:
    """True when the device has a workload table and a record table on disk."""
    folder = device_kernel_dir(device_name)
    return (folder / WORKLOAD_FILE).is_file() and (folder / RECORD_FILE).is_file()


def open_database(folder: Path):
    """The MetaSchedule JSON database in `folder`, created empty when missing.

    Records are appended to the files as tuning produces them, so the same call resumes
    an interrupted tuning run.
    """
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    folder.mkdir(parents=True, exist_ok=True)
    return JSONDatabase(str(folder / WORKLOAD_FILE), str(folder / RECORD_FILE), allow_missing=True)


def lowering_fingerprint() -> str:
    """SHA-256 of the lowering and schedule-library source: what kernels come out of a
    compile depends on it as much as on the database."""
    digest = hashlib.sha256()
    for name in _LOWERING_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def kernel_db_hash(device_name: str) -> str | None:
    """SHA-256 over the lowering code and the device's workload and record tables.

    Changes whenever retuning or a schedule-library change can change compiled kernels
    (compile cache key, manifest). Never None: a device without a database still gets
    library schedules, whose version this hash carries."""
    digest = hashlib.sha256(lowering_fingerprint().encode())
    if has_database(device_name):
        folder = device_kernel_dir(device_name)
        for name in (WORKLOAD_FILE, RECORD_FILE):
            digest.update(name.encode())
            digest.update((folder / name).read_bytes())
    return digest.hexdigest()
