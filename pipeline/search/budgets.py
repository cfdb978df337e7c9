"""Choosing latency budgets when the user gives none: spread over the device's range."""
from __future__ import annotations

import math
from typing import Sequence

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


#: Where `quantile_budgets` puts its budgets in the device's measured range (3 budgets:
#: 20/50/80 %), as the closed-loop benchmark does.
QUANTILE_RANGE = (0.2, 0.8)


def quantile_budgets(latencies_ms: Sequence[float], count: int = 3) -> list[float]:
    """`count` budgets at evenly spaced quantiles (`QUANTILE_RANGE`) of measured latencies,
    rounded to two significant digits, none tighter than 1.2x the fastest.

    Given a sample spread over the space (the profile's plan spreads over FLOPs), the
    budgets then fall where subnets really differ: spread from the fastest subnet to the
    median instead, the default arm64 build's three budgets all fell among the 32 px
    subnets of the demo space, whose best is its smallest subnet, so every budget
    shipped that one.
    """
    values = np.asarray(latencies_ms, dtype=np.float64)
    if count < 1 or values.size < 2 or values.min() <= 0:
        raise ConfigError(f"cannot place {count} budgets over {values.size} measured latencies; "
                          "pass --budgets-ms explicitly")
    quantiles = np.linspace(*QUANTILE_RANGE, count) if count > 1 else np.array([0.5])
    floor = 1.2 * values.min()
    return sorted({_two_digits(max(floor, float(v))) for v in np.quantile(values, quantiles)})


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
