"""Intervals for comparisons between models trained over several seeds: pure functions on numpy arrays.

A difference between two training recipes has two sources of noise: the training run (seed: data order,
initialisation, masks, and in the demo the scenes themselves) and the finite test set. Two intervals, both
95%, on the mean over seeds of the paired difference (arm A minus arm B, same seed, same test scenes):

- `paired_bootstrap`: resample seeds with replacement, then within each drawn seed resample its test scenes
  with replacement (the same scenes for both arms, so the pairing is kept), and take percentiles of the mean
  difference. It needs per-scene scores (e.g. 0/1 correctness).
- `t_interval`: the Student-t interval of the per-seed differences (n - 1 degrees of freedom). With few
  seeds the percentile bootstrap is too narrow (it cannot see beyond the n values it has), so a claim in
  the docs needs both intervals to exclude zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["paired_bootstrap", "t_interval", "mean_interval"]

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (scipy.stats.t.ppf(0.975, df)).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def _t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% Student-t interval of the mean of `values` (one per seed); with a single
    value the interval is unbounded."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value")
    m = float(x.mean())
    if x.size == 1:
        return m, -np.inf, np.inf
    half = _t975(x.size - 1) * float(x.std(ddof=1)) / np.sqrt(x.size)
    return m, m - half, m + half


def paired_bootstrap(a: Mapping[object, np.ndarray], b: Mapping[object, np.ndarray], *, reps: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi) of mean_seed(mean_scene(a) - mean_scene(b)) with a two-level percentile bootstrap.

    a, b: per seed, the per-scene scores of each arm, (N_seed,) arrays in the same scene order; only seeds in
    both are used. The point estimate is the plain mean over seeds of the per-seed difference.
    """
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        raise ValueError("the two arms share no seed")
    diffs = []
    for s in seeds:
        x, y = np.asarray(a[s], dtype=np.float64), np.asarray(b[s], dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"seed {s}: per-scene scores must be two 1-D arrays of one length, got {x.shape} "
                             f"and {y.shape}")
        diffs.append(x - y)  # (N_seed,)
    point = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for r in range(reps):
        drawn = rng.integers(0, len(diffs), len(diffs))
        stats[r] = np.mean([diffs[i][rng.integers(0, diffs[i].size, diffs[i].size)].mean() for i in drawn])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


def mean_interval(a: Mapping[object, np.ndarray], *, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi) of one arm's metric over seeds, by the same two-level bootstrap (for plots)."""
    zeros = {s: np.zeros_like(np.asarray(v, dtype=np.float64)) for s, v in a.items()}
    return paired_bootstrap(a, zeros, reps=reps, seed=seed)
