"""Spreading jobs over every server registered under a tracker key.

One worker thread per registered server: each holds one session (the tracker hands every
request a different free server; a session the caller already holds counts as one of
them) and pulls jobs from a shared queue until it is empty. Workers start pulling together,
once every one has its session (or failed to get one): a server whose session opened a few
seconds later found a short batch already taken by the others (seen on a loaded machine). Results are yielded as they
complete, so the caller can store each one at once. The timing loops run on the
servers; the threads only wait on RPC.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Callable, Iterator, Sequence

from pipeline.device.profile import DeviceProfile, TrackerConnection
from pipeline.device.session import DeviceSession, call_with_timeout, open_session, probe
from pipeline.errors import DeviceError
from pipeline.measure.jobs import JobResult, MeasureJob

log = logging.getLogger(__name__)

#: Runs one job in a session and returns its result (the batch runner's `run_job`).
RunJob = Callable[[DeviceSession, MeasureJob, str], JobResult]

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


def on_tracker(profile: DeviceProfile, jobs: Sequence[MeasureJob], run_job: RunJob,
               session: DeviceSession | None = None, workers: int | None = None) -> Iterator[JobResult]:
    """Run `jobs` in parallel over the servers under the profile's tracker key; yields as they finish.

    `workers` defaults to the number of servers registered under the key; `session`, one
    the caller holds on one of them, serves as the first worker. A worker whose job fails
    reports the error and stops (its session may be broken); the others go on.
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

    n_threads = min(n, len(jobs))
    settled = _Countdown(n_threads)

    def work(name: str, held: DeviceSession | None) -> None:
        try:
            with contextlib.ExitStack() as stack:
                try:
                    sess = held if held is not None else stack.enter_context(open_session(profile))
                finally:
                    settled.arrive()  # with a session or without one: this server has settled
                settled.wait(conn.timeout_s)
                while not stop.is_set():
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    result = run_job(sess, job, name)
                    results.put(result)
                    if result.error is not None:
                        return
        except DeviceError as err:
            log.warning("%s could not get a session: %s", name, err)
        finally:
            results.put(_DONE)

    threads = [threading.Thread(target=work, args=(f"{conn.key}-worker{i}", session if i == 0 else None),
                                daemon=True) for i in range(n_threads)]
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


class _Countdown:
    """Set once `n` threads have arrived; `wait` blocks until then (or `timeout` seconds)."""

    def __init__(self, n: int) -> None:
        self._left, self._lock, self._done = n, threading.Lock(), threading.Event()

    def arrive(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self._done.set()

    def wait(self, timeout: float) -> None:
        self._done.wait(timeout)


def _drain(q: queue.Queue) -> list[MeasureJob]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items
