"""The contention bracket: a job timed while the reference drifted is timed again.

`bracketed` is the rule alone (which timing is kept, with which reference), fed scripted
reference timings so each case is exact; `measure_batch` on this machine then shows every
stored row carries its bracket.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.device import MeasurePolicy, load_profile
from pipeline.device.check import build_tiny, tiny_inputs
from pipeline.device.measure import Measurement
from pipeline.device.store import MeasurementRecord, MeasurementStore, RecordKey
from pipeline.measure import MeasureJob, Reference, measure_batch
from pipeline.measure.batch import MAX_RETIMES, QUIET_MIN_ROWS, SLOW_STREAK, bracketed, stored_quiet_time

JOB = MeasureJob(RecordKey("x86-host", "s", "t", "v", "k"), {}, Path("x.so"), {}, MeasurePolicy())


def _run(job_ms: list[float], references_after: list[float], before: float, quiet_ms: float | None = None):
    """`bracketed` with the job's successive timings and the reference's closing timings."""
    jobs, refs, fresh_asked = iter(job_ms), iter(references_after), []

    def after(fresh: bool) -> float:
        fresh_asked.append(fresh)
        return next(refs)

    result = bracketed(JOB, "w", lambda: Measurement.from_repeats([next(jobs)] * 3, 1, 1, 0.1), before, after,
                       quiet_ms)
    return result, fresh_asked


def test_a_steady_reference_times_the_job_once():
    result, fresh = _run([5.0], [10.5], before=10.0)
    assert result.retimes == 0 and result.measurement.median_ms == 5.0
    assert result.reference_ms == pytest.approx((10.0 * 10.5) ** 0.5)
    assert result.reference_drift == pytest.approx(0.05)
    assert fresh == [False]  # the closing timing may be the one that opens the next job


def test_a_drifting_reference_times_the_job_again_and_keeps_the_steady_bracket():
    # load came during the first timing (10 -> 15 ms), then held (15 -> 15.3)
    result, fresh = _run([7.0, 7.6], [15.0, 15.3], before=10.0)
    assert result.retimes == 1 and result.measurement.median_ms == 7.6
    assert result.reference_ms == pytest.approx((15.0 * 15.3) ** 0.5)
    # a re-time is closed by a new reference timing, not by the one that opened it
    assert fresh == [False, True]


def test_a_reference_that_never_settles_keeps_the_least_drifted_timing():
    result, fresh = _run([7.0, 6.0, 9.0], [15.0, 12.0, 20.0], before=10.0)
    assert len(fresh) == MAX_RETIMES + 1
    # brackets: 10->15 (+50 %), 15->12 (-20 %), 12->20 (+67 %): the second is kept
    assert result.retimes == MAX_RETIMES and result.measurement.median_ms == 6.0
    assert result.reference_drift == pytest.approx(-0.2)


def test_a_steady_but_slow_reference_times_the_job_again_once_the_quiet_time_is_known():
    # a slow phase: the reference steady at 1.7x its quiet 10 ms, ending during the first
    # re-time (a drifting bracket), then normal
    result, fresh = _run([12.0, 9.1, 7.0], [17.2, 10.3, 10.2], before=17.0, quiet_ms=10.0)
    assert result.retimes == 2 and result.measurement.median_ms == 7.0
    assert fresh == [False, True, True]
    # without a quiet time (a new store) the same steady bracket is accepted as it is
    result, _ = _run([12.0], [17.2], before=17.0)
    assert result.retimes == 0 and result.measurement.median_ms == 12.0
    # slow within SLOW_FACTOR is the device's usual variation, not a phase
    result, _ = _run([7.5], [11.8], before=11.6, quiet_ms=10.0)
    assert result.retimes == 0


def test_a_phase_that_outlasts_the_retimes_keeps_the_least_disturbed_timing():
    # brackets: 17->17.2 (slow 1.71x), 17.2->13.0 (drift -24 %, 1.50x), 13->14 (1.35x, drift +8 %)
    result, fresh = _run([12.0, 9.0, 9.5], [17.2, 13.0, 14.0], before=17.0, quiet_ms=10.0)
    assert len(fresh) == MAX_RETIMES + 1
    assert result.retimes == 2 and result.measurement.median_ms == 9.5


def test_every_stored_row_carries_its_bracket(tmp_path: Path):
    profile = replace(load_profile("x86-host"), policy=MeasurePolicy(repeat=3, min_repeat_ms=5, max_spread=10.0))
    lib = build_tiny(profile, tmp_path / "tiny.so")
    jobs = [MeasureJob(RecordKey("x86-host", f"s{i}", "t", "v", "k"), {}, lib, tiny_inputs(i), profile.policy)
            for i in range(3)]
    with MeasurementStore(tmp_path / "m.sqlite") as store:
        results = list(measure_batch(profile, jobs, store, Reference("tiny", lib, tiny_inputs(0)), progress=False))
        rows = {r.subnet_id: r for r in store.records("x86-host")}
    assert {r.job.key.subnet_id for r in results} == set(rows) == {"s0", "s1", "s2"}
    for r in results:
        meta = rows[r.job.key.subnet_id].meta
        assert meta["reference_ms"] == r.reference_ms > 0
        assert meta["reference_drift"] == round(r.reference_drift, 4)
        assert meta["retimes"] == r.retimes <= MAX_RETIMES


def test_a_device_slow_for_jobs_in_a_row_is_taken_as_slow_now(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A store whose reference once ran 100x faster than it does now: the first
    SLOW_STREAK jobs are each timed 1 + MAX_RETIMES times, then the device is declared
    slow now (once) instead of every later job paying for re-times."""
    profile = replace(load_profile("x86-host"), policy=MeasurePolicy(repeat=3, min_repeat_ms=5, max_spread=10.0))
    lib = build_tiny(profile, tmp_path / "tiny.so")
    reference = Reference("tiny", lib, tiny_inputs(0))
    with MeasurementStore(tmp_path / "m.sqlite") as store:
        fast = Measurement.from_repeats([0.001] * 3, 1, 1, 0.1)
        for i in range(QUIET_MIN_ROWS):
            store.add(MeasurementRecord.from_measurement(RecordKey("x86-host", f"old{i}", "t", "v", "k"), {}, fast,
                                                         {"reference_id": "tiny", "reference_ms": 0.0001}))
        assert stored_quiet_time(store, "x86-host", reference) == pytest.approx(0.0001)
        jobs = [MeasureJob(RecordKey("x86-host", f"s{i}", "t", "v", "k"), {}, lib, tiny_inputs(i), profile.policy)
                for i in range(SLOW_STREAK + 2)]
        with caplog.at_level("WARNING", logger="pipeline.measure.batch"):
            results = list(measure_batch(profile, jobs, store, reference, progress=False))
    assert [r.retimes for r in results[:SLOW_STREAK]] == [MAX_RETIMES] * SLOW_STREAK
    assert sum("the device is slow now" in m for m in caplog.messages) == 1
