"""Timing a compiled Relax VM library on a device with the profile's measurement policy.

TVM's `time_evaluator` runs the timing loop on the device (RPC latency excluded),
discards one warm-up call and grows `number` until one repeat lasts `min_repeat_ms`.
We keep every repeat, report median and the inter-quartile spread, and measure again
(after the policy's cool-down) when the relative spread is wider than the policy allows.

`measure_paired` (used by `bench/pairing.py`) times a library in alternation with a
reference library, one repeat each, so that each of the library's repeats has the
reference's timings just before and just after it: on a shared machine whose speed swings
1.1-2x within seconds, the ratio of the two moves far less than either (see its docstring).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from pipeline.device.profile import MeasurePolicy
from pipeline.device.session import DeviceSession

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Measurement:
    """Latency of one module on one device; all times in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    min_ms: float
    repeats_ms: tuple[float, ...]
    number: int
    attempts: int
    remeasured: bool
    spread_ok: bool

    @property
    def spread(self) -> float:
        """Relative spread: IQR / median."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    @classmethod
    def from_repeats(cls, repeats_ms: list[float], number: int, attempts: int, max_spread: float) -> "Measurement":
        arr = np.asarray(repeats_ms, dtype=np.float64)
        q1, median, q3 = np.percentile(arr, [25, 50, 75])
        iqr = float(q3 - q1)
        return cls(median_ms=float(median), mean_ms=float(arr.mean()), std_ms=float(arr.std()), iqr_ms=iqr,
                   min_ms=float(arr.min()), repeats_ms=tuple(float(x) for x in arr), number=number,
                   attempts=attempts, remeasured=attempts > 1,
                   spread_ok=bool(median > 0 and iqr / median <= max_spread))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["repeats_ms"] = list(self.repeats_ms)
        return out


def _to_device(session: DeviceSession, inputs: dict[str, np.ndarray]) -> list:
    import tvm

    return [tvm.runtime.tensor(np.ascontiguousarray(x), session.device) for x in inputs.values()]


#: TVM's thread-pool affinity modes (runtime/threading_backend.h).
_BIG_CORES, _SHARE_CPUS = 1, -3


def configure_threads(session: DeviceSession, threads: int | None) -> None:
    """Size the device's TVM thread pool to `threads` workers (None keeps all cores).

    On this machine the pool shares exactly the CPUs the process may run on: the "big
    cores" mode pins the calling thread to CPU 0 whatever `taskset` or a cgroup allowed,
    so a measurement pinned to a quiet core silently ran on a busy one. On a remote
    device the big cores are right (big.LITTLE phones and boards)."""
    if threads is None:
        return
    config = session.get_function("runtime.config_threadpool")
    if session.is_remote:
        config(_BIG_CORES, threads)
    else:
        config(_SHARE_CPUS, threads, [str(cpu) for cpu in sorted(os.sched_getaffinity(0))])


Timer = Callable[[], list[float]]


def _timer(session: DeviceSession, lib_path: str | os.PathLike, inputs: dict[str, np.ndarray],
           policy: MeasurePolicy, entry: str, vm: bool, repeat: int) -> Timer:
    """A function returning `repeat` timings (ms) of `entry` of the library, warmed up."""
    from tvm import relax

    lib = session.load(lib_path)
    module = relax.VirtualMachine(lib, session.device) if vm else lib
    args = _to_device(session, inputs)
    for _ in range(policy.warmup):
        module[entry](*args)
    timer = module.time_evaluator(entry, session.device, number=policy.number, repeat=repeat,
                                  min_repeat_ms=policy.min_repeat_ms)
    return lambda: [float(r) * 1e3 for r in timer(*args).results]


def _until_steady(take: Callable[[int], T], steady: Callable[[T], bool], policy: MeasurePolicy, what: str) -> T:
    """`take(attempt)` again (after the policy's cool-down) while its result is not
    `steady`, up to `policy.remeasure` more times; the last result is returned."""
    attempt = 1
    while True:
        result = take(attempt)
        if steady(result) or attempt > policy.remeasure:
            return result
        log.info("%s: spread over %.1f%% (attempt %d): measuring again", what, 100 * policy.max_spread, attempt)
        attempt += 1
        if policy.cooldown_ms:
            time.sleep(policy.cooldown_ms / 1000)


def measure(session: DeviceSession, lib_path: str | os.PathLike, inputs: dict[str, np.ndarray],
            policy: MeasurePolicy, entry: str = "main", vm: bool = True) -> Measurement:
    """Time `entry` of the library at `lib_path` on the session's device.

    `vm`: the library is a Relax VM executable (a subnet, a block); else `entry` is a
    function of the module itself (a kernel). `inputs` are passed positionally in their
    dict order (name -> array).
    """
    configure_threads(session, policy.threads)
    timer = _timer(session, lib_path, inputs, policy, entry, vm, policy.repeat)
    return _until_steady(
        lambda attempt: Measurement.from_repeats(timer(), number=policy.number, attempts=attempt,
                                                 max_spread=policy.max_spread),
        lambda m: m.spread_ok, policy, f"{session.profile.name} {Path(lib_path).name}")


@dataclass(frozen=True)
class PairedMeasurement:
    """A library's repeats, each between two of a reference's (`reference_ms` has one more).

    `ratios[i]` is repeat i over the geometric mean of the reference's timings around it;
    their median (`ratio`) is the library's time in units of the reference's.
    `measurement.spread_ok` judges the ratios' spread, not the raw times': a slow phase that
    hits both alike is no reason to measure again."""

    measurement: Measurement
    reference_ms: tuple[float, ...]
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def ratio_spread(self) -> float:
        """IQR / median of the ratios."""
        q1, q3 = np.percentile(self.ratios, [25, 75])
        return float((q3 - q1) / self.ratio)

    @property
    def reference_median_ms(self) -> float:
        return float(np.median(self.reference_ms))

    @classmethod
    def from_repeats(cls, repeats_ms: Sequence[float], reference_ms: Sequence[float], number: int, attempts: int,
                     max_spread: float) -> "PairedMeasurement":
        if len(reference_ms) != len(repeats_ms) + 1:
            raise ValueError(f"{len(repeats_ms)} repeats need {len(repeats_ms) + 1} reference timings around them, "
                             f"got {len(reference_ms)}")
        ref = np.asarray(reference_ms, dtype=np.float64)
        ratios = np.asarray(repeats_ms, dtype=np.float64) / np.sqrt(ref[:-1] * ref[1:])
        paired = cls(Measurement.from_repeats(list(repeats_ms), number, attempts, max_spread),
                     tuple(float(r) for r in ref), tuple(float(r) for r in ratios))
        return replace(paired, measurement=replace(paired.measurement, spread_ok=paired.ratio_spread <= max_spread))


def measure_paired(session: DeviceSession, lib_path: str | os.PathLike, inputs: dict[str, np.ndarray],
                   reference_path: str | os.PathLike, reference_inputs: dict[str, np.ndarray],
                   policy: MeasurePolicy, entry: str = "main", vm: bool = True) -> PairedMeasurement:
    """Time the library as `measure` does, alternating each of its `policy.repeat` repeats
    with one of the reference (a Relax VM library): reference, library, reference, ...,
    reference. Measured again while the ratios spread more than the policy allows.

    Why: the machines here change speed by 1.1-2x within seconds (other tenants of the
    host). In such a phase (the reference at 1.5x its quiet time on median) the 30-subnet
    full-space pool on x86-host, timed in four passes, agreed pass to pass within ±10 % on
    44 % of subnets raw and on 97 % paired call by call (Kendall tau 0.78 / 0.92); four
    passes with the reference timed before and after each whole timing agreed on 54 %.
    `bench/pairing.py` measures this; stored measurements are not paired yet
    (`pipeline.measure.batch`): the reference beside every repeat made a block cost ~3.5 s
    on the emulated device, and the main job's profile stage several times longer."""
    configure_threads(session, policy.threads)
    timer = _timer(session, lib_path, inputs, policy, entry, vm, repeat=1)
    reference = _timer(session, reference_path, reference_inputs, policy, "main", True, repeat=1)

    def take(attempt: int) -> PairedMeasurement:
        repeats, around = [], reference()
        for _ in range(policy.repeat):
            repeats += timer()
            around += reference()
        return PairedMeasurement.from_repeats(repeats, around, policy.number, attempt, policy.max_spread)

    return _until_steady(take, lambda p: p.measurement.spread_ok, policy,
                         f"{session.profile.name} {Path(lib_path).name} paired")
