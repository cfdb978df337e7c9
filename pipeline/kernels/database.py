"""Where a device's tuning records live, how they are opened, published and fingerprinted.

One MetaSchedule JSON database per device (records are looked up by workload only, never
by target, so two devices must never share one). The committed form is
`kernels/<device>/database_{workload,tuning_record}.json.xz`: MetaSchedule's JSON
workload table repeats whole TensorIR functions (51 MB for the demo space's 500 tasks),
xz brings it to a few hundred KB. MetaSchedule reads and appends plain files, so:
- compiles read an unpacked copy under `cache_dir()/kernels/db/<device>-<hash>/`
  (content-addressed: never written to, safe while a tuning run is going);
- tuning appends to `cache_dir()/kernels/tuning/<device>/` and publishes (packs) it back
  into `kernels/<device>/` after every task, so a killed run loses at most one task.
The fingerprint (`kernel_db_hash`) goes into artifact manifests and the compile cache key.
"""
from __future__ import annotations

import functools
import hashlib
import lzma
import os
import shutil
from pathlib import Path

from pipeline.paths import cache_dir, kernel_dirs, kernels_dir

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
TABLES = (WORKLOAD_FILE, RECORD_FILE)
PACKED_SUFFIX = ".xz"
_STAMP = "published-from"
_LOWERING_SOURCES = ("lower.py", "pad.py", "schedules.py")


def device_kernel_dir(device_name: str) -> Path:
    """Folder of `device_name`'s committed (packed) tuning database: the first of
    `kernel_dirs()` that holds both tables, else where tuning would publish it."""
    return next((d / device_name for d in kernel_dirs() if _has_tables(d / device_name)), kernels_dir() / device_name)


def _has_tables(folder: Path) -> bool:
    return all((folder / (t + PACKED_SUFFIX)).is_file() for t in TABLES)


def has_database(device_name: str) -> bool:
    """True when the device has both packed tables."""
    return _has_tables(device_kernel_dir(device_name))


def open_database(folder: Path):
    """The plain MetaSchedule JSON database in `folder`, created empty when missing.

    Records are appended to the files as tuning produces them, so the same call resumes
    an interrupted tuning run."""
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    folder.mkdir(parents=True, exist_ok=True)
    return JSONDatabase(str(folder / WORKLOAD_FILE), str(folder / RECORD_FILE), allow_missing=True)


def _packed_hash(device_name: str) -> str:
    folder = device_kernel_dir(device_name)
    digest = hashlib.sha256()
    for table in TABLES:
        digest.update((folder / (table + PACKED_SUFFIX)).read_bytes())
    return digest.hexdigest()


def _unpack(device_name: str, dest: Path) -> None:
    """Decompress the committed tables into `dest` (atomically: a temp dir then rename)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for table in TABLES:
        (tmp / table).write_bytes(lzma.decompress((device_kernel_dir(device_name) / (table + PACKED_SUFFIX)).read_bytes()))
    (tmp / _STAMP).write_text(_packed_hash(device_name))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def open_device_database(device_name: str):
    """The device's committed database for reading (None when it has none).

    Opened once per process and content (MetaSchedule parses every workload's TensorIR
    when it opens a JSON database: ~5 s for the demo space's 500 workloads, which was
    half of every compile); a republished database has another hash, so is opened anew."""
    if not has_database(device_name):
        return None
    return _open_unpacked(device_name, _packed_hash(device_name), str(cache_dir()))


@functools.lru_cache(maxsize=4)
def _open_unpacked(device_name: str, digest: str, cache_root: str):
    folder = Path(cache_root) / "kernels" / "db" / f"{device_name}-{digest[:16]}"
    if not (folder / _STAMP).is_file():
        _unpack(device_name, folder)
    return open_database(folder)


def tuning_dir(device_name: str) -> Path:
    """Working copy a tuning run appends to; (re)filled from the committed tables when
    they changed since it was last published (e.g. a newer database was pulled)."""
    folder = cache_dir() / "kernels" / "tuning" / device_name
    stamp = folder / _STAMP
    committed = _packed_hash(device_name) if has_database(device_name) else None
    current = stamp.read_text() if stamp.is_file() else None
    if committed is not None and committed != current:
        _unpack(device_name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def publish(device_name: str, working: Path) -> None:
    """Pack the working tables into `kernels_dir()/<device>/` (atomic per file)."""
    dest = kernels_dir() / device_name
    dest.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        source = working / table
        data = source.read_bytes() if source.is_file() else b""
        tmp = dest / f".{table}{PACKED_SUFFIX}.tmp"
        tmp.write_bytes(lzma.compress(data, preset=6))
        tmp.replace(dest / (table + PACKED_SUFFIX))
    (working / _STAMP).write_text(_packed_hash(device_name))


def lowering_fingerprint() -> str:
    """SHA-256 of the lowering and schedule-library source: what kernels come out of a
    compile depends on it as much as on the database."""
    digest = hashlib.sha256()
    for name in _LOWERING_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def kernel_db_hash(device_name: str) -> str | None:
    """SHA-256 over the lowering code and the device's packed database.

    Changes whenever retuning or a schedule-library change can change compiled kernels
    (compile cache key, manifest). Never None: a device without a database still gets
    library schedules, whose version this hash carries."""
    digest = hashlib.sha256(lowering_fingerprint().encode())
    if has_database(device_name):
        digest.update(_packed_hash(device_name).encode())
    return digest.hexdigest()
