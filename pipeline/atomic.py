"""Replacing and creating files so that no reader ever sees a torn or half-written one.

Every file the pipeline replaces (checkpoints, training state, predictors, kernel plans
and databases, manifests, build summaries, reports, benchmark results) goes through
`atomic_path`: the content is written to a temporary file with a unique name in the same
folder (so two writers never share it, and the rename stays on one file system), flushed
to disk, then renamed over the target. A kill at any moment leaves the old file or the
new one. `create_new` publishes a file only where none exists yet, which is how
concurrent writers allocate distinct names (predictor revisions) without a lock.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

#: Permissions of a published file (mkstemp's 0600 would hide artifacts from their users).
FILE_MODE = 0o644


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A fresh, uniquely named temporary file next to `path`, removed unless moved away.

    Its name ends in `path`'s suffix, for writers that pick a format by extension
    (`export_library`, PIL). The caller writes it; `_fsync` makes it durable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """fsync a file or folder: the written file first, so the rename never publishes a
    name without its data; then its folder, so the rename itself survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces `path` atomically.

    On an exception the temporary file is removed and `path` is left as it was. The
    rename alone makes the replacement atomic for readers and against a killed process;
    `durable` also flushes file and folder to disk (against a power cut), at ~8 ms a file
    here: files that are cheap to regenerate in bulk (the synthetic images) skip it.
    """
    path = Path(path)
    with _staged(path) as tmp:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    if durable:
        _fsync(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace `path` with `data` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace `path` with `text` (UTF-8) atomically."""
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, data: Any, **dump_options: Any) -> Path:
    """Replace `path` with `data` as JSON atomically (`dump_options` go to `json.dumps`)."""
    return write_text(path, json.dumps(data, **dump_options) + "\n")


def create_new(path: str | os.PathLike, data: bytes) -> bool:
    """Publish `data` at `path` only if no file is there; False if one is (nothing written).

    The complete file appears at once (a hard link of a flushed temporary file, which
    fails if the name is taken), so of several concurrent writers exactly one gets each
    name and a reader never sees a partial file.
    """
    path = Path(path)
    with _staged(path) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, FILE_MODE)
        _fsync(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    _fsync(path.parent)
    return True


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """`dst` made a hard link of `src`, or a copy where a link cannot be made (another
    file system, a file system without links, the link limit reached).

    For files that are never changed in place once written (compile-cache entries are
    published by rename and only ever replaced whole): a full-space library weighs
    35-95 MB, and a copy per artifact folder and per loader had the suite's runs filling
    the disk. `dst` must not exist.
    """
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)
    return Path(dst)
