"""Fit the rational sigmoid the kernels use (`pipeline.kernels.lower._SIGMOID_P/_Q`).

sigmoid(x) - 1/2 ~ x * P(x^2) / Q(x^2) on [-R, R] (Q(0) = 1), minimax by Lawson's
iteratively reweighted least squares on the linearised error x P - f Q; prints the clamp
at which the kernels' float32 form first reaches exactly 1 (so swish(x) = x beyond it),
that form's error over the real line, and the coefficients, lowest degree first.

    .venv/bin/python scripts/fit_sigmoid.py            # degrees 3 / 4 on [-17, 17]: what ships
    .venv/bin/python scripts/fit_sigmoid.py 4 5 18     # onnxruntime's degrees and range
"""
from __future__ import annotations

import sys

import numpy as np


def fit(p_degree: int, q_degree: int, limit: float, iterations: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """P (p_degree + 1 coefficients) and Q (q_degree + 1, Q[0] = 1) of least maximum error."""
    x = np.linspace(1e-4, limit, 40000)
    s = x * x
    f = 1.0 / (1.0 + np.exp(-x)) - 0.5
    p_terms = np.stack([x * s**k for k in range(p_degree + 1)], 1)
    q_terms = np.stack([s**k for k in range(1, q_degree + 1)], 1)
    weights, lawson, best = np.ones_like(x), np.ones_like(x), None
    for _ in range(iterations):
        a = np.concatenate([p_terms, -f[:, None] * q_terms], 1) * (weights * lawson)[:, None]
        scale = np.abs(a).max(0)
        solution = np.linalg.lstsq(a / scale, f * weights * lawson, rcond=None)[0] / scale
        p, q = solution[:p_degree + 1], solution[p_degree + 1:]
        denominator = 1 + q_terms @ q
        error = np.abs(p_terms @ p / denominator - f)
        if best is None or error.max() < best[0]:
            best = (error.max(), p, np.concatenate([[1.0], q]))
        weights = 1 / np.abs(denominator)  # the linearised error, scaled back to the true one
        lawson = lawson * np.sqrt(error / error.max()) + 1e-12
        lawson /= lawson.mean()
    return best[1], best[2]


def _float32_form(p: np.ndarray, q: np.ndarray, x: np.ndarray, clamp: float) -> np.ndarray:
    """What the kernels compute: (v 2P(s) + Q(s)) / (2 Q(s)), v = x clamped, s = v^2, at least 0."""
    v = np.clip(x.astype(np.float32), -clamp, clamp)
    s = v * v

    def horner(c: np.ndarray) -> np.ndarray:
        value = np.float32(c[-1])
        for coefficient in c[-2::-1]:
            value = value * s + np.float32(coefficient)
        return value

    qs = horner(q.astype(np.float32))
    return np.maximum((v * horner((2 * p).astype(np.float32)) + qs) / (qs + qs), 0)


def saturating_clamp(p: np.ndarray, q: np.ndarray, limit: float) -> float:
    """The largest clamp up to `limit` (in steps of 1/4) where the float32 form is exactly 1."""
    clamp = limit
    while _float32_form(p, q, np.array([clamp]), clamp)[0] != 1.0:
        clamp -= 0.25
    return clamp


def float32_error(p: np.ndarray, q: np.ndarray, clamp: float) -> float:
    """Largest |error| of the float32 form on [-clamp - 23, clamp + 23]."""
    x = np.linspace(-clamp - 23, clamp + 23, 400001).astype(np.float32)
    return float(np.abs(_float32_form(p, q, x, clamp) - 1 / (1 + np.exp(-x.astype(np.float64)))).max())


if __name__ == "__main__":
    p_deg, q_deg, lim = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 else (3, 4, 17.0)
    p, q = fit(p_deg, q_deg, lim)
    clamp = saturating_clamp(p, q, lim)
    print(f"degrees {p_deg}/{q_deg} fitted on [-{lim:g}, {lim:g}], clamped to +-{clamp:g}: "
          f"float32 max error {float32_error(p, q, clamp):.2e}")
    print("P =", tuple(float(c) for c in p))
    print("Q =", tuple(float(c) for c in q))
