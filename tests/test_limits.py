"""Counting-experiment upper limits (Poisson and pyhf CLs) and coupling limits."""

import math

import numpy as np
import pytest
from scipy import stats

from na64reco.stats import limits


def test_poisson_zero_observed_zero_background():
    assert limits.poisson_upper_limit(0, 0.0) == pytest.approx(-math.log(0.1), rel=1e-9)  # 2.303
    assert limits.poisson_upper_limit(0, 0.0, cl=0.95) == pytest.approx(-math.log(0.05), rel=1e-9)


@pytest.mark.parametrize("cl", [0.99999, 1 - 1e-12])
def test_poisson_zero_observed_at_a_confidence_level_close_to_one(cl):
    """s_up = -ln(1 - cl) for n = b = 0: 11.5 at 0.99999 lay beyond the root finder's bracket (10)."""
    assert limits.poisson_upper_limit(0, 0.0, cl) == pytest.approx(-math.log1p(-cl), rel=1e-9)
    assert limits.poisson_upper_limit(0, 0.0, cl, method="classical") == pytest.approx(-math.log1p(-cl), rel=1e-9)


def test_poisson_known_values():
    # classical (Neyman) 90 % upper limits, b = 0 (PDG Statistics review, table 40.3)
    for n, ref in [(1, 3.890), (2, 5.322), (3, 6.681)]:
        assert limits.poisson_upper_limit(n, 0.0, method="classical") == pytest.approx(ref, abs=2e-3)
    # CLs with n = 0 does not depend on b
    assert limits.poisson_upper_limit(0, 3.0) == pytest.approx(2.303, abs=1e-3)


def test_poisson_monotonic_in_background():
    ups = [limits.poisson_upper_limit(2, b) for b in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert np.all(np.diff(ups) < 0)


@pytest.mark.parametrize("b,db", [(1e-6, 0.0), (0.07, 0.03), (0.5, 0.2)])
def test_pyhf_zero_observed(b, db):
    assert limits.cls_upper_limit(0, b, db) == pytest.approx(2.303, rel=0.02)


def test_pyhf_agrees_with_poisson_without_uncertainty():
    for n, b in [(1, 0.07), (3, 1.0)]:
        assert limits.cls_upper_limit(n, b, 0.0) == pytest.approx(limits.poisson_upper_limit(n, b), rel=0.02)


def test_pyhf_monotonic_in_background_and_uncertainty_weakens():
    ups = [limits.cls_upper_limit(2, b, 0.1 * b) for b in (0.2, 1.0, 3.0)]
    assert ups[0] > ups[1] > ups[2]
    assert limits.cls_upper_limit(2, 2.0, 1.0) > limits.cls_upper_limit(2, 2.0, 0.0)


@pytest.mark.parametrize("b,db", [(3.0, 1.0), (20.0, 6.0)])
def test_cls_with_an_uncertain_background_covers_without_overcovering(b, db):
    """Coverage averaged over the background's uncertainty, exact: sum over n of P(n | s) [s_up(n) >= s].
    CLs over-covers at small s by construction; at large s it nears the nominal 0.90.  The profiled
    limits of stops before 48 (the background fitted to the observed count per hypothesis, its
    measurement not fluctuated) over-covered everywhere (1.000 at 20 +- 6 with s = 30)."""
    n_max = int(b + 10 * np.sqrt(b) + 60)
    ups = np.array([limits.cls_upper_limit(n, b, db) for n in range(n_max)])
    z = np.linspace(-8, 8, 4001)
    w = np.exp(-0.5 * z**2) * (b + db * z >= 0)
    w /= w.sum()
    bp = np.clip(b + db * z, 0, None)
    for s in (2.0, 5.0, 13.0, 30.0):
        p_n = np.array([np.sum(w * stats.poisson.pmf(n, s + bp)) for n in range(n_max)])
        assert p_n.sum() == pytest.approx(1.0, abs=1e-6)
        coverage = np.sum(p_n * (ups >= s))
        assert coverage >= 0.9 - 1e-9, (s, coverage)
    assert coverage < 0.94  # s = 30: 0.905 (3 +- 1), 0.916 (20 +- 6)


def test_bad_input():
    with pytest.raises(ValueError):
        limits.poisson_upper_limit(-1, 0.0)
    with pytest.raises(ValueError):
        limits.cls_upper_limit(0, -0.1)


def test_coupling_limit_scaling():
    # N ~ g^2: N(g_ref=1e-4) = 0.23 -> g90 = 1e-4 * sqrt(2.3/0.23)
    assert limits.coupling_limit(10.0, 2.3, n_ref=0.23, coupling_ref=1e-4) == pytest.approx(1e-4 * np.sqrt(10))
    g90 = limits.coupling_limit(10.0, 2.3, n_mot=1.98e10, efficiency=0.5, x_min=0.5, n_steps=4)
    from na64reco.physics.yields import expected_signal

    assert expected_signal(1.98e10, 10.0, g90, 0.5, x_min=0.5, n_steps=4) == pytest.approx(2.3, rel=1e-10)


@pytest.mark.parametrize("kwargs", [{"n_up": -1.0, "n_ref": 1.0}, {"n_up": math.nan, "n_ref": 1.0},
                                    {"n_up": 2.3, "n_ref": math.inf}, {"n_up": 2.3, "n_ref": -0.5}])
def test_coupling_limit_refuses_nonsense(kwargs):
    """(n_up = -1 or NaN gave NaN, n_ref = inf gave a coupling of 0: statistics review, stop 48)"""
    with pytest.raises(ValueError, match="n_up|n_ref"):
        limits.coupling_limit(10.0, **kwargs)
