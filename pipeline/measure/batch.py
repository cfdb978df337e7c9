"""`measure_batch`: the one way a batch of libraries is timed on a device and stored.

Jobs already in the store are skipped; each finished measurement is committed before
the next is awaited, so Ctrl-C or kill -9 loses at most the ones in flight. Every stored
row is timed paired with the contention reference (`pipeline.device.measure.measure_paired`:
reference and job alternate repeat by repeat) and carries it: `reference_id`,
`reference_ms` (the reference time the pairing puts beside the row's median, so that
`median_ms / reference_ms` is the median of the per-repeat ratios), `reference_median_ms`
(the reference's own median), `ratio_spread`. A fit corrects every row for contention by
that ratio (`pipeline.predict.workflow.load_dataset`). Tracker profiles spread the batch
over all servers under their key; other profiles measure one after another in a single
session (the caller's, if given).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Sequence

from pipeline.device.measure import measure, measure_paired
from pipeline.device.profile import DeviceProfile, TrackerConnection
from pipeline.device.session import DeviceSession, open_session
from pipeline.device.store import MeasurementRecord, MeasurementStore
from pipeline.errors import is_device_failure
from pipeline.measure.farm import on_tracker
from pipeline.measure.jobs import JobResult, MeasureJob, Reference
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)


def _runner(reference: Reference | None):
    """The function that runs one job in a session: paired with the reference if any."""

    def attempt(session: DeviceSession, job: MeasureJob, worker: str) -> JobResult:
        if reference is None:
            return JobResult(job, worker, measure(session, job.library, job.inputs, job.policy, job.entry, vm=job.vm))
        paired = measure_paired(session, job.library, job.inputs, reference.library, reference.inputs, job.policy,
                                job.entry, vm=job.vm)
        return JobResult(job, worker, paired.measurement, paired.reference_beside_ms,
                         paired.reference_median_ms, paired.ratio_spread)

    def run_job(session: DeviceSession, job: MeasureJob, worker: str) -> JobResult:
        """A failed job is reported to the caller, who logs it and leaves it unstored. A
        dropped session ("kShutdown", "Broken pipe") would fail every later job too: it is
        reopened and the job tried once more (seen on the emulated device mid-batch); a
        device that cannot be reached again raises DeviceError (lost: resume later)."""
        try:
            return attempt(session, job, worker)
        except Exception as err:
            error = err
        if is_device_failure(error) and session.revive():
            try:
                return attempt(session, job, worker)
            except Exception as err:
                error = err
        return JobResult(job, worker, error=f"{type(error).__name__}: {error}")

    return run_job


def _record(result: JobResult, reference: Reference) -> MeasurementRecord:
    job = result.job
    meta = {**job.meta, "worker": result.worker, "reference_id": reference.subnet_id,
            "reference_ms": result.reference_ms, "reference_median_ms": result.reference_median_ms,
            "ratio_spread": round(result.ratio_spread, 4), "load_avg_1min": os.getloadavg()[0]}
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
    run_job = _runner(reference)
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
