"""Multi-objective arithmetic: non-dominated sorting, crowding distance, hypervolume.

Pure numpy functions over an (N, M) matrix of objectives that are all MINIMISED (an
accuracy enters as its negative). NSGA-II (Deb et al. 2002) uses the first two; the
hypervolume is the usual single number for how good a whole front is, so searches
with different methods are compared on it.
"""
from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`out[i, j]`: row i of `a` dominates row j of `b` (no worse everywhere, better somewhere)."""
    le = np.all(a[:, None, :] <= b[None, :, :], axis=2)
    lt = np.any(a[:, None, :] < b[None, :, :], axis=2)
    return le & lt


def non_dominated_sort(objectives: np.ndarray) -> list[np.ndarray]:
    """Fronts of row indices: front 0 is non-dominated, front k is non-dominated once
    fronts < k are removed. Deb's fast sort on a dense domination matrix (O(M N^2)
    memory and time, fine for populations of a few hundred)."""
    f = np.asarray(objectives, dtype=np.float64)
    dom = dominates(f, f)
    count = dom.sum(axis=0)  # how many rows dominate each row
    fronts: list[np.ndarray] = []
    current = np.flatnonzero(count == 0)
    while current.size:
        fronts.append(current)
        count = count - dom[current].sum(axis=0)
        count[current] = -1  # done
        current = np.flatnonzero(count == 0)
    return fronts


def crowding_distance(objectives: np.ndarray) -> np.ndarray:
    """Per row of one front: the sum over objectives of the normalised gap between its
    two neighbours; boundary rows get infinity so the extremes are always kept."""
    f = np.asarray(objectives, dtype=np.float64)
    n, m = f.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(f[:, j], kind="stable")
        col = f[order, j]
        span = col[-1] - col[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (col[2:] - col[:-2]) / span
    return distance


#: Above this many objectives the exact slicing costs N^(M-2) two-dimensional sweeps.
EXACT_MAX_OBJECTIVES = 4
#: Monte-Carlo samples beyond that: relative standard error ~ sqrt((1-p)/(p n)), under 1% here.
MC_SAMPLES = 200_000


def hypervolume(objectives: np.ndarray, reference: np.ndarray, seed: int = 0) -> float:
    """Volume of the region dominated by the points and bounded by `reference`
    (minimisation; points not strictly better than the reference everywhere add nothing).

    Up to `EXACT_MAX_OBJECTIVES` it is exact, by slicing along the last objective (HSO,
    While et al. 2006): the sum over slices of slice height x the (M-1)-dimensional
    volume of the points at or below the slice, down to a 2-D sweep. With more
    objectives that is N^(M-2) sweeps, so it is estimated from `MC_SAMPLES` uniform
    points in the box between the points' minimum and the reference (seeded, so the
    same front always gets the same number).
    """
    ref = np.asarray(reference, dtype=np.float64)
    f = np.asarray(objectives, dtype=np.float64).reshape(-1, len(ref))
    f = f[np.all(f < ref, axis=1)]
    if not len(f):
        return 0.0
    f = f[~dominates(f, f).any(axis=0)]
    if f.shape[1] <= EXACT_MAX_OBJECTIVES:
        return _hso(f, ref)
    low = f.min(axis=0)
    box = float(np.prod(ref - low))
    rng = np.random.default_rng(seed)
    covered = 0
    for _ in range(MC_SAMPLES // 10_000):
        points = low + rng.random((10_000, len(ref))) * (ref - low)
        covered += int(np.any(np.all(f[:, None, :] <= points[None, :, :], axis=2), axis=0).sum())
    return box * covered / (MC_SAMPLES // 10_000 * 10_000)


def _hso(f: np.ndarray, ref: np.ndarray) -> float:
    if f.shape[1] == 1:
        return float(ref[0] - f[:, 0].min())
    if f.shape[1] == 2:  # sweep along x: the covered height is the running minimum of y
        order = np.argsort(f[:, 0], kind="stable")
        x, y = f[order, 0], np.minimum.accumulate(f[order, 1])
        return float(np.sum((np.append(x[1:], ref[0]) - x) * (ref[1] - y)))
    f = f[np.argsort(f[:, -1], kind="stable")]
    cuts = np.append(f[1:, -1], ref[-1])
    heights = cuts - f[:, -1]
    return float(sum(h * _hso(f[:i + 1, :-1], ref[:-1]) for i, h in enumerate(heights) if h > 0))
