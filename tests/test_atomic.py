"""Atomic file replacement and exclusive creation (`pipeline.atomic`), with real processes."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from pipeline.atomic import atomic_path, create_new, link_or_copy, write_json, write_text

ROUNDS = 200


def test_replace_publishes_whole_files_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "result.json"
    write_json(target, {"a": 1}, indent=1)
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's private 0600
    write_text(target, "second")
    assert target.read_text() == "second"
    with atomic_path(target, durable=False) as tmp:  # rename only, no fsync: still whole, still 0644
        tmp.write_text("third")
    assert target.read_text() == "third" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.so"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="compiler died"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".so")  # writers that go by suffix
            tmp.write_text("half")
            raise RuntimeError("compiler died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.so"]


def test_create_new_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "r0001.json"
    assert create_new(target, b"first")
    assert not create_new(target, b"second")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["r0001.json"]


def _replace_many(target: str, writer: int, start) -> None:
    start.wait()
    for i in range(ROUNDS):
        write_json(target, {"writer": writer, "i": i, "pad": "x" * 20_000})


def _create_many(folder: str, writer: int, start, won) -> None:
    start.wait()
    for i in range(ROUNDS):
        if create_new(Path(folder) / f"{i}.txt", str(writer).encode()):
            won.put((writer, i))


def test_concurrent_writers_of_one_file_never_collide_or_tear_it(tmp_path: Path) -> None:
    """Two processes replace one file 200 times each while this one reads it: every read
    is a whole JSON document (a fixed temporary name made one writer's rename fail or
    publish the other's half-written file)."""
    ctx = multiprocessing.get_context("spawn")
    target = tmp_path / "shared.json"
    write_json(target, {"writer": -1, "i": -1, "pad": ""})
    start = ctx.Barrier(3)
    writers = [ctx.Process(target=_replace_many, args=(str(target), w, start)) for w in (0, 1)]
    for p in writers:
        p.start()
    start.wait()
    reads = 0
    while any(p.is_alive() for p in writers):
        assert json.loads(target.read_text())["writer"] in (-1, 0, 1)
        reads += 1
    for p in writers:
        p.join()
        assert p.exitcode == 0
    assert json.loads(target.read_text())["i"] == ROUNDS - 1 and reads > 0
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_concurrent_creators_get_each_name_exactly_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, won = ctx.Barrier(2), ctx.Queue()
    creators = [ctx.Process(target=_create_many, args=(str(tmp_path), w, start, won)) for w in (0, 1)]
    for p in creators:
        p.start()
    wins = [won.get(timeout=60) for _ in range(ROUNDS)]
    for p in creators:
        p.join()
        assert p.exitcode == 0
    assert won.empty() and sorted(i for _, i in wins) == list(range(ROUNDS))
    for writer, i in wins:  # the file holds what its one winner wrote
        assert (tmp_path / f"{i}.txt").read_text() == str(writer)
    assert len(list(tmp_path.iterdir())) == ROUNDS


def test_link_or_copy_shares_the_file_or_copies_across_file_systems(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "model.so"
    src.write_bytes(b"library bytes")
    linked = link_or_copy(src, tmp_path / "a.so")
    assert linked.read_bytes() == b"library bytes" and linked.stat().st_ino == src.stat().st_ino

    def fails_with(code: int):
        def link(*_args: object) -> None:
            raise OSError(code, os.strerror(code))
        return link

    monkeypatch.setattr(os, "link", fails_with(errno.EXDEV))
    copied = link_or_copy(src, tmp_path / "b.so")
    assert copied.read_bytes() == b"library bytes" and copied.stat().st_ino != src.stat().st_ino
    monkeypatch.setattr(os, "link", fails_with(errno.ENOSPC))
    with pytest.raises(OSError, match="No space"):  # other errors are not papered over with a copy
        link_or_copy(src, tmp_path / "c.so")
