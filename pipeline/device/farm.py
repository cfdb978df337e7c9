"""Measuring many modules at once across every server registered under a tracker key.

One worker thread per registered server: each asks the tracker for a session (the
tracker hands every request a different free server), then pulls jobs from a shared
queue until it is empty. Results are yielded as they complete, so the caller can store
each one at once. The timing loops run on the servers; the threads only wait on RPC.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from pipeline.device.measure import Measurement, measure
from pipeline.device.profile import DeviceProfile, TrackerConnection
from pipeline.device.session import call_with_timeout, open_session, probe
from pipeline.device.store import RecordKey
from pipeline.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeasureJob:
    """One library to time: where its result goes in the store and what to feed it."""

    key: RecordKey
    config: dict[str, Any]
    lib_path: Path
    inputs: dict[str, np.ndarray] = field(compare=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class JobResult:
    """A finished job: its measurement, or the error that stopped it; `worker` names who ran it."""

    job: MeasureJob
    worker: str
    measurement: Measurement | None = None
    error: str | None = None


_DONE = object()


def tracker_servers(conn: TrackerConnection) -> int:
    """How many servers are registered under the profile's key right now."""
    from tvm import rpc

    what = f"tracker {conn.host}:{conn.port}"
    probe(conn.host, conn.port, conn.timeout_s, what, "start `python -m tvm.exec.rpc_tracker` there or fix the profile")
    tracker = call_with_timeout(lambda: rpc.connect_tracker(conn.host, conn.port), conn.timeout_s, what)
    try:
        summary = call_with_timeout(tracker.summary, conn.timeout_s, what)
    finally:
        tracker.close()
    return sum(1 for s in summary.get("server_info", []) if s.get("key") == f"server:{conn.key}")


def measure_on_tracker(profile: DeviceProfile, jobs: Sequence[MeasureJob],
                       workers: int | None = None) -> Iterator[JobResult]:
    """Measure `jobs` in parallel over the servers under the profile's tracker key; yields as they finish.

    `workers` defaults to the number of servers registered under the key. A worker whose
    job fails reports the error and stops (its session may be broken); the others go on.
    """
    conn = profile.connection
    if not isinstance(conn, TrackerConnection):
        raise DeviceError(f"profile {profile.name} does not use a tracker (connection kind {conn.kind}); "
                          f"parallel measurement needs `connection: {{kind: tracker, ...}}`")
    if not jobs:
        return
    n = workers or tracker_servers(conn)
    if n == 0:
        raise DeviceError(f"no RPC server is registered under key {conn.key!r} at tracker {conn.host}:{conn.port}; "
                          f"start servers with `--tracker {conn.host}:{conn.port} --key {conn.key}`")
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work(name: str) -> None:
        try:
            with open_session(profile) as session:
                while not stop.is_set():
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        results.put(JobResult(job, name, measurement=measure(session, job.lib_path, job.inputs,
                                                                             profile.policy)))
                    except Exception as err:  # reported to the caller, who decides what to do
                        results.put(JobResult(job, name, error=f"{type(err).__name__}: {err}"))
                        return
        except DeviceError as err:
            log.warning("%s could not get a session: %s", name, err)
        finally:
            results.put(_DONE)

    threads = [threading.Thread(target=work, args=(f"{conn.key}-worker{i}",), daemon=True)
               for i in range(min(n, len(jobs)))]
    for t in threads:
        t.start()
    finished = 0
    try:
        while finished < len(threads):
            item = results.get()
            if item is _DONE:
                finished += 1
            else:
                yield item
    finally:
        stop.set()  # on Ctrl-C or an early close: workers stop after their job in flight
    for job in _drain(todo):
        yield JobResult(job, "none", error="no worker left to run it (all sessions failed)")


def _drain(q: queue.Queue) -> list[MeasureJob]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items
