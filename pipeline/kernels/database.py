"""Where a device's tuning records live, how they are opened, published and fingerprinted.

One MetaSchedule JSON database per device (records are looked up by workload only, never
by target, so two devices must never share one). The committed form is
`kernels/<device>/database_{workload,tuning_record}.json.xz`: MetaSchedule's JSON
workload table repeats whole TensorIR functions (51 MB for the demo space's 500 tasks),
xz brings it to a few hundred KB. MetaSchedule reads and appends plain files, so:
- compiles read an unpacked copy under `cache_dir()/kernels/db/<device>-<hash>/`
  (content-addressed: never written to, safe while a tuning run is going);
- tuning appends to `cache_dir()/kernels/tuning/<device>-<cpu>/` and publishes (packs) it back
  into `kernels/<device>/` after every task, so a killed run loses at most one task.
The fingerprint (`kernel_db_hash`) goes into artifact manifests and the compile cache key.

Records are looked up by workload only, and a record's speed holds only on the CPU it was
measured on (a tile tuned for AVX-512 spills registers on AVX2). So a database states the
CPU it was tuned on (`tuned-on.json`: LLVM architecture, -mcpu and the CPU feature set
LLVM reports for the target), and a compile applies it only to a target with the same;
elsewhere the library schedules are used and the coverage says why.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import lzma
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.atomic import write_bytes, write_text
from pipeline.paths import cache_dir, kernel_dirs, kernels_dir

if TYPE_CHECKING:
    from tvm.target import Target

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
TABLES = (WORKLOAD_FILE, RECORD_FILE)
PACKED_SUFFIX = ".xz"
_STAMP = "published-from"
TUNED_ON_FILE = "tuned-on.json"
_LOWERING_SOURCES = ("fuse.py", "lower.py", "pad.py", "prefetch.py", "schedules.py", "tiles.py")


def device_kernel_dir(device_name: str) -> Path:
    """Folder of `device_name`'s committed (packed) tuning database: the first of
    `kernel_dirs()` that holds both tables, else where tuning would publish it."""
    return next((d / device_name for d in kernel_dirs() if _has_tables(d / device_name)), kernels_dir() / device_name)


def _has_tables(folder: Path) -> bool:
    return all((folder / (t + PACKED_SUFFIX)).is_file() for t in TABLES)


def has_database(device_name: str) -> bool:
    """True when the device has both packed tables."""
    return _has_tables(device_kernel_dir(device_name))


@dataclass(frozen=True)
class TunedOn:
    """The CPU a database's records were measured on, as LLVM names it."""

    arch: str  # first part of the LLVM triple (x86_64, aarch64)
    mcpu: str  # LLVM -mcpu ("" when the target names none: the architecture's generic CPU)
    features: tuple[str, ...]  # LLVM's CPU feature set for the target (avx2, avx512f, neon, ...)

    @classmethod
    def of(cls, target: "Target") -> "TunedOn":
        from tvm.target import codegen

        triple = str(target.attrs.get("mtriple") or codegen.llvm_get_system_triple())
        features = codegen.llvm_get_cpu_features(target)
        return cls(triple.split("-")[0], str(target.attrs.get("mcpu") or ""), tuple(sorted(str(f) for f in features)))

    @classmethod
    def read(cls, device_name: str) -> "TunedOn | None":
        """The committed database's stamp (None: the database states no CPU)."""
        path = device_kernel_dir(device_name) / TUNED_ON_FILE
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, raw: dict) -> "TunedOn":
        return cls(str(raw["arch"]), str(raw["mcpu"]), tuple(str(f) for f in raw["features"]))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "mcpu": self.mcpu, "features": list(self.features)}

    def write(self, folder: Path) -> None:
        write_text(folder / TUNED_ON_FILE, json.dumps(self.to_dict(), indent=1) + "\n")

    def describe(self) -> str:
        """Short form for logs: `x86_64 znver5 (avx512f)`."""
        widest = next((f for f in ("avx512f", "avx2", "avx", "sve", "neon") if f in self.features), "no SIMD")
        return f"{self.arch} {self.mcpu or 'generic'} ({widest})"


def database_status(device_name: str, target: "Target") -> tuple[bool, str]:
    """Whether the device's committed database applies to `target`, and a line saying so.

    It applies only when it was tuned on the same architecture, -mcpu and feature set."""
    if not has_database(device_name):
        return False, "no tuning database"
    here = TunedOn.of(target)
    tuned_on = TunedOn.read(device_name)
    if tuned_on is None:
        return False, (f"database not applied: it states no CPU it was tuned on ({TUNED_ON_FILE}); "
                       f"retune with `pipeline kernels tune --device {device_name}`")
    if tuned_on != here:
        return False, (f"database not applied: tuned on {tuned_on.describe()}, this target is {here.describe()}; "
                       f"library schedules used (retune with `pipeline kernels tune --device {device_name}`)")
    return True, f"database tuned on {here.describe()} (this CPU)"


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
    if (folder / TUNED_ON_FILE).is_file():
        digest.update((folder / TUNED_ON_FILE).read_bytes())
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


def open_device_database(device_name: str, target: "Target"):
    """The device's committed database for reading (None when it has none, or when it
    was tuned on another CPU than `target`'s: see `database_status`).

    Opened once per process and content (MetaSchedule parses every workload's TensorIR
    when it opens a JSON database: ~5 s for the demo space's 500 workloads, which was
    half of every compile); a republished database has another hash, so is opened anew."""
    if not database_status(device_name, target)[0]:
        return None
    return _open_unpacked(device_name, _packed_hash(device_name), str(cache_dir()))


@functools.lru_cache(maxsize=4)
def _open_unpacked(device_name: str, digest: str, cache_root: str):
    folder = Path(cache_root) / "kernels" / "db" / f"{device_name}-{digest[:16]}"
    if not (folder / _STAMP).is_file():
        _unpack(device_name, folder)
    return open_database(folder)


def tuning_dir(device_name: str, target: "Target") -> Path:
    """Working copy a tuning run for `target` appends to; (re)filled from the committed
    tables when they changed since it was last published (e.g. a newer database was
    pulled) and were tuned on this CPU. A database of another CPU is not extended (its
    records would be mixed with this one's): tuning starts empty and replaces it."""
    folder = cache_dir() / "kernels" / "tuning" / f"{device_name}-{_cpu_key(target)}"
    stamp = folder / _STAMP
    committed = _packed_hash(device_name) if database_status(device_name, target)[0] else None
    current = stamp.read_text() if stamp.is_file() else None
    if committed is not None and committed != current:
        _unpack(device_name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cpu_key(target: "Target") -> str:
    return hashlib.sha256(repr(TunedOn.of(target)).encode()).hexdigest()[:12]


def publish(device_name: str, working: Path, target: "Target") -> None:
    """Pack the working tables into `kernels/<device>/` (atomic per file), stamped with
    the CPU of `target` they were measured on. They go to the writable `kernels_dir()`,
    which shadows the built-in databases."""
    dest = kernels_dir() / device_name
    dest.mkdir(parents=True, exist_ok=True)
    TunedOn.of(target).write(dest)
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


def kernel_db_hash(device_name: str, target: "Target") -> str:
    """SHA-256 over the lowering code and the device's packed database and measured tiles
    when they apply to `target` (`database_status`, `tiles.load_tiles`).

    Changes whenever retuning or a schedule-library change can change compiled kernels
    (compile cache key, manifest); a database that is not applied changes nothing, so
    it is left out. Never None: a device without a database still gets library
    schedules, whose version this hash carries."""
    from pipeline.kernels.tiles import load_tiles, tiles_path

    digest = hashlib.sha256(lowering_fingerprint().encode())
    if database_status(device_name, target)[0]:
        digest.update(_packed_hash(device_name).encode())
    if load_tiles(device_name, target)[0] is not None:
        digest.update(tiles_path(device_name).read_bytes())
    return digest.hexdigest()
