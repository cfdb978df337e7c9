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
from pipeline.device.store import MeasurementStore, RecordKey
from pipeline.measure import MeasureJob, Reference, measure_batch
from pipeline.measure.batch import MAX_RETIMES, bracketed

JOB = MeasureJob(RecordKey("x86-host", "s", "t", "v", "k"), {}, Path("x.so"), {}, MeasurePolicy())


def _run(job_ms: list[float], references_after: list[float], before: float):
    """`bracketed` with the job's successive timings and the reference's closing timings."""
    jobs, refs, fresh_asked = iter(job_ms), iter(references_after), []

    def after(fresh: bool) -> float:
        fresh_asked.append(fresh)
        return next(refs)

    result = bracketed(JOB, "w", lambda: Measurement.from_repeats([next(jobs)] * 3, 1, 1, 0.1), before, after)
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
    assert result.retimes == 1 and result.measurement.median_ms == 6.0
    assert result.reference_drift == pytest.approx(-0.2)


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
