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


def kernel_db_hash(device_name: str) -> str | None:
    """SHA-256 over the device's workload and record tables, or None if it has none."""
    if not has_database(device_name):
        return None
    folder = device_kernel_dir(device_name)
    digest = hashlib.sha256()
    for name in (WORKLOAD_FILE, RECORD_FILE):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()
