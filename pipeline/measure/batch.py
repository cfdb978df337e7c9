"""`measure_batch`: the one way a batch of libraries is timed on a device and stored.

Jobs already in the store are skipped; each finished measurement is committed before
the next is awaited, so Ctrl-C or kill -9 loses at most the ones in flight. Every stored
row carries the reference (`reference_id`, `reference_ms`: the geometric mean of its timings
on the same server just before and just after the job, each at most `REFERENCE_MAX_AGE_S`
away; `reference_drift` between them), so a fit can correct every row for contention, the
build's own included; a job the two disagree on, or timed while the reference ran well over
its quiet time on the device (a slow phase), is timed again. Tracker profiles spread the batch over all servers
under their key; other profiles measure one after another in a single session (the
caller's, if given).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import replace
from typing import Callable, Iterator, Sequence

from pipeline.device.measure import Measurement, measure
from pipeline.device.profile import DeviceProfile, TrackerConnection
from pipeline.device.session import DeviceSession, open_session
from pipeline.device.store import MeasurementRecord, MeasurementStore
from pipeline.errors import is_device_failure
from pipeline.measure.farm import on_tracker
from pipeline.measure.jobs import JobResult, MeasureJob, Reference, quiet_time
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)


#: A reference timing younger than this serves the next job on the same server too: contention
#: drifts over seconds, while timing the reference before every small job (a block takes a
#: fraction of a second) doubled the profiling time on an emulated device. A reference
#: whose own timing lasts longer serves for as long as it took: it cannot see a drift
#: faster than itself, and on a slow device (a full-space reference takes 7-75 s under
#: emulation) re-timing it around every block cost several times the blocks.
REFERENCE_MAX_AGE_S = 2.0


#: A job whose reference timings just before and just after it differ by more than this
#: fraction ran while the machine's load changed, so no one reference speaks for it: it is
#: timed again, up to `MAX_RETIMES` more times, and the best-bracketed timing is kept. On
#: the emulated device the same library re-timed minutes later differed by more than 10 %
#: for 13-15 % of subnets, mostly from contention that came or went mid-measurement.
MAX_REFERENCE_DRIFT = 0.10
MAX_RETIMES = 2

#: A job whose reference ran more than this factor over the reference's quiet time on the
#: device (`quiet_time` of its times stored beside earlier jobs) ran in a slow phase: it is
#: timed again like a drifting one. The emulated device has phases of seconds in which
#: everything runs 1.7-2x slower (the reference 146-173 ms instead of 85); a subnet timed
#: in one measured 49.0 ms after 23.8 ms and was rejected for its 31 ms budget.
SLOW_FACTOR = 1.25
#: Stored reference times needed before a quiet time is believed.
QUIET_MIN_ROWS = 5
#: Jobs in a row still slow after their re-times: the device is slow now (a long load, a
#: throttled CPU), not in a phase, and re-timing for slowness stops until a job is not slow.
SLOW_STREAK = 3


def _slow(reference_ms: float, quiet_ms: float | None) -> bool:
    """Whether a reference time says the device ran in a slow phase (`SLOW_FACTOR`)."""
    return quiet_ms is not None and reference_ms > SLOW_FACTOR * quiet_ms


def _runner(reference: Reference | None, quiet_ms: float | None = None):
    """The function that runs one job in a session, bracketed by the reference (if any):
    timed before (unless a young enough timing exists, `REFERENCE_MAX_AGE_S`) and after (the
    same rule, so one timing closes a job and opens the next), the job re-timed while the
    two differ by more than `MAX_REFERENCE_DRIFT` or, given the reference's `quiet_ms`,
    while the device runs in a slow phase (`SLOW_FACTOR`)."""
    last: dict[str, tuple[float, float, float]] = {}  # worker -> (monotonic time, median ms, seconds it took)
    slow_streak: dict[str, int] = {}  # worker -> jobs in a row that stayed slow

    def reference_ms(session: DeviceSession, job: MeasureJob, worker: str, fresh: bool = False) -> float:
        when, ms, took = last.get(worker, (-float("inf"), 0.0, 0.0))
        if fresh or time.monotonic() - when > max(REFERENCE_MAX_AGE_S, took):
            start = time.monotonic()
            ms = measure(session, reference.library, reference.inputs, job.policy).median_ms
            last[worker] = (time.monotonic(), ms, time.monotonic() - start)
        return ms

    def attempt(session: DeviceSession, job: MeasureJob, worker: str) -> JobResult:
        def timing() -> Measurement:
            return measure(session, job.library, job.inputs, job.policy, job.entry, vm=job.vm)

        if reference is None:
            return JobResult(job, worker, timing())
        before = reference_ms(session, job, worker)
        judged_quiet = quiet_ms if slow_streak.get(worker, 0) < SLOW_STREAK else None
        result = bracketed(job, worker, timing, before, lambda fresh: reference_ms(session, job, worker, fresh),
                           judged_quiet)
        if quiet_ms is not None:
            slow_streak[worker] = slow_streak.get(worker, 0) + 1 if _slow(result.reference_ms, quiet_ms) else 0
            if slow_streak[worker] == SLOW_STREAK:
                log.warning("%s: the reference ran %.2fx its quiet time (%.3f ms) beside %d jobs in a row: the "
                            "device is slow now; its timings are kept as they are (the fit corrects them by the "
                            "reference)", worker, result.reference_ms / quiet_ms, quiet_ms, SLOW_STREAK)
        return result

    def run_job(session: DeviceSession, job: MeasureJob, worker: str) -> JobResult:
        """A failed job is reported to the caller, who logs it and leaves it unstored. A
        dropped session ("kShutdown", "Broken pipe") would fail every later job too: it is
        reopened and the job tried once more (seen on the emulated device mid-batch); a
        device that cannot be reached again raises DeviceError (lost: resume later)."""
        try:
            return attempt(session, job, worker)
        except Exception as err:
            last.pop(worker, None)
            error = err
        if is_device_failure(error) and session.revive():
            try:
                return attempt(session, job, worker)
            except Exception as err:
                last.pop(worker, None)
                error = err
        return JobResult(job, worker, error=f"{type(error).__name__}: {error}")

    return run_job


def bracketed(job: MeasureJob, worker: str, timing: Callable[[], Measurement], before: float,
              reference_after: Callable[[bool], float], quiet_ms: float | None = None) -> JobResult:
    """Time `job` between two reference timings (`before`, then `reference_after(fresh)`);
    while the two differ by more than `MAX_REFERENCE_DRIFT`, or (given the reference's
    `quiet_ms`) their geometric mean is over `SLOW_FACTOR` x `quiet_ms`, time it again (up
    to `MAX_RETIMES` more times, each closed by a fresh reference timing) and keep the
    timing whose bracket was least disturbed: least drift plus least slowness. Its
    `reference_ms` is the bracket's geometric mean."""

    def disturbance(r: JobResult) -> float:
        slowness = max(0.0, r.reference_ms / quiet_ms - 1.0) if quiet_ms else 0.0
        return abs(r.reference_drift) + slowness

    best: JobResult | None = None
    for retime in range(MAX_RETIMES + 1):
        result = timing()
        # a re-time is judged by a new closing timing: the age rule would reuse the one
        # that just opened it, and a drift within the job would go unseen
        after = reference_after(retime > 0)
        this = JobResult(job, worker, result, math.sqrt(before * after), after / before - 1.0, retime)
        if best is None or disturbance(this) < disturbance(best):
            best = this
        if abs(this.reference_drift) <= MAX_REFERENCE_DRIFT and not _slow(this.reference_ms, quiet_ms):
            break
        before = after
    return replace(best, retimes=retime)


def stored_quiet_time(store: MeasurementStore, device: str, reference: Reference) -> float | None:
    """The reference's quiet time on `device` from the store's rows timed beside it, or None
    with fewer than `QUIET_MIN_ROWS` of them."""
    times = store.reference_times(device, reference.subnet_id)
    return quiet_time(times) if len(times) >= QUIET_MIN_ROWS else None


def _record(result: JobResult, reference: Reference) -> MeasurementRecord:
    job = result.job
    meta = {**job.meta, "worker": result.worker, "reference_id": reference.subnet_id,
            "reference_ms": result.reference_ms, "reference_drift": round(result.reference_drift, 4),
            "retimes": result.retimes, "load_avg_1min": os.getloadavg()[0]}
    return MeasurementRecord.from_measurement(job.key, job.config, result.measurement, meta)


def measure_batch(profile: DeviceProfile, jobs: Sequence[MeasureJob], store: MeasurementStore | None = None,
                  reference: Reference | None = None, session: DeviceSession | None = None,
                  progress: bool = True, desc: str | None = None, skip_stored: bool = True,
                  workers: int | None = None) -> Iterator[JobResult]:
    """Measure on `profile`'s device what `store` lacks; yields every finished job (stored first).

    With a `store`, a `reference` is required: no row goes in without the contention
    reference beside it. Failed jobs are yielded with their error, logged and left out of
    the store, so the next run retries them. `session`, if given, is used (not closed).
    `skip_stored=False` times stored jobs again and replaces their rows one by one.
    `workers` caps the servers used behind a tracker (default: all registered).
    """
    if store is not None and reference is None:
        raise ValueError("stored measurements need a contention reference beside them")
    foreign = {j.key.device for j in jobs} - {profile.name}
    if foreign:
        raise ValueError(f"jobs for device(s) {sorted(foreign)} given to a batch on {profile.name}")
    unique = list({job.key: job for job in jobs}.values())  # two budgets may pick one subnet
    pending = [job for job in unique if store is None or not skip_stored or not store.has(job.key)]
    if store is not None:
        log.info("%s: %d of %d measurement(s) already stored, %d to do", profile.name,
                 len(unique) - len(pending), len(unique), len(pending))
    if not pending:
        return
    quiet_ms = stored_quiet_time(store, profile.name, reference) if store is not None else None
    run_job = _runner(reference, quiet_ms)
    if isinstance(profile.connection, TrackerConnection):
        results = on_tracker(profile, pending, run_job, session, workers)
    else:
        results = _serially(profile, pending, run_job, session)
    with progress_bar(total=len(pending), desc=desc or f"measure on {profile.name}", unit="job",
                      disable=not progress) as bar:
        for result in results:
            bar.update()
            if result.measurement is None:
                log.warning("%s: measuring %s failed on %s: %s", profile.name, result.job.key.subnet_id,
                            result.worker, result.error)
            elif store is not None:
                store.add(_record(result, reference))
            yield result


def _serially(profile: DeviceProfile, jobs: Sequence[MeasureJob], run_job, session: DeviceSession | None
              ) -> Iterator[JobResult]:
    with contextlib.nullcontext(session) if session is not None else open_session(profile) as sess:
        for job in jobs:
            yield run_job(sess, job, profile.name)
