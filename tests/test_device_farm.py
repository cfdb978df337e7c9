"""Batches of measurements (`pipeline.measure`): a tracker with two servers in parallel, resumable runs into the store."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.device import MeasurePolicy
from pipeline.device.check import build_tiny, tiny_inputs
from pipeline.device.profile import TrackerConnection
from pipeline.device.store import MeasurementStore, RecordKey
from pipeline.errors import DeviceError
from pipeline.measure import MeasureJob, Reference, measure_batch

from conftest import kill_once_stored, running_farm


def _jobs(profile, lib: Path, n: int) -> list[MeasureJob]:
    return [MeasureJob(RecordKey(profile.name, f"subnet{i}", str(profile.tvm_target()), "0.27", "none"),
                       {"resolution": 160 + 32 * i}, lib, tiny_inputs(i), profile.policy) for i in range(n)]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory):
    """A tracker and two RPC servers registered under key `farm`; yields (profile, server logs)."""
    with running_farm(tmp_path_factory.mktemp("farm"), key="farm", servers=2) as started:
        yield started


def test_tracker_spreads_jobs_over_both_servers(farm, tmp_path: Path):
    profile, logs = farm
    profile = replace(profile, policy=MeasurePolicy(repeat=3, min_repeat_ms=100, max_spread=10.0))
    lib = build_tiny(profile, tmp_path / "tiny.so")
    jobs = _jobs(profile, lib, 6)
    reference = Reference("tiny", lib, tiny_inputs(99))
    with MeasurementStore(tmp_path / "m.sqlite") as store:
        results = list(measure_batch(profile, jobs, store, reference, progress=False))
        assert sorted(r.job.key.subnet_id for r in results) == sorted(j.key.subnet_id for j in jobs)
        records = store.records()
        assert len({r.meta["worker"] for r in records}) == 2
        # every row carries the reference timed beside it, on the server that ran it
        assert all(r.meta["reference_id"] == "tiny" and r.meta["reference_ms"] > 0 for r in records)
        assert list(measure_batch(profile, jobs, store, reference, progress=False)) == []  # all stored: skipped
        assert len(store) == 6
    for log in logs:  # each real server loaded and ran modules
        assert "load_module" in log.read_text()


def test_tracker_without_servers_under_key_says_so(farm, tmp_path: Path):
    profile, _ = farm
    lonely = profile.with_connection(TrackerConnection(profile.connection.host, profile.connection.port, "nobody"))
    with pytest.raises(DeviceError, match="no RPC server is registered under key 'nobody'"):
        list(measure_batch(lonely, _jobs(lonely, tmp_path / "x.so", 1)))


_RUN = """
import sys
from pathlib import Path
from dataclasses import replace
from pipeline.device import MeasurePolicy, load_profile
from pipeline.device.check import build_tiny, tiny_inputs
from pipeline.device.store import MeasurementStore, RecordKey
from pipeline.measure import MeasureJob, Reference, measure_batch
tmp = Path(sys.argv[1])
profile = replace(load_profile("x86-host"), policy=MeasurePolicy(repeat=2, min_repeat_ms=150, max_spread=10.0))
lib = build_tiny(profile, tmp / "tiny.so")
jobs = [MeasureJob(RecordKey("x86-host", f"s{i}", "t", "v", "k"), {}, lib, tiny_inputs(i), profile.policy)
        for i in range(8)]
with MeasurementStore(tmp / "m.sqlite") as store:
    for _ in measure_batch(profile, jobs, store, Reference("tiny", lib, tiny_inputs(0)), progress=False):
        pass
"""


def test_kill_9_mid_run_keeps_finished_rows_and_rerun_completes(tmp_path: Path):
    store_path = tmp_path / "m.sqlite"
    cmd = [sys.executable, "-c", _RUN, str(tmp_path)]
    kill_once_stored(subprocess.Popen(cmd, env={**os.environ, "PIPELINE_CACHE": str(tmp_path / "cache")}),
                     store_path, rows=2, timeout_s=120)
    with MeasurementStore(store_path) as store:
        survived = len(store)
        assert 2 <= survived < 8, survived
        assert all(len(r.repeats_ms) == 2 for r in store.records())
    subprocess.run(cmd, check=True, env={**os.environ, "PIPELINE_CACHE": str(tmp_path / "cache")})
    with MeasurementStore(store_path) as store:
        assert sorted(r.subnet_id for r in store.records()) == [f"s{i}" for i in range(8)]


def test_a_dropped_session_is_reopened_and_the_batch_goes_on(local_rpc_server, tmp_path: Path, caplog):
    """The server child serving our session dies (kill -9) before the batch: the first job
    meets the dead session, the batch reconnects, and every job is measured and stored."""
    import psutil

    from pipeline.device import open_session
    from pipeline.device.rpcserver import SERVER_SCRIPT

    profile = replace(local_rpc_server, policy=MeasurePolicy(repeat=2, min_repeat_ms=50, max_spread=10.0))
    lib = build_tiny(profile, tmp_path / "tiny.so")
    jobs = _jobs(profile, lib, 3)
    servers = [p for p in psutil.process_iter(["cmdline"])
               if {SERVER_SCRIPT, str(profile.connection.port)} <= set(p.info["cmdline"] or [])]
    assert len(servers) == 1
    before = {p.pid for p in servers[0].children(recursive=True)}
    with MeasurementStore(tmp_path / "m.sqlite") as store, open_session(profile) as session:
        session.info()
        (serving,) = [p for p in servers[0].children(recursive=True) if p.pid not in before]
        serving.kill()
        serving.wait(10)
        with caplog.at_level("WARNING"):
            results = list(measure_batch(profile, jobs, store, Reference("tiny", lib, tiny_inputs(9)),
                                         session=session, progress=False))
        assert [r.error for r in results] == [None] * 3
        assert len(store) == 3
        session.info()  # the caller's session object works again too
    assert "was dropped; reconnected" in caplog.text
