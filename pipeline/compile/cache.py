"""Content-addressed compile cache under `cache_dir()/compile`.

A compiled library depends on the subnet (config, space, and the weights, which are
bound into the code), on the target, on the TVM version, on the device's tuning
database, on this package's version and on the code that turns a config into a
library (model structure, export, lowering and schedules: a fix there must not be
masked by an old entry while the version number stays put). The SHA-256 of exactly
those is the key, so any change misses and nothing stale is ever reused. Entries are built in a temporary
folder and renamed into place: a crash or two concurrent writers never leave half an
entry.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.paths import PACKAGE_DIR, cache_dir

ENTRY_FILE = "entry.json"
#: A staging folder untouched this long belongs to a run that was killed.
STALE_SECONDS = 24 * 3600
#: Packages whose code shapes a compiled library (beyond config, weights and target).
CODE_PACKAGES = ("space", "model", "compile", "kernels")
LIBRARY = "model.so"
ONNX = "model.onnx"
#: Mode of an entry's library and ONNX file.
READ_ONLY = 0o444


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of `module`'s state dict (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the sources of `CODE_PACKAGES` (what turns a config into a library)."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((PACKAGE_DIR / package).rglob("*.py")):
            digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything a compiled library depends on."""

    config: str           # canonical JSON of the subnet config
    space: str
    weights: str          # `weights_digest` of the static subnet
    target: str           # TVM target as TVM prints it (JSON)
    cross_compiler: str | None
    tvm_version: str
    kernel_db_hash: str | None
    pipeline_version: str
    code: str             # `code_digest()`
    onnx_opset: int

    @property
    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class CompileCache:
    """Folders `<root>/<aa>/<digest>/` holding `model.so`, `model.onnx` and `entry.json`."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "compile"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: CacheKey) -> Path:
        digest = key.digest
        return self.root / digest[:2] / digest

    def lookup(self, key: CacheKey) -> dict[str, Any] | None:
        """The stored entry (build facts such as kernel coverage) or None on a miss."""
        folder = self.path(key)
        try:
            entry = json.loads((folder / ENTRY_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not ((folder / LIBRARY).is_file() and (folder / ONNX).is_file()):
            return None
        return entry

    def staging(self) -> Path:
        """A fresh private folder on the cache's file system, to build an entry in.

        Folders a killed run left behind (older than `STALE_SECONDS`) are removed here.
        """
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in tmp.iterdir():
            try:
                if now - old.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # another process removed it first
                pass
        return Path(tempfile.mkdtemp(dir=tmp))

    def commit(self, key: CacheKey, staged: Path, entry: dict[str, Any]) -> Path:
        """Move a staged folder (with model.so and model.onnx) into place atomically.

        Its files are made read-only: artifact folders hard-link them (`link_or_copy`), so
        an in-place edit of an artifact's library would otherwise change the cache entry.
        """
        for name in (LIBRARY, ONNX):
            os.chmod(staged / name, READ_ONLY)
        (staged / ENTRY_FILE).write_text(json.dumps(entry, indent=2))
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and self.lookup(key) is None:
            shutil.rmtree(final)  # a broken entry (disk full, manual edits): replace it
        try:
            os.rename(staged, final)
        except OSError:
            # Another worker stored the same key first; its entry is equivalent.
            shutil.rmtree(staged, ignore_errors=True)
        return final
