"""How wrong a latency predictor is on measured subnets, in the terms the search cares about.

Relative error decides whether a subnet fits a latency budget (hence MAPE and the share
within +-5% / +-10%, nn-Meter's headline number); rank agreement decides whether the
search prefers the right subnet (hence Kendall tau).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from pipeline.atomic import atomic_path


def error_metrics(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> dict[str, Any]:
    """RMSE (ms), MAPE (fraction), share within +-5% and +-10%, Kendall tau, max and 90th-percentile relative error."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    predicted = np.asarray(predicted_ms, dtype=np.float64)
    if len(measured) == 0:
        return {"n": 0, "rmse_ms": None, "mape": None, "within_5pct": None, "within_10pct": None,
                "kendall_tau": None, "max_rel_error": None}
    rel = np.abs(predicted - measured) / measured
    tau = kendalltau(measured, predicted).statistic if len(measured) > 1 else float("nan")
    return {
        "n": int(len(measured)),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "mape": float(rel.mean()),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "kendall_tau": None if np.isnan(tau) else float(tau),
        "max_rel_error": float(rel.max()),
        "q90_rel_error": float(np.quantile(rel, 0.9)),
    }


def plot_predicted_vs_measured(measured_ms: np.ndarray, predicted_ms: np.ndarray, path: str | Path,
                               title: str) -> Path:
    """Scatter of predicted vs measured with the y = x line and the +-10% band, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    measured, predicted = np.asarray(measured_ms), np.asarray(predicted_ms)
    lo = float(min(measured.min(), predicted.min())) * 0.9
    hi = float(max(measured.max(), predicted.max())) * 1.1
    line = np.linspace(lo, hi, 2)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(line, line, color="black", lw=1, label="predicted = measured")
    ax.scatter(measured, predicted, s=16, color="tab:blue", label=f"held-out subnets (n={len(measured)})")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)", ylabel="predicted latency (ms)",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
