"""Highland (na64reco.material) against the PDG formula, and the track-match chi2 at the
ECAL front against the simulated distribution (na64reco.sim, beam and signal muons)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2 as chi2_dist

from na64reco import constants, units
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.material import highland, thick_scatterer_offset_sigma
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.sim.generate import simulate


def test_highland_matches_the_pdg_formula():
    # PDG 2024 eq. 34.16 written out by hand for a 10 GeV muon through 1 % X0
    p, m, x = 10_000.0, constants.MUON_MASS, 0.01
    e = np.sqrt(p**2 + m**2)
    beta = p / e
    expected = 13.6 / (beta * p) * np.sqrt(x) * (1 + 0.038 * np.log(x / beta**2))
    assert highland(p, m, x) == pytest.approx(expected, rel=1e-12)
    # arrays broadcast, no material gives 0, 1/p scaling for beta = 1
    th = highland(np.array([1e5, 2e5]), m, 40.0)
    assert th[0] / th[1] == pytest.approx(2.0, rel=1e-6)
    assert highland(1e5, m, 0.0) == 0.0
    assert np.all(highland(np.array([1e4, 1e5]), m, np.array([0.0, 1.0])) == [0.0, highland(1e5, m, 1.0)])


def test_thick_scatterer_offset_matches_a_toy():
    rng = np.random.default_rng(1)
    th0, L, n = 2e-3, 500.0, 200_000
    z1, z2 = rng.standard_normal((2, n))
    y, t = L * th0 * (z1 / np.sqrt(12) + z2 / 2), th0 * z2  # PDG eq. 34.19-34.20
    s = np.std(y - t * L)
    assert s == pytest.approx(thick_scatterer_offset_sigma(th0, L), rel=5 / np.sqrt(2 * n))


def test_sim_and_reco_share_one_highland():
    import na64reco.reco.tracking.resolution as res
    import na64reco.sim.tracks as simtracks

    assert simtracks.highland is highland and res.highland is highland


def _no_recoil(rng, p_after, x, e0, mass, lepton_mass):
    n = np.size(p_after)
    return np.zeros(n), np.zeros(n)


_SAMPLES: dict = {}  # name -> (name, chi2): each sample simulated once per test session


def _match_chi2(tmp_path_factory, name):
    if name not in _SAMPLES:
        _SAMPLES[name] = _simulated_match_chi2(tmp_path_factory, name)
    return _SAMPLES[name]


def _simulated_match_chi2(tmp_path_factory, name):
    # the 2023-like period (plane efficiencies 0.95-0.97): with the 2022 planes (0.90) the beam
    # tail beyond 20 is 1.4 % (1.7 % before the vertex constraint in the search): wrong hits
    # on missing planes, not the variance this test checks (docs/periods.md)
    setup = load_setup("na64mu", run=10001)
    path = tmp_path_factory.mktemp("match") / f"{name}.root"
    process = "beam" if name == "beam" else "signal"
    with pytest.MonkeyPatch.context() as mp:
        if name == "signal_without_recoil":  # the muon's own kink at the Z' emission left out
            mp.setattr("na64reco.sim.transport.recoil_slopes", _no_recoil)
        simulate(setup, 4000, seed=7, run=10001, output=path, process=process, trigger="calibration",
                 mass=0.1 * units.GeV if process == "signal" else None)
    raw = open_raw(path)
    out = reconstruct_tracks(raw.events(), setup, load_conditions(setup, raw.run))
    both = np.isfinite(out["out_x"] - out["in_x"]) & np.isfinite(out["out_y"] - out["in_y"])
    return name, out["track_match_chi2"][both]


@pytest.fixture(scope="module", params=["beam", "signal_without_recoil"])
def matched(request, tmp_path_factory):
    return _match_chi2(tmp_path_factory, request.param)


def test_track_match_chi2_is_chi2_with_two_dof(matched):
    """Quantiles of the simulated chi2 against chi2(2 dof): the resolution model (points and
    multiple scattering) for beam muons and for the softer signal muons (their emission kink
    left out: it is physics, not resolution).  Tolerance: 4 standard errors of the sample
    quantile plus a model allowance: 8 % for the beam (median 0.97, 90 % quantile 1.04 of chi2(2)'s on
    3461 muons), 20 % for the signal (0.87, 0.93: the model scatters the whole ECAL at p_out, the muon
    crossed the part before its vertex at p_in).  Before stop 48 the beam's median was at 0.71 (an
    allowance of 25 %): kinks inside the incoming view counted as extrapolation errors.  The tail beyond
    the cut value 20 is below 1 %."""
    name, c = matched
    n = len(c)
    assert n > 1500, name
    allowance = {"beam": 0.08, "signal_without_recoil": 0.20}[name]
    for q in (0.5, 0.9):
        x_q = chi2_dist.ppf(q, 2)
        stat = np.sqrt(q * (1 - q) / n) / chi2_dist.pdf(x_q, 2)
        assert abs(np.quantile(c, q) - x_q) < 4 * stat + allowance * x_q, (name, q, np.quantile(c, q), x_q)
    assert np.mean(c > 20) < 0.01, name


def test_the_emission_kink_widens_the_signal_match_and_the_cut_keeps_it(tmp_path_factory):
    """With its recoil (the WW emission angle, ~90 MeV of p_T at 100 MeV) the signal muon's match
    chi2 is wider than without, and the cut at 20
    still keeps > 97 % of it (1.4 % beyond it measured on this sample; docs/cutflows.md: 0.7 %
    of the signal in the box)."""
    _, plain = _match_chi2(tmp_path_factory, "signal_without_recoil")
    _, kinked = _match_chi2(tmp_path_factory, "signal")
    assert np.quantile(kinked, 0.9) > 1.2 * np.quantile(plain, 0.9)
    assert np.mean(kinked > 20) < 0.03


@pytest.mark.parametrize("role,coord", [("in", "x"), ("in", "y"), ("out", "x"), ("out", "y")])
def test_extrapolation_variance_matches_a_toy_of_its_model(role, coord):
    """Points with their resolution plus kinks at the model's scatterers, fitted by weighted least
    squares (numpy's lstsq here) and extrapolated to the ECAL front: the spread of (extrapolated - true
    position) against extrapolation_variance.  Before stop 48 a kink inside the incoming view was counted
    as an error although the true position at the ECAL moves with it (the in-x variance was 0.0275 mm^2
    for 0.0059; the beam's match chi2 median at 0.71 of chi2(2)'s)."""
    from na64reco.reco.tracking.config import load_tracking_config
    from na64reco.reco.tracking.resolution import _material_between, extrapolation_variance, scatterers
    from na64reco.reco.tracking.tracks import make_views
    from na64reco.units import MM_PER_M

    setup = load_setup("na64mu", run=10001)
    view = next(v for v in make_views(setup, load_tracking_config(setup)) if v.role == role and v.coord == coord)
    z_e = setup.detector("ECAL").z
    p = 160 * units.GeV
    downstream = role == "in"
    zi = np.array([setup.planes[i].z for i in view.planes])
    sig = np.array([setup.planes[i].resolution for i in view.planes])
    lo, hi = (zi.max(), z_e) if downstream else (z_e, zi.min())
    material = scatterers(setup, zi.min(), zi.max(), p) + _material_between(setup, lo, hi, p)
    zs = np.array([m[0] for m in material])
    th = np.array([m[1] for m in material])
    rng = np.random.default_rng(48)
    n = 40_000
    kinks = rng.standard_normal((n, zs.size)) * th
    points = kinks @ np.clip(zi[None, :] - zs[:, None], 0, None) + rng.standard_normal((n, zi.size)) * sig
    truth = kinks @ np.clip(z_e - zs, 0, None)
    dz = np.asarray(view.dz)
    cols = [np.ones_like(dz), dz] + ([np.where(view.down, -dz, 0.0)] if view.bend else [])
    A = np.stack(cols, axis=1) / sig[:, None]
    par = np.linalg.lstsq(A, (points / sig).T, rcond=None)[0].T
    dz_e = (z_e - view.z_magnet) / MM_PER_M
    g = np.array([1.0, dz_e, -dz_e if downstream else 0.0])[: A.shape[1]]
    spread = np.var(par @ g - truth)
    expected = extrapolation_variance(setup, view, z_e, p, downstream=downstream)
    assert spread == pytest.approx(expected, rel=5 * np.sqrt(2 / n))


def test_the_air_of_a_gap_scatters_as_one_highland_layer_spread_over_it():
    """The air between two planes: its sub-layers' angles add up (in quadrature) to Highland's angle of
    the whole gap, and they lie inside it (an angle per sub-layer of theta / 16 instead of theta / 4 passed
    every test: mutation review, stop 48)."""
    from na64reco import constants
    from na64reco.material import highland
    from na64reco.reco.tracking.resolution import scatterers

    setup = load_setup("na64mu")
    p = 80 * units.GeV
    z0, z1 = 6010.0, 14000.0  # MM2Y to MM3X: the MS1 gap, no plane inside
    assert not [pl for pl in setup.planes if z0 < pl.z < z1]
    air = [(z, th) for z, th in scatterers(setup, z0, z1, p) if z != z0]  # (the plane at z0 left out)
    whole = highland(p, constants.MUON_MASS, setup.readout.air_x0_per_metre * (z1 - z0) / 1000.0)
    assert sum(th**2 for _, th in air) == pytest.approx(whole**2, rel=1e-12)
    zs = np.array([z for z, _ in air])
    assert np.all((zs > z0) & (zs < z1)) and np.ptp(zs) > 0.8 * (z1 - z0)
