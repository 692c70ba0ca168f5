"""Intervals for seed-paired comparisons: hand-built inputs with known answers."""

import numpy as np
import pytest

from sfclip.eval.stats import mean_interval, paired_bootstrap, t_interval


def test_t_interval_known_values():
    # mean 2, sd 1 over 4 values: half width t(0.975, 3) * 1 / 2 = 3.182 / 2
    m, lo, hi = t_interval([1.0, 2.0, 3.0, 2.0 + 0.0])
    sd = np.std([1, 2, 3, 2], ddof=1)
    assert m == pytest.approx(2.0)
    assert hi - m == pytest.approx(3.182 * sd / 2, rel=1e-6)
    assert m - lo == pytest.approx(hi - m)
    assert t_interval([0.5])[1:] == (-np.inf, np.inf)
    with pytest.raises(ValueError):
        t_interval([])


def test_t_table_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    from sfclip.eval.stats import _t975

    for df in (1, 2, 4, 9, 30):
        assert _t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


def test_paired_bootstrap_identical_arms_is_zero_and_shift_is_found():
    rng = np.random.default_rng(0)
    a = {s: rng.random(200) < 0.5 for s in range(5)}
    m, lo, hi = paired_bootstrap(a, a)
    assert (m, lo, hi) == (0.0, 0.0, 0.0)  # pairing: the same scenes on both sides cancel exactly
    b = {s: np.zeros(200) for s in range(5)}
    ones = {s: np.ones(200) for s in range(5)}
    assert paired_bootstrap(ones, b) == (1.0, 1.0, 1.0)
    # a real, noisy gain of 0.2: the interval holds it and excludes 0
    better = {s: rng.random(500) < 0.6 for s in range(5)}
    worse = {s: rng.random(500) < 0.4 for s in range(5)}
    m, lo, hi = paired_bootstrap(better, worse, reps=500)
    assert lo < m < hi and lo > 0.1 and hi < 0.3


def test_paired_bootstrap_sees_seed_variance():
    """Seeds that disagree widen the interval beyond the within-seed (scene) noise."""
    n = 400
    agree = {s: np.full(n, 0.1) for s in range(4)}
    disagree = {0: np.full(n, 0.3), 1: np.full(n, -0.1), 2: np.full(n, 0.2), 3: np.full(n, 0.0)}
    zero = {s: np.zeros(n) for s in range(4)}
    _, lo1, hi1 = paired_bootstrap(agree, zero, reps=500)
    m2, lo2, hi2 = paired_bootstrap(disagree, zero, reps=500)
    assert hi1 - lo1 == pytest.approx(0.0) and m2 == pytest.approx(0.1)
    assert lo2 < 0 and hi2 > 0.2  # the interval spans the seeds, not the (zero) scene noise


def test_paired_bootstrap_uses_shared_seeds_and_checks_shapes():
    a = {0: np.ones(10), 1: np.ones(10), 7: np.zeros(10)}
    b = {0: np.zeros(10), 1: np.zeros(10)}
    assert paired_bootstrap(a, b)[0] == 1.0  # seed 7 has no partner
    with pytest.raises(ValueError, match="no seed"):
        paired_bootstrap({3: np.ones(2)}, b)
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap({0: np.ones(3)}, {0: np.ones(4)})


def test_mean_interval_is_the_arms_mean():
    a = {s: np.full(50, 0.25 + 0.05 * s) for s in range(3)}
    m, lo, hi = mean_interval(a, reps=300)
    assert m == pytest.approx(0.30) and lo <= m <= hi and lo >= 0.25 - 1e-12 and hi <= 0.35 + 1e-12
