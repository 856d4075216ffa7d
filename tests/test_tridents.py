"""Muon tridents (na64reco.physics.tridents, na64reco.sim.tridents): the spectral density against its
closed form, the timelike cross section's hard v spectrum, the spacelike cross section (its Phi against
Kelner, Kokoulin and Petrukhin's written form, its rho integral against adaptive quadrature, its kinematic
limits and its sampled v and rho against the density), the forced weight against the two parts' cross
sections, the share of timelike events in a forced sample, the pair's invariant mass and energy, the
spacelike photon's k_T against its density, and the setup's mixture rate against the model."""

from __future__ import annotations

import math

import hepunits as u
import numpy as np
import pytest
from scipy import integrate

from na64reco import constants
from na64reco.errors import NA64Error
from na64reco.geometry import load_setup
from na64reco.physics import tridents as phys_tridents
from na64reco.physics.muon_losses import LEAD, energy_loss_b, pair_phi
from na64reco.sim import tridents
from na64reco.sim.params import load_sim_params

E0 = 160 * u.GeV
M_MU = constants.MUON_MASS


@pytest.fixture(scope="module")
def params():
    return load_sim_params(load_setup("na64mu"))


def test_spectral_density_integral_against_its_closed_form():
    """Int_{4 m^2}^{s} dP/dM^2 dM^2 = alpha / (3 pi) [ln(s / m^2) - 5/3] + O(m^2 / s) (the muon loop's
    vacuum polarisation)."""
    s = (20 * u.GeV) ** 2
    num = integrate.quad(lambda lm2: float(phys_tridents.spectral_density(math.sqrt(math.exp(lm2)))) * math.exp(lm2),
                         math.log(4 * M_MU**2), math.log(s), limit=200)[0]
    closed = constants.FINE_STRUCTURE / (3 * math.pi) * (math.log(s / M_MU**2) - 5.0 / 3.0)
    assert num == pytest.approx(closed, rel=2e-3)
    assert phys_tridents.spectral_density(2 * M_MU * 0.999) == 0.0


def test_timelike_spectrum_is_hard():
    """At 160 GeV in lead: ~2.9e-7 timelike tridents per muon crossing 40 X0, 88 % with v > 0.45 and
    38 % with v > 0.9 (the review's ~85 % above 0.5 and ~40 % above 0.9)."""
    atoms = LEAD.per_gram * constants.NA64_ECAL_DEPTH_X0 * constants.X0_LEAD / (u.g / u.cm2)  # 40 X0 of lead
    total = phys_tridents.timelike_sigma(E0) * atoms
    assert 2.0e-7 < total < 4.0e-7
    assert phys_tridents.timelike_sigma(E0, 0.45) / phys_tridents.timelike_sigma(E0) == pytest.approx(0.88, abs=0.02)
    assert phys_tridents.timelike_sigma(E0, 0.9) / phys_tridents.timelike_sigma(E0) == pytest.approx(0.38, abs=0.03)


def test_forced_weight_and_the_timelike_share(params):
    """Every forced trident carries the probability of a trident in the forced region: the spacelike and the
    timelike cross sections above v_bias times the ECAL's lead nuclei per mm2; the timelike events (drawn
    from the mass table: a pair mass above 2 m_mu by construction, and the only pairs with an isotropic
    decay) are their share of the forced rate, checked through v > 0.6 where each part's share is known."""
    rng = np.random.default_rng(1)
    n = 40_000
    p = np.full(n, E0)
    v, legs, recoil, w = tridents.draw(rng, p, E0, params, biased=True)
    r = tridents.rates(params, E0)
    atoms = LEAD.per_gram * params.ecal_lead_g_cm2
    forced = (phys_tridents.spacelike_sigma(E0, params.bias_v_min)
              + phys_tridents.timelike_sigma(E0, params.bias_v_min)) * atoms
    assert r.forced == pytest.approx(forced, rel=1e-12)
    assert np.all(w == pytest.approx(forced, rel=1e-12))
    assert np.all(v >= params.bias_v_min)
    expected = (phys_tridents.spacelike_sigma(E0, 0.6) + phys_tridents.timelike_sigma(E0, 0.6)) * atoms / r.forced
    frac = float(np.mean(v > 0.6))
    assert frac == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / n) + 0.003)


def test_spacelike_phi_is_the_written_form():
    """Phi_e + Phi_mu of the e+e- formula with the pair's mass set to the muon's is Kelner, Kokoulin and
    Petrukhin's muon-pair Phi as they write it."""
    rng = np.random.default_rng(5)
    v = rng.uniform(0.003, 0.99, 2000)
    rho = rng.uniform(-1, 1, 2000) * (1 - 1e-6)
    r2 = rho**2
    beta = v**2 / (2 * (1 - v))
    xi = v**2 * (1 - r2) / (4 * (1 - v))
    phi_e, phi_mu = pair_phi(r2, beta, xi)
    written = (((2 + r2) * (1 + beta) + xi * (3 + r2)) * np.log(1 + 1 / xi) - 1 - 3 * r2 + beta * (1 - 2 * r2)
               + ((1 + r2) * (1 + 1.5 * beta) - (1 + 2 * beta) * (1 - r2) / xi) * np.log(1 + xi))
    np.testing.assert_allclose(phi_e + phi_mu, written, rtol=1e-9, atol=1e-9)


def test_spacelike_rho_integral_and_limits():
    """The Gauss-Legendre rho integral against scipy's adaptive quadrature (1e-4) at several v (over both
    signs of rho: twice [0, rho_max]); zero
    below v = 2 m_mu / E and above 1 - m_mu / E; the integrand is even in rho and zero beyond rho_max."""
    pref = 2 / (3 * math.pi) * 82**2 * (constants.FINE_STRUCTURE * constants.CLASSICAL_ELECTRON_RADIUS
                                        * constants.ELECTRON_MASS / M_MU) ** 2
    pref *= 2  # the integral over [-rho_max, rho_max] of an even integrand
    for v in (0.005, 0.05, 0.3, 0.7, 0.97):
        rho_max = 1 - 2 * M_MU / (v * E0)
        quad = integrate.quad(lambda r, v=v: float(phys_tridents.spacelike_rho_integrand(LEAD, E0, v, r)), 0, rho_max,
                              limit=400, epsabs=0)[0]
        assert phys_tridents.spacelike_dsigma(E0, v)[0] == pytest.approx(pref * (1 - v) / v * quad, rel=1e-4), v
    v_lo, v_hi = 2 * M_MU / E0, 1 - M_MU / E0
    assert np.all(phys_tridents.spacelike_dsigma(E0, [v_lo * 0.99, v_hi * 1.0001]) == 0.0)
    assert np.all(phys_tridents.spacelike_dsigma(E0, [v_lo * 1.5, 0.5, v_hi * 0.999]) > 0.0)
    r = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(phys_tridents.spacelike_rho_integrand(LEAD, E0, 0.3, r),
                               phys_tridents.spacelike_rho_integrand(LEAD, E0, 0.3, -r), rtol=1e-14)
    assert phys_tridents.spacelike_rho_integrand(LEAD, E0, 0.01, 1 - M_MU / (0.01 * E0)) == 0.0


def test_spacelike_rate_against_the_toy_it_replaced():
    """Per muon crossing the ECAL's 40 X0 of lead at 160 GeV: 9.1e-6 spacelike tridents above v = 0.02
    (the toy assumed 1e-5 on 0.02-0.6), soft: 10 % of them above v = 0.45; their energy loss is 7.8e-4 of
    the e+e- pairs' (b_mumu / b_ee)."""
    atoms = LEAD.per_gram * constants.NA64_ECAL_DEPTH_X0 * constants.X0_LEAD / (u.g / u.cm2)
    assert 8.0e-6 < phys_tridents.spacelike_sigma(E0, 0.02) * atoms < 10.0e-6
    share = phys_tridents.spacelike_sigma(E0, 0.45) / phys_tridents.spacelike_sigma(E0, 0.02)
    assert share == pytest.approx(0.10, abs=0.01)
    v = np.exp(np.linspace(math.log(2 * M_MU / E0 * 1.001), math.log(1 - M_MU / E0 * 1.001), 3001))
    f = phys_tridents.spacelike_dsigma(E0, v) * v * v
    b_mumu = float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(v))))
    b_ee = energy_loss_b(LEAD, E0, "pair") / LEAD.per_gram
    assert b_mumu / b_ee == pytest.approx(7.8e-4, rel=0.05)


@pytest.mark.parametrize("energy_gev", [50, 160, 300])
def test_spacelike_normalisation_against_equivalent_photons(energy_gev):
    """At small v the spacelike pair is the muon's nearly real photon converting in the nucleus' field: d sigma
    / dv = n(v) sigma_BH(v E), with the photon flux (alpha / pi v) [(1 - v + v^2/2) ln(Q2max / Q2min) - (1 - v)],
    Q2min = m^2 v^2 / (1 - v) and Q2max = 4 m^2 (the pair's mass scale; the estimate's own uncertainty from
    that choice is ~25 %).  The formula meets it within 15 % at v = 0.03-0.2 from 50 to 300 GeV (4 % at
    160 GeV); with the rho integral over [0, rho_max] only it would be half of it."""
    energy = energy_gev * u.GeV
    for v in (0.03, 0.05, 0.1, 0.2):
        ratio = phys_tridents.spacelike_dsigma(energy, v)[0] / phys_tridents.equivalent_photon_dsigma(energy, v)
        assert ratio == pytest.approx(1.0, abs=0.15), (energy_gev, v, ratio)


def test_bethe_heitler_reference_values():
    """The reference gamma Pb -> mu mu cross section: 0 below the threshold 4 m_mu (the parametrisation's),
    rising with the photon energy towards its saturation; 0.27 / 0.42 / 0.58 mb at 8 / 16 / 32 GeV."""
    mb = 1e-25  # mm2
    assert phys_tridents.bethe_heitler_mumu(4 * M_MU * 0.99) == 0.0
    values = [phys_tridents.bethe_heitler_mumu(e * u.GeV) / mb for e in (8, 16, 32, 1000)]
    assert values[:3] == pytest.approx([0.273, 0.418, 0.584], abs=0.002)
    assert values[0] < values[1] < values[2] < values[3] < 2.0


def test_sampled_spacelike_v_and_rho_follow_the_density():
    """v drawn above 0.1 against d sigma / dv in 10 log bins, and |rho| at v ~ 0.3 against the rho
    integrand in 8 bins: chi2 / ndf within statistics."""
    rng = np.random.default_rng(7)
    n = 200_000
    v, rho = phys_tridents.sample_spacelike(rng, n, E0, 0.1)
    edges = np.exp(np.linspace(math.log(0.1), math.log(1 - M_MU / E0), 11))
    counts = np.histogram(v, edges)[0]
    expect = np.array([integrate.quad(lambda x: float(phys_tridents.spacelike_dsigma(E0, x)[0]), a, b,
                                      limit=200)[0] for a, b in zip(edges[:-1], edges[1:], strict=True)])
    expect = expect / expect.sum() * n
    chi2 = float(np.sum((counts - expect) ** 2 / expect))
    assert chi2 < 10 + 5 * math.sqrt(2 * 10), chi2
    sel = np.abs(v - 0.3) < 0.01
    r = np.abs(rho[sel])
    rmax = 1 - 2 * M_MU / (0.3 * E0)
    edges = np.linspace(0, rmax, 9)
    counts = np.histogram(r, edges)[0]
    expect = np.array([integrate.quad(lambda x: float(phys_tridents.spacelike_rho_integrand(LEAD, E0, 0.3, x)), a, b)[0]
                       for a, b in zip(edges[:-1], edges[1:], strict=True)])
    expect = expect / expect.sum() * sel.sum()
    chi2 = float(np.sum((counts - expect) ** 2 / expect))
    assert sel.sum() > 2000 and chi2 < 8 + 5 * math.sqrt(2 * 8), chi2
    assert np.mean(rho > 0) == pytest.approx(0.5, abs=5 * math.sqrt(0.25 / n))


def test_spacelike_photon_kt_follows_its_density():
    """k_T^2 of the spacelike photon at v = 0.5 against k^2 / (k^2 + a)^2 on [0, 4 m^2 (1 - v)] (closed-form
    CDF ln(1 + x / a) - x / (x + a)), in 10 bins; the pair's momenta add up to v p (to the muon mass)."""
    rng = np.random.default_rng(8)
    n = 50_000
    v = np.full(n, 0.5)
    k2 = tridents._photon_kt(rng, v, M_MU) ** 2
    a, k2max = (M_MU * 0.5) ** 2, 4 * M_MU**2 * 0.5

    def cdf(x):
        return np.log1p(x / a) - x / (x + a)

    edges = np.linspace(0, k2max, 11)
    expect = np.diff(cdf(edges)) / cdf(k2max) * n
    counts = np.histogram(k2, edges)[0]
    chi2 = float(np.sum((counts - expect) ** 2 / expect))
    assert chi2 < 10 + 5 * math.sqrt(20), chi2
    p = np.full(n, E0)
    vs, legs, recoil = tridents._spacelike(rng, p, E0, 0.05)
    e = sum(np.sqrt(leg[0] ** 2 + M_MU**2) for leg in legs)
    np.testing.assert_allclose(e, vs * E0, rtol=1e-9)
    assert np.all(np.hypot(*recoil) <= 2 * M_MU * np.sqrt(1 - vs) / ((1 - vs) * E0) * (1 + 1e-9))


def test_the_timelike_pair_has_the_drawn_mass_and_energy(params):
    """A timelike pair's invariant mass is one of the mass table's grid centres (the decay conserves it
    to rounding) and its energy is v p."""
    rng = np.random.default_rng(2)
    n = 5_000
    p = np.full(n, E0)
    v, (plus, minus), _ = tridents._timelike(rng, p, E0, params.bias_v_min)
    e = [np.sqrt(leg[0] ** 2 + M_MU**2) for leg in (plus, minus)]
    dirs = [np.stack([leg[1], leg[2], np.ones(n)]) for leg in (plus, minus)]
    dirs = [d / np.linalg.norm(d, axis=0) for d in dirs]
    cos = np.sum(dirs[0] * dirs[1], axis=0)
    p_abs = [plus[0], minus[0]]
    m2 = 2 * M_MU**2 + 2 * (e[0] * e[1] - p_abs[0] * p_abs[1] * cos)
    masses, _, _ = phys_tridents.mass_table(float(E0), params.bias_v_min)
    centres = np.sqrt(masses[1:] * masses[:-1])
    nearest = centres[np.abs(np.sqrt(m2)[:, None] - centres[None, :]).argmin(axis=1)]
    assert np.sqrt(m2) == pytest.approx(nearest, rel=3e-3)  # the slopes add the photon direction linearly
    assert e[0] + e[1] == pytest.approx(v * E0, rel=1e-9)
    assert np.all(v >= params.bias_v_min)


def test_unbiased_draw_follows_both_rates(params):
    """Unbiased: v >= ``dimuon.v_min`` for the spacelike pairs; the share of v > 0.6 is (spacelike + timelike
    above 0.6) / (their totals); every weight 1; below v_min only timelike pairs (their share there)."""
    rng = np.random.default_rng(3)
    n = 60_000
    v, legs, recoil, w = tridents.draw(rng, np.full(n, E0), E0, params, biased=False)
    r = tridents.rates(params, E0)
    atoms = LEAD.per_gram * params.ecal_lead_g_cm2
    assert np.all(w == 1.0) and np.all(np.isfinite(v)) and np.all((v > 0) & (v < 1))
    for v_cut in (0.6, 0.9):
        above = phys_tridents.spacelike_sigma(E0, v_cut) + phys_tridents.timelike_sigma(E0, v_cut)
        expected = above * atoms / r.total
        frac = float(np.mean(v > v_cut))
        assert frac == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / n))
    low = float(np.mean(v < params.dimuon_v_min))  # timelike only
    expected = r.timelike / r.total * (1 - phys_tridents.timelike_sigma(E0, params.dimuon_v_min)
                                       / phys_tridents.timelike_sigma(E0))
    assert low == pytest.approx(expected, abs=5 * math.sqrt(max(expected, 1 / n) / n))


def test_legs_conserve_the_pair_energy_below_the_beam_energy(params):
    """A muon below the beam energy: the asymmetry's range is its own (both legs keep E >= m_mu) and the
    pair's energy is v p; every slope is finite and below tan(1 rad)."""
    rng = np.random.default_rng(4)
    n = 100_000
    p = rng.uniform(20 * u.GeV, 200 * u.GeV, n)
    v, legs, (rx, ry) = tridents._spacelike(rng, p, E0, params.dimuon_v_min)
    e = [np.sqrt(leg[0] ** 2 + M_MU**2) for leg in legs]
    assert np.all(legs[0][0] > 0) and np.all(legs[1][0] > 0)
    np.testing.assert_allclose(e[0] + e[1], v * p, rtol=1e-9)
    slopes = np.concatenate([legs[0][1], legs[0][2], legs[1][1], legs[1][2], rx, ry])
    assert np.all(np.isfinite(slopes)) and np.max(np.abs(slopes)) < 2 * math.tan(1.0)


def test_retired_trident_keys_are_refused(tmp_path):
    """``simulation.dimuon.rate`` and ``v_max`` (the toy's, read until stop 43) are refused by name."""
    src = load_setup("na64mu").source
    text = open(src).read()
    assert "  dimuon:\n" in text
    for key, value in (("rate", "1.0e-5"), ("v_max", "0.6")):
        bad = tmp_path / f"na64mu_{key}.yaml"
        bad.write_text(text.replace("  dimuon:\n", f"  dimuon:\n    {key}: {value}\n", 1))
        with pytest.raises(NA64Error, match=f"{key}.*no longer read"):
            load_sim_params(load_setup(str(bad)))


def test_mixture_rate_is_the_model(params):
    """``simulation.mixture.dimuon`` is the spacelike rate above ``dimuon.v_min`` plus the timelike rate (1 %)."""
    r = tridents.rates(params, E0)
    assert params.mixture["dimuon"] == pytest.approx(r.spacelike + r.timelike, rel=0.01)
