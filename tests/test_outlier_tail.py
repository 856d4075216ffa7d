"""The lone muon's own outliers integrated (na64reco.background.outlier_tail) against closed forms and toys.

The tail fits are the closed-form maximum-likelihood estimates and recover known tails; one
outlier's shift density keeps its mass and has the closed-form survival; the integral over
one plane equals the 1-D quadrature of the density times the Gaussian tail, and the chi2 cap
drops what lies beyond it; on toys drawn from a known exponential tail the central value
scatters around the closed form and the 90 % upper value covers it; on a small classified
sample ``p00_estimate`` gives the integrated estimate, its count check, and the per-MOT row
takes its 90 % upper value with the adversarial bound kept beside it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate as quad_integrate
from scipy import stats

from na64reco.background import outlier_tail as ot
from na64reco.errors import ConfigError


def test_tail_fits_recover_known_tails():
    rng = np.random.default_rng(1)
    for shape, par in (("exponential", 1.3), ("power_law", 6.0)):
        t = ot.Tail(shape, 3.5, par, 1)
        u = t.sample(rng, 20000)
        fit, p = ot.fit_tail(u, 3.5, shape)
        assert fit.par == pytest.approx(par, rel=4 / math.sqrt(u.size))
        assert p > 1e-3
        # the heavier-tail limit: 2 n par / par_hat is chi2(2n)
        assert fit.heavier().par == pytest.approx(fit.par * stats.chi2.ppf(0.1, 2 * u.size) / (2 * u.size))
        assert fit.heavier().par < fit.par
        # the likelihood prefers the true shape
        other = "power_law" if shape == "exponential" else "exponential"
        assert ot.log_likelihood(fit, u) > ot.log_likelihood(ot.fit_tail(u, 3.5, other)[0], u)
    # survival, truncated at a bound
    t = ot.Tail("exponential", 2.0, 0.5, 10, bound=6.0)
    s = t.survival(np.array([1.0, 2.0, 4.0, 6.0, 9.0]))
    sb = math.exp(-0.5 * 4)
    assert s == pytest.approx([1.0, 1.0, (math.exp(-0.5 * 2) - sb) / (1 - sb), 0.0, 0.0])
    with pytest.raises(ConfigError, match="too few to fit a exponential"):
        ot.fit_tail(np.array([4.0]), 3.5, "exponential")
    with pytest.raises(ConfigError, match="shape 'gauss'"):
        ot.fit_tail(np.arange(4.0, 10.0), 3.5, "gauss")


def test_shift_density_keeps_mass_and_has_the_closed_form_tail():
    rng = np.random.default_rng(2)
    t = ot.Tail("exponential", 3.5, 1.0, 1)
    u = t.sample(rng, 4000)
    toward = rng.random(u.size) < 0.5
    plane = ot.PlaneOutliers(u, toward, 10**6)
    fit = ot.fit_tail(u, float(np.quantile(u, ot.TAIL_QUANTILE)), "exponential")[0]
    scale, dx, bins = 0.2, 0.01, 600  # mrad per plane resolution; the lattice reaches 6 mrad = 30 sigma
    mass, over = ot.shift_density(plane, {"far": fit}, scale, dx, bins)
    assert mass.sum() + over == pytest.approx(1.0)
    assert mass[0] == pytest.approx(1 - toward.mean(), rel=0.01)
    # beyond the threshold the density is the fitted tail: P(x > X) = toward x w_tail x S(X / scale)
    x_cut = 12.0 * scale
    i = int(round(x_cut / dx))
    w_tail = np.mean(u > fit.u_t)
    expect = toward.mean() * w_tail * math.exp(-fit.par * (x_cut / scale - fit.u_t))
    assert mass[i + 1:].sum() + over == pytest.approx(expect, rel=0.05)
    # no sample (the closed form of the toys): the whole tail from u_t, half towards the box
    mass, over = ot.shift_density(ot.PlaneOutliers(np.zeros(0), np.zeros(0, bool), 1), {"far": t}, scale, dx, bins)
    assert mass[0] == pytest.approx(0.5) and mass.sum() + over == pytest.approx(1.0)


def _one_plane_pattern(room, s, gain, cap_reach=math.inf, weight=1000):
    used = np.array([True])
    reach = np.array([0.0, cap_reach])
    return ot.Pattern(used, np.array([gain]), reach, 1.0, np.array([room]), np.array([s]), weight)


def test_integral_of_one_plane_against_quadrature_and_the_chi2_cap():
    room, s, gain, sigma, rate, lam, u_t = 6.0, 0.5, 0.8, 0.1, 1e-3, 0.7, 3.5  # mrad, mrad/mm, mm
    tail = ot.Tail("exponential", u_t, lam, 1)
    pat = _one_plane_pattern(room, s, gain)
    res = ot.truth([pat], [tail], np.array([sigma]), np.array([rate]))
    a = gain * sigma  # mrad per plane resolution

    def integrand(u):
        return lam * math.exp(-lam * (u - u_t)) * stats.norm.sf((room - a * u) / s)

    closed = rate * 0.5 * quad_integrate.quad(integrand, u_t, 400, limit=400, points=[room / a])[0]
    assert res["by_outlier_planes"][0] == pytest.approx(stats.norm.sf(room / s))
    assert res["p_outliers"] == pytest.approx(closed, rel=0.02)
    # the chi2 cut: no shift beyond cap = cap_scale x reach passes
    cap = 0.5 * room
    capped = ot.truth([_one_plane_pattern(room, s, gain, cap_reach=cap)], [tail], np.array([sigma]), np.array([rate]))

    def capped_integrand(u):
        return integrand(u) if a * u <= cap else 0.0

    closed_cap = rate * 0.5 * quad_integrate.quad(capped_integrand, u_t, cap / a, limit=200)[0]
    assert capped["p_outliers"] == pytest.approx(closed_cap, rel=0.05)
    assert capped["p_outliers"] < 0.1 * res["p_outliers"]


def test_toys_central_scatters_around_the_closed_form_and_upper_covers_it():
    """A small version of benchmarks/outlier_tail_toys.py: 3 planes, exponential tails."""
    rng = np.random.default_rng(5)
    npl = 3
    gains = np.array([0.6, -0.9, 0.7])
    reach = np.full(1 << npl, math.inf)
    reach[0] = 0.0
    z = np.linspace(5.0, 9.0, 40)
    s = 0.5
    pat = ot.Pattern(np.ones(npl, bool), gains, reach, 1.0, z * s, np.full(z.size, s), 200_000)
    sigma = np.full(npl, 0.1)
    tails = [ot.Tail("exponential", 3.5, 1.0, 1)] * npl
    rates = np.full(npl, 2e-3)
    truth = ot.truth([pat], tails, sigma, rates)["p_outliers"]
    ratios = [ot.toy(rng, [pat], tails, sigma, rates, 3.5) for _ in range(12)]
    central = np.array([r["central"] for r in ratios]) / truth
    upper = np.array([r["upper"] for r in ratios]) / truth
    assert 0.5 < np.median(central) < 2.0
    assert np.sum(upper >= 1.0) >= 10  # 90 % upper value: at least 10 of 12 (binomial p = 0.9: P = 0.89)
    assert np.all(upper >= central)
