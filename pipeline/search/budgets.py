"""Choosing latency budgets when the user gives none: spread over the device's range."""
from __future__ import annotations

import math

import numpy as np

from pipeline.errors import ConfigError


def spread_budgets(low_ms: float, high_ms: float, count: int = 3) -> list[float]:
    """`count` budgets spaced geometrically from just above `low_ms` up to `high_ms`,
    rounded to two significant digits (what a person would type).

    `low_ms` is the fastest subnet's latency, so the tightest budget still leaves the
    search some room (20%, more than a device's usual timing noise); `high_ms` is e.g.
    the median subnet's latency.
    """
    if not (0 < low_ms * 1.2 < high_ms) or count < 1:
        raise ConfigError(f"cannot spread {count} budgets over {low_ms:.3g}..{high_ms:.3g} ms; "
                          "pass --budgets-ms explicitly")
    raw = np.geomspace(low_ms * 1.2, high_ms, count) if count > 1 else np.array([high_ms])
    return sorted({_two_digits(v) for v in raw})


def parse_budgets(text: str) -> list[float]:
    """'5,10,20' -> [5.0, 10.0, 20.0]; errors name the bad entry."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(f"--budgets-ms must be comma-separated numbers like 5,10,20 ({err})") from err
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--budgets-ms needs positive numbers like 5,10,20, got {text!r}")
    return sorted(set(values))


def _two_digits(value: float) -> float:
    digits = 1 - int(math.floor(math.log10(value)))
    return float(round(value, digits))
