"""Paired timing: each repeat of a job sits between two timings of the contention reference.

`PairedMeasurement.from_repeats` is the rule alone, fed scripted timings so each case is
exact; `measure_paired` on this machine then shows the real path (what `bench/pairing.py`
times).
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.device import MeasurePolicy, load_profile
from pipeline.device.check import build_tiny, tiny_inputs
from pipeline.device.measure import PairedMeasurement, measure_paired
from pipeline.device.session import open_session


def test_a_slow_phase_that_hits_job_and_reference_alike_leaves_the_ratio_alone():
    # repeats 2-4 ran 1.8x slower (another tenant): the raw median moves, the ratio does not
    job = [5.0, 5.0, 9.0, 9.0, 9.0, 5.0]
    reference = [10.0, 10.0, 18.0, 18.0, 18.0, 10.0, 10.0]
    paired = PairedMeasurement.from_repeats(job, reference, number=1, attempts=1, max_spread=0.1)
    assert paired.measurement.median_ms == 7.0
    assert paired.ratios[0] == pytest.approx(0.5) and paired.ratios[3] == pytest.approx(0.5)
    assert paired.ratio == pytest.approx(0.5, rel=0.01)  # the phase's edges are geometric means
    # spread is judged on the ratios: the raw times spread 80 %, the ratios (nearly) not
    assert paired.measurement.spread > 0.5 and paired.measurement.spread_ok


def test_ratios_that_scatter_are_not_steady():
    paired = PairedMeasurement.from_repeats([5.0, 8.0, 5.0, 8.0], [10.0] * 5, number=1, attempts=1, max_spread=0.1)
    assert paired.ratio_spread > 0.1 and not paired.measurement.spread_ok


def test_every_repeat_needs_a_reference_timing_on_each_side():
    with pytest.raises(ValueError, match="3 repeats need 4 reference timings"):
        PairedMeasurement.from_repeats([1.0, 1.0, 1.0], [1.0] * 3, number=1, attempts=1, max_spread=0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    profile = replace(load_profile("x86-host"), policy=MeasurePolicy(repeat=5, min_repeat_ms=5, max_spread=10.0))
    return profile, build_tiny(profile, tmp_path_factory.mktemp("tiny") / "tiny.so")


def test_a_library_paired_with_itself_runs_at_its_own_speed(tiny: tuple):
    profile, lib = tiny
    with open_session(profile) as session:
        paired = measure_paired(session, lib, tiny_inputs(1), lib, tiny_inputs(0), profile.policy)
        # nothing steady enough for a spread of 1e-9: measured again, `remeasure` more times
        strict = replace(profile.policy, max_spread=1e-9, remeasure=1)
        unsteady = measure_paired(session, lib, tiny_inputs(1), lib, tiny_inputs(0), strict)
    assert len(paired.measurement.repeats_ms) == 5 and len(paired.reference_ms) == 6
    assert 0.5 < paired.ratio < 2.0  # the same kernel on inputs of one shape
    assert unsteady.measurement.attempts == 2 and unsteady.measurement.remeasured
    assert not unsteady.measurement.spread_ok
