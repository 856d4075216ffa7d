"""The expectation of a strip from its neighbours (na64reco.calibration.strip_profile) and the
dead- and hot-strip search built on it (plane_efficiency.bad_strips), on toys: smooth beam
profiles (Gaussian spot on an even floor) with Poisson counts, as the beam pile-up muons make
them in the trackers (docs/calibration.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import poisson

from na64reco.calibration import strip_profile as sp
from na64reco.calibration.plane_efficiency import HOT_P_VALUE, bad_strips

#: the documented hot strip: a cluster on it in this fraction of the events (sim.digitize)
HOT_STRIP_OCCUPANCY = 0.2


def _reference_strip(x, y, top, f, eta_max) -> float:
    """One strip of the slow twin: neighbours at ``x`` (offset / X_SCALE) with counts ``y``."""
    prior = np.array([0.0, sp.SLOPE_PRIOR, sp.CURVATURE_PRIOR])

    def mu(b):
        return f + np.exp(np.minimum(np.polyval(b[::-1], x), eta_max))

    def nll(b):
        m = mu(b)
        e = m - f
        value = np.sum(m - y * np.log(m)) + 0.5 * np.sum(prior[1:b.size] * b[1:] ** 2)
        grad = np.array([np.sum((1 - y / m) * e * x**j) for j in range(b.size)]) + prior[:b.size] * b
        return value, grad

    def dev(b):
        m = mu(b)
        return 2 * np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / m), 0.0) - (y - m))

    def fit(start):
        return minimize(nll, start, jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 10000}).x

    best = fit([np.log(max(y.mean() - f, 0.0) + 0.5)])
    best_dev, b = dev(best), best
    for _ in range(top):  # orders 1 .. top
        b = fit(np.append(b, 0.0))
        if best_dev - dev(b) > sp.LR_THRESHOLD:
            best, best_dev = b, dev(b)
    return f + np.exp(min(best[0], eta_max))


def _reference(counts, masked) -> np.ndarray:
    """Slow twin of local_expectation: per strip, scipy minimisation of the penalised Poisson
    likelihood of each allowed order, a term kept where it lowers the deviance by > LR_THRESHOLD."""
    y_all = np.asarray(counts, float)
    n = y_all.size
    f = sp.profile_floor(y_all, masked)
    per_side = sp.HALF_WIDTH - sp.GAP
    eta_max = np.log(y_all.max() + 1.0) + sp.EXP_HEADROOM
    out = np.full(n, np.nan)
    for s in range(n):
        # on each side the nearest per_side usable strips beyond the gap, within the reach
        sides = [[d for d in range(sp.GAP + 1, sp.MAX_REACH + 1) if 0 <= s + sign * d < n
                  and not masked[s + sign * d]][:per_side] for sign in (-1, 1)]
        offsets = np.array([-d for d in sides[0]] + sides[1], dtype=int)
        if offsets.size:
            left, right = len(sides[0]), len(sides[1])
            top = 2 if (left >= 2 and right >= 2) else 1 if left + right >= 3 else 0
            out[s] = _reference_strip(offsets / sp.X_SCALE, y_all[s + offsets], top, f, eta_max)
    return out


def _profile(rng, kind: str) -> np.ndarray:
    """Expected off-track (or all-hit) counts of one plane: a Gaussian beam spot on a floor,
    over the ranges the closure runs see (6 000 - 50 000 muons, pile-up 0.44 per event)."""
    if kind == "straw":  # 64 tubes of 6 mm, spot sigma 9-15 mm
        n, sigma, peak, floor = 64, rng.uniform(1.2, 2.5), rng.uniform(20, 3000), rng.uniform(0.2, 5)
    elif kind == "MM":  # 320 strips of 0.25 mm
        n, sigma, peak, floor = 320, rng.uniform(20, 80), rng.uniform(1, 300), rng.uniform(0.05, 2)
    else:  # GEM, 256 strips of 0.4 mm
        n, sigma, peak, floor = 256, rng.uniform(15, 50), rng.uniform(1, 300), rng.uniform(0.05, 2)
    centre = rng.uniform(0.4, 0.6) * n
    s = np.arange(n)
    return floor + peak * np.exp(-0.5 * ((s - centre) / sigma) ** 2)


def test_kernel_agrees_with_its_reference_twin():
    rng = np.random.default_rng(11)
    for kind, n in (("straw", 64), ("MM", 96)):
        c = rng.poisson(_profile(rng, kind)[:n])
        masked = np.zeros(c.size, bool)
        masked[rng.choice(c.size, 3, replace=False)] = True
        np.testing.assert_allclose(sp.local_expectation(c, masked), _reference(c, masked), rtol=2e-4)


def test_closed_forms():
    # flat counts: the Poisson mean of the usable neighbours, exactly (no term asked for)
    c = np.full(40, 7)
    np.testing.assert_allclose(sp.local_expectation(c), 7.0, rtol=1e-5)  # e -> 0 on the floor
    # a Gaussian spot on a known floor is f + exp(quadratic): its value at every strip
    s = np.arange(64)
    lam = 2.0 + 1000.0 * np.exp(-0.5 * ((s - 31.3) / 1.5) ** 2)
    e = sp.local_expectation(lam, floor=2.0)
    core = lam > 20
    np.testing.assert_allclose(e[core], lam[core], rtol=0.05)  # the weak priors on slope and curvature
    assert np.all(e > 0.9 * lam)  # nowhere below: neither a false hot nor a false dead strip
    # no usable neighbour: NaN; the floor is the lowest 13-strip mean
    assert np.isnan(sp.local_expectation(np.array([5, 6]))).all()
    assert sp.profile_floor(lam) == pytest.approx(2.0, rel=1e-3)


def _flagged(rng, kind, n_planes):
    """Planes with a false hot strip, with a false dead strip (no bad strip injected)."""
    hot = dead = 0
    for _ in range(n_planes):
        d, h, _ = bad_strips(rng.poisson(_profile(rng, kind)))
        hot += bool(h)
        dead += bool(d)
    return hot, dead


@pytest.mark.parametrize("kind", ["straw", "MM", "GEM"])
def test_no_false_bad_strips_on_beam_profiles(kind):
    """Smooth beam profiles + Poisson: planes with a false hot strip at most at the design rate
    HOT_P_VALUE (trials over the strips included): 400 planes, at most 3 (beyond it: 0.08 %
    for Poisson(0.4)).  The expectation of before (median of the neighbours s+-2..6)
    calls the beam core of most straw planes hot."""
    n_planes = 400
    hot, dead = _flagged(np.random.default_rng({"straw": 1, "MM": 2, "GEM": 3}[kind]), kind, n_planes)
    assert poisson.sf(hot - 1, HOT_P_VALUE * n_planes) > 1e-3, hot
    assert dead <= 5, dead


@pytest.mark.parametrize("kind", ["straw", "MM", "GEM"])
def test_injected_hot_and_dead_strips_found(kind):
    """A hot strip of the documented strength (a cluster in 20 % of the events, here of the
    6 000 events of the closure test) anywhere on the plane, beam core included, on the
    off-track occupancy of the pile-up muons (at most 5 % of the events per straw tube at the
    core, 1 % per MM/GEM strip); and a dead strip where the all-hit occupancy expects >= 80
    hits and its neighbours >= 40 (not at the foot of a steep straw flank: see
    docs/calibration.md): found, and only they."""
    rng = np.random.default_rng({"straw": 4, "MM": 5, "GEM": 6}[kind])
    n_events, n_planes = 6000, 40
    core = {"straw": 0.05, "MM": 0.01, "GEM": 0.01}[kind] * n_events
    found_hot = found_dead = tried_dead = 0
    for _ in range(n_planes):
        lam = _profile(rng, kind)
        off = rng.poisson(lam * min(1.0, core / lam.max()))
        h = int(rng.integers(0, lam.size))
        off[h] += rng.binomial(n_events, HOT_STRIP_OCCUPANCY)
        found_hot += bad_strips(off)[1] == [h]
        occ = rng.poisson(lam)
        lit = np.flatnonzero((lam > 80) & (np.roll(lam, 1) > 40) & (np.roll(lam, -1) > 40))
        d = int(rng.choice(lit)) if lit.size else -1
        if d >= 0:
            occ[d] = 0
            tried_dead += 1
        found_dead += bad_strips(occ)[0] == ([d] if d >= 0 else [])
    assert found_hot == n_planes
    assert found_dead == n_planes and tried_dead >= 10
