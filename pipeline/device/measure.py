"""Timing a compiled Relax VM library on a device with the profile's measurement policy.

TVM's `time_evaluator` runs the timing loop on the device (RPC latency excluded),
discards one warm-up call and grows `number` until one repeat lasts `min_repeat_ms`.
We keep every repeat, report median and the inter-quartile spread, and measure again
(after the policy's cool-down) when the relative spread is wider than the policy allows.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.device.profile import MeasurePolicy
from pipeline.device.session import DeviceSession

log = logging.getLogger(__name__)


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


def measure(session: DeviceSession, lib_path: str | os.PathLike, inputs: dict[str, np.ndarray],
            policy: MeasurePolicy, entry: str = "main", vm: bool = True) -> Measurement:
    """Time `entry` of the library at `lib_path` on the session's device.

    `vm`: the library is a Relax VM executable (a subnet, a block); else `entry` is a
    function of the module itself (a kernel). `inputs` are passed positionally in their
    dict order (name -> array).
    """
    from tvm import relax

    configure_threads(session, policy.threads)
    lib = session.load(lib_path)
    module = relax.VirtualMachine(lib, session.device) if vm else lib
    args = _to_device(session, inputs)
    for _ in range(policy.warmup):
        module[entry](*args)
    timer = module.time_evaluator(entry, session.device, number=policy.number, repeat=policy.repeat,
                                  min_repeat_ms=policy.min_repeat_ms)
    attempt = 1
    while True:
        repeats = [float(r) * 1e3 for r in timer(*args).results]
        result = Measurement.from_repeats(repeats, number=policy.number, attempts=attempt,
                                          max_spread=policy.max_spread)
        if result.spread_ok or attempt > policy.remeasure:
            return result
        log.info("spread %.1f%% > %.1f%% on %s (attempt %d): measuring again", 100 * result.spread,
                 100 * policy.max_spread, session.profile.name, attempt)
        attempt += 1
        if policy.cooldown_ms:
            time.sleep(policy.cooldown_ms / 1000)
