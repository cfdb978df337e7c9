"""Measuring a batch of compiled subnets on a device into the store, resumably.

Jobs already in the store are skipped; each finished measurement is committed before
the next is awaited, so Ctrl-C or kill -9 loses at most the ones in flight. Tracker
profiles spread the batch over all servers under their key; other profiles measure one
after another in a single session.
"""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

from pipeline.device.farm import JobResult, MeasureJob, measure_on_tracker
from pipeline.device.measure import measure
from pipeline.device.profile import DeviceProfile, TrackerConnection
from pipeline.device.session import open_session
from pipeline.device.store import MeasurementRecord, MeasurementStore
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)


def measure_serially(profile: DeviceProfile, jobs: Sequence[MeasureJob]) -> Iterator[JobResult]:
    """Measure jobs one by one in one session; a failing job is reported, the rest go on."""
    if not jobs:
        return
    with open_session(profile) as session:
        for job in jobs:
            try:
                yield JobResult(job, profile.name, measurement=measure(session, job.lib_path, job.inputs,
                                                                       profile.policy))
            except Exception as err:  # reported to the caller, who logs and leaves it unstored
                yield JobResult(job, profile.name, error=f"{type(err).__name__}: {err}")


def run_measurements(profile: DeviceProfile, jobs: Sequence[MeasureJob], store: MeasurementStore,
                     progress: bool = True) -> Iterator[MeasurementRecord]:
    """Measure what the store lacks, committing each record as it arrives; yields new records.

    Failed jobs are logged and left out of the store, so the next run retries them.
    """
    pending = [job for job in jobs if not store.has(job.key)]
    log.info("%s: %d of %d measurement(s) already stored, %d to do", profile.name, len(jobs) - len(pending),
             len(jobs), len(pending))
    parallel = isinstance(profile.connection, TrackerConnection)
    results = measure_on_tracker(profile, pending) if parallel else measure_serially(profile, pending)
    with progress_bar(total=len(pending), desc=f"measure on {profile.name}", unit="subnet", disable=not progress) as bar:
        for result in results:
            bar.update()
            if result.measurement is None:
                log.warning("%s: measuring %s failed on %s: %s", profile.name, result.job.key.subnet_id,
                            result.worker, result.error)
                continue
            record = MeasurementRecord.from_measurement(result.job.key, result.job.config, result.measurement,
                                                        meta={**result.job.meta, "worker": result.worker})
            store.add(record)
            yield record
