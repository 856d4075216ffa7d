"""Forced tracker noise (na64reco.sim.forced_noise): exact biased sampling of noise configurations.

E[g] = sum_m Poisson(m; Lambda_R) E[g | m noise clusters in R] must hold for any event
quantity g: checked against direct simulation at raised noise (where both sides are
countable), at the level of the digitised points and of the reconstruction; the combination
(na64reco.background.forced_noise_ratio) against closed forms.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from forced_checks import assert_combination_matches_direct

from na64reco.background.estimates import forced_noise_ratio
from na64reco.background.fake_kicks import bend_region, count
from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError, NA64Error
from na64reco.geometry import load_setup
from na64reco.reco.tracking.tracks import hit_time_windows
from na64reco.selection.schema import load_selection
from na64reco.sim.digitize import PlaneTables, tracker_points
from na64reco.sim.forced_noise import ForcedNoise, resolve
from na64reco.sim.generate import simulate

RUN = 1  # 2022 period


@pytest.fixture(scope="module")
def setup_cond():
    setup = load_setup("na64mu", run=RUN)
    return setup, load_conditions(setup, RUN)


def _region(setup, tables, windows, m):
    return resolve(ForcedNoise.of(windows, m), setup, tables.noise_hits, tables.noise_t_first, tables.noise_t_last)


def _noise_points(rng, tables, n, region=None):
    empty = np.zeros(0)
    return tracker_points(rng, tables, n, empty.astype(np.int64), empty.astype(np.int64), empty, empty, region)


def test_region_is_the_bend_planes_in_their_noise_windows(setup_cond):
    setup, cond = setup_cond
    reg = bend_region(setup, cond)
    assert set(reg) == {"GEM1X", "MM5X", "MM6X", "ST1X", "GEM2X"}  # 2022 bend view of MS2
    assert set(bend_region(setup, cond, sides=("downstream",))) == {"MM6X", "ST1X", "GEM2X"}
    lo, hi = hit_time_windows(setup, cond, 3.0)
    for p in setup.planes:
        if p.name in reg:
            a, b = reg[p.name]
            w = setup.readout.straw_noise_window if p.type == "straw" else setup.readout.apv_noise_window
            assert w[0] <= a < b <= w[1]
            assert a <= max(lo[p.index], w[0]) and b >= min(hi[p.index], w[1])  # covers the in-time window


def test_forced_points_exactly_m_per_event_in_the_region(setup_cond):
    setup, cond = setup_cond
    tables = PlaneTables.of(setup, cond)
    windows = bend_region(setup, cond)
    n, m = 40000, 3
    region = _region(setup, tables, windows, m)
    ev, plane, u, t = _noise_points(np.random.default_rng(1), tables, n, region)
    inside = np.isfinite(region.t_first[plane]) & (t >= region.t_first[plane]) & (t <= region.t_last[plane])
    assert np.all(np.bincount(ev[inside], minlength=n) == m)
    # planes in proportion to their rate in R (chi2 with 2 dof, P(chi2 > 13.8) = 1e-3)
    k = np.bincount(plane[inside], minlength=len(setup.planes))[region.plane]
    expect = n * m * region.rate / region.rate.sum()
    assert np.sum((k - expect) ** 2 / expect) < 13.8
    # outside R: the nominal noise, same mean per plane (Poisson errors, 5 sigma)
    out_nominal = tables.noise_hits * n
    out_nominal[region.plane] -= region.rate * n
    k_out = np.bincount(plane[~inside], minlength=len(setup.planes))
    hot = np.isin(np.arange(len(setup.planes)), tables.hot_plane)
    ok = ~hot
    assert np.all(np.abs(k_out[ok] - out_nominal[ok]) < 5 * np.sqrt(out_nominal[ok]) + 1)


def test_decomposition_equals_direct_simulation_of_the_points(setup_cond):
    """g = at least two noise clusters of R within 10 mm of the plane centre, at raised noise:
    counted directly and as sum_m P(m) G_m."""
    setup, cond = setup_cond
    tables = PlaneTables.of(setup, cond)
    windows = bend_region(setup, cond)
    k = 2.5 / _region(setup, tables, windows, 0).expected  # raised noise: 2.5 clusters in R per event
    tables = dataclasses.replace(tables, noise_hits=tables.noise_hits * k)
    n = 40000

    def g(region0, pts):
        ev, plane, u, t = pts
        inside = np.isfinite(region0.t_first[plane]) & (t >= region0.t_first[plane]) & (t <= region0.t_last[plane])
        near = inside & (np.abs(u) < 10.0)
        return np.bincount(ev[near], minlength=n) >= 2

    region0 = _region(setup, tables, windows, 0)
    direct = g(region0, _noise_points(np.random.default_rng(2), tables, n)).mean()
    lam = region0.expected
    est = var = 0.0
    assert 1 < lam < 4
    m_max = int(lam + 6 * math.sqrt(lam)) + 1  # P(m > m_max) < 1e-5
    for m in range(m_max + 1):
        p = math.exp(-lam) * lam**m / math.factorial(m)
        gm = g(region0, _noise_points(np.random.default_rng(100 + m), tables, n, _region(setup, tables, windows, m)))
        est += p * gm.mean()
        var += p * p * gm.mean() * (1 - gm.mean()) / n
    sigma = math.sqrt(direct * (1 - direct) / n + var)
    assert direct > 0.01
    assert abs(est - direct) < 4 * sigma, (est, direct, sigma)


def test_decomposition_equals_direct_simulation_after_reconstruction(setup_cond, tmp_path):
    """The tracked fraction of beam muons at raised tracker noise (2022: every plane required,
    so noise matters): direct vs the forced-noise combination, within 4 sigma."""
    setup, cond = setup_cond
    sel = load_selection("na64mu_invisible")
    windows = bend_region(setup, cond)
    tables = PlaneTables.of(setup, cond)
    k = 3.0 / _region(setup, tables, windows, 0).expected  # raised noise: 3 clusters in R per event
    noisy = dataclasses.replace(setup, planes=tuple(dataclasses.replace(p, noise_hits=p.noise_hits * k)
                                                    for p in setup.planes))
    n = 4000
    simulate(noisy, n, 11, RUN, tmp_path / "direct.root", process="beam", trigger="calibration")
    d = count(tmp_path / "direct.root", noisy, cond, sel)
    tables = PlaneTables.of(noisy, cond)
    lam = _region(noisy, tables, windows, 0).expected
    assert 2 < lam < 6
    rows = []
    m_max = int(lam + 5 * math.sqrt(lam)) + 1
    for m in range(m_max + 1):
        f = tmp_path / f"m{m}.root"
        simulate(noisy, n, 20 + m, RUN, f, process="beam", trigger="calibration",
                 forced_noise=ForcedNoise.of(windows, m))
        c = count(f, noisy, cond, sel)
        rows.append({"count": m, "events": c["hard"], "numerator": c["tracked"], "denominator": c["hard"]})
    res = forced_noise_ratio(rows, lam)
    assert_combination_matches_direct(res, d)


def test_forced_noise_is_recorded_and_nominal_runs_are_unchanged(setup_cond, tmp_path):
    setup, cond = setup_cond
    windows = bend_region(setup, cond)
    simulate(setup, 300, 5, RUN, tmp_path / "a.root", process="beam", trigger="calibration")
    simulate(setup, 300, 5, RUN, tmp_path / "b.root", process="beam", trigger="calibration",
                 forced_noise=ForcedNoise.of(windows, 2))
    from na64reco.io.raw import open_raw

    meta = open_raw(tmp_path / "b.root").meta["simulation"]["forced_noise"]
    assert meta["count"] == 2 and set(meta["windows"]) == set(windows) and 0 < meta["expected"] < 1
    assert "forced_noise" not in open_raw(tmp_path / "a.root").meta["simulation"]


def test_bad_regions_are_named(setup_cond, tmp_path):
    setup, cond = setup_cond
    with pytest.raises(ConfigError, match="unknown plane 'MM9X'"):
        simulate(setup, 10, 1, RUN, tmp_path / "x.root", forced_noise=ForcedNoise.of({"MM9X": (0, 10)}, 1))
    with pytest.raises(ConfigError, match=r"window \[-500, 10\] ns of plane MM6X is not inside"):
        simulate(setup, 10, 1, RUN, tmp_path / "x.root", forced_noise=ForcedNoise.of({"MM6X": (-500, 10)}, 1))
    with pytest.raises(ConfigError, match="count must be an integer >= 0"):
        ForcedNoise.of({"MM6X": (0, 10)}, -1)


def test_ratio_closed_form_and_errors():
    """G_m = c C(m, 2) (a fake needs two clusters in R) -> E[g] = c Lambda^2 / 2 exactly."""
    lam, c, n, den = 0.4, 1e-4, 10**9, 0.25
    rows = [{"count": m, "events": n, "numerator": round(c * math.comb(m, 2) * n), "denominator": round(den * n)}
            for m in range(14)]
    res = forced_noise_ratio(rows, lam)
    assert res["ratio"] == pytest.approx(c * lam**2 / 2 / den, rel=1e-6)
    assert res["truncation"] < 1e-12 and res["upper"] > res["ratio"]
    # the error against toys: fake and tracked counts drawn per sample (multinomial)
    rng = np.random.default_rng(3)
    n = 200000
    toys, errs = [], []
    for _ in range(300):
        rows_t = []
        for m in range(8):
            a = 2e-3 * math.comb(m, 2)
            k = rng.multinomial(n, [a, den - a, 1 - den])
            rows_t.append({"count": m, "events": n, "numerator": int(k[0]), "denominator": int(k[0] + k[1])})
        r = forced_noise_ratio(rows_t, lam)
        toys.append(r["ratio"])
        errs.append(r["error"])
    assert np.std(toys) == pytest.approx(np.mean(errs), rel=0.15)
    assert np.mean(toys) == pytest.approx(2e-3 * lam**2 / 2 / den, abs=3 * np.std(toys) / math.sqrt(300))
    with pytest.raises(NA64Error, match="without gaps"):
        forced_noise_ratio(rows[:3] + rows[4:], lam)
    with pytest.raises(NA64Error, match="must be > 0"):
        forced_noise_ratio(rows, 0.0)
