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

import errno
import functools
import hashlib
import lzma
import shutil
import tempfile
from pathlib import Path

from pipeline.atomic import write_bytes, write_text
from pipeline.paths import cache_dir, kernels_dir

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
TABLES = (WORKLOAD_FILE, RECORD_FILE)
PACKED_SUFFIX = ".xz"
_STAMP = "published-from"
_LOWERING_SOURCES = ("lower.py", "pad.py", "schedules.py")


def device_kernel_dir(device_name: str) -> Path:
    """Folder of `device_name`'s committed (packed) tuning database (may not exist yet)."""
    return kernels_dir() / device_name


def has_database(device_name: str) -> bool:
    """True when the device has both packed tables."""
    folder = device_kernel_dir(device_name)
    return all((folder / (t + PACKED_SUFFIX)).is_file() for t in TABLES)


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
    """Decompress the committed tables into `dest` (atomically: a private temp dir then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        for table in TABLES:
            packed = (device_kernel_dir(device_name) / (table + PACKED_SUFFIX)).read_bytes()
            (tmp / table).write_bytes(lzma.decompress(packed))
        (tmp / _STAMP).write_text(_packed_hash(device_name))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # else: another process unpacked first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    """Pack the working tables into `kernels/<device>/` (atomic per file)."""
    dest = device_kernel_dir(device_name)
    dest.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        source = working / table
        data = source.read_bytes() if source.is_file() else b""
        write_bytes(dest / (table + PACKED_SUFFIX), lzma.compress(data, preset=6))
    write_text(working / _STAMP, _packed_hash(device_name))


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
