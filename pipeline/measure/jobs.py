"""What to measure (`MeasureJob`), beside what (`Reference`), and what came back (`JobResult`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.device.measure import Measurement
from pipeline.device.profile import MeasurePolicy
from pipeline.device.store import RecordKey


@dataclass(frozen=True)
class MeasureJob:
    """One library to time on the device `key.device`: what to feed it, how to time it, where it goes.

    `vm` says whether the library is a Relax VM executable (subnets, blocks) or a plain
    module whose function `entry` is timed directly (a kernel being tuned).
    """

    key: RecordKey
    config: dict[str, Any]
    library: Path
    inputs: dict[str, np.ndarray] = field(compare=False)
    policy: MeasurePolicy
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    entry: str = "main"
    vm: bool = True


@dataclass(frozen=True)
class Reference:
    """A fixed library timed right before every stored measurement (contention tracker).

    On a shared machine other processes slow a timing run by up to several times for
    seconds at a stretch; the same slowdown hits a reference timed a moment earlier on the
    same server, so `median_ms / reference_ms` cancels most of it. The fit uses that ratio
    (`pipeline.predict.workflow.load_dataset`); raw times stay in the store.
    """

    subnet_id: str
    library: Path
    inputs: dict[str, np.ndarray] = field(compare=False)


#: The percentile of a reference's stored times taken as its time on a quiet device: the
#: lowest times can be lucky outliers, the median is whatever load was usual.
QUIET_PERCENTILE = 10


def quiet_time(reference_ms: Any) -> float:
    """A reference's time on a (nearly) quiet device, from its times beside many jobs."""
    return float(np.percentile(np.asarray(reference_ms, dtype=np.float64), QUIET_PERCENTILE))


@dataclass(frozen=True)
class JobResult:
    """A finished job: its measurement (and the reference's median beside it), or the error
    that stopped it; `worker` names the session that ran it.

    `reference_ms` is the geometric mean of the reference timed before and after the kept
    timing, `reference_drift` their relative change (after / before - 1), `retimes` how
    many more times the job was timed because a bracket drifted too much or ran in a slow
    phase (the least disturbed timing is kept)."""

    job: MeasureJob
    worker: str
    measurement: Measurement | None = None
    reference_ms: float | None = None
    reference_drift: float = 0.0
    retimes: int = 0
    error: str | None = None
