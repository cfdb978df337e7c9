"""Shared pytest fixtures: temporary cache, live devices (local RPC server, emulated arm64).

Device fixtures start real processes on 127.0.0.1 with ports picked at run time and stop
them when their scope ends. The emulated arm64 root file system is cached under
`<repo>/.cache/devices` on purpose (several minutes to build, reused by later runs).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.device import load_profile
from pipeline.measure import tracker_servers
from pipeline.device.profile import RPCConnection, TrackerConnection
from pipeline.device.rpcserver import start_rpc_farm, start_rpc_server
from pipeline.paths import REPO_ROOT


#: The AttentiveNAS reference data (../shared beside the repo; `PIPELINE_REFERENCE_DIR`
#: points elsewhere): read by the tests that check the official formats, never copied in.
REFERENCE_DIR = Path(os.environ.get("PIPELINE_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared"))


def _free_disk() -> str:
    """Free space where the suite writes (its temporary folders, the repo's cache)."""
    import shutil
    import tempfile

    return ", ".join(f"{shutil.disk_usage(where).free / 2**30:.1f} GiB free in {where}"
                     for where in (tempfile.gettempdir(), REPO_ROOT))


def pytest_report_header() -> str:
    # A full disk fails the tests that write (the full-space ones write ~2 GB) in ways that
    # look like anything but a full disk: the header and the summary say how much there was.
    return f"disk: {_free_disk()}"


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(f"disk at the end: {_free_disk()}")


def in_ci() -> bool:
    """CI services set CI=true; there a missing reference file is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def reference_file(relative: str) -> Path:
    """A file of the reference data. Absent, the test fails under CI (which must check the
    official formats, not pass without them) and is skipped with the reason elsewhere."""
    path = REFERENCE_DIR / relative
    if not path.is_file():
        problem = f"{path} (AttentiveNAS reference data) is absent"
        if in_ci():
            pytest.fail(f"{problem}; CI must provide it (../shared beside the repo, or PIPELINE_REFERENCE_DIR)",
                        pytrace=False)
        pytest.skip(problem)
    return path


def kill_once_stored(proc, store_path: Path, rows: int, timeout_s: float = 300.0) -> None:
    """Kill `proc` with -9 as soon as the measurement store at `store_path` holds `rows` rows
    (or it ended, or `timeout_s` passed): a crash right after a commit, for resume tests."""
    import signal
    import time

    from pipeline.device import MeasurementStore

    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if store_path.exists():
                with MeasurementStore(store_path) as store:
                    if len(store) >= rows:
                        break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_farm(folder: Path, key: str, servers: int) -> Iterator[tuple[object, list[Path]]]:
    """A TVM tracker with `servers` RPC servers under `key`, all registered; yields the
    x86-host profile pointed at the tracker and the servers' log files, stops them after."""
    tracker, started = start_rpc_farm(folder, key=key, servers=servers)
    try:
        conn = TrackerConnection("127.0.0.1", tracker.port, key, timeout_s=30.0)
        deadline = time.monotonic() + 30
        while tracker_servers(conn) < servers and time.monotonic() < deadline:  # registration follows "bind to"
            time.sleep(0.2)
        yield load_profile("x86-host").with_connection(conn), [s.log_path for s in started]
    finally:
        for s in started:
            s.stop()
        tracker.stop()


def assert_seeded_and_tuned(outcome, folder: Path, task) -> list:
    """One task tuned on a device into `folder`: its library schedule was measured and
    committed first, MetaSchedule appended trials, and every record holds real device
    times (a failed build or run is committed with no or huge run_secs). Returns them."""
    from pipeline.kernels.database import open_database
    from pipeline.kernels.tune import _records

    assert outcome.library_us and outcome.library_us > 0
    assert outcome.trials_after > outcome.trials_before == 1
    records = _records(open_database(folder), task)
    assert all(r.run_secs and 0 < max(float(s) for s in r.run_secs) < 1.0 for r in records)
    return records


@pytest.fixture
def pipeline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points `PIPELINE_CACHE` (generated state) at a fresh temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PIPELINE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def local_rpc_server(tmp_path_factory: pytest.TempPathFactory):
    """The x86-host profile pointed at a TVM RPC server on 127.0.0.1 (free port), stopped at session end."""
    server = start_rpc_server(tmp_path_factory.mktemp("rpc") / "server.log")
    try:
        yield load_profile("x86-host").with_connection(
            RPCConnection(host=server.host, port=server.port, timeout_s=30.0))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def emulated_arm64():
    """The arm64-emulated profile pointed at its own emulated RPC server (free port).

    The root file system is built once into `<repo>/.cache/devices` (minutes) and reused by
    later runs; the server started here is stopped when the test session ends.
    """
    from dataclasses import replace

    from pipeline.device.emulated import EmulatedDevice
    from pipeline.device.rpcserver import free_port

    profile = load_profile("arm64-emulated")
    device = EmulatedDevice(profile, base_dir=REPO_ROOT / ".cache" / "devices")
    state, _ = device.up(port=free_port())
    try:
        yield profile.with_connection(replace(profile.connection, port=state.port))
    finally:
        device.down(port=state.port)
