"""Muon tridents (na64reco.physics.tridents, na64reco.sim.tridents): the spectral density against its
closed form, the timelike cross section's hard v spectrum, the forced weight against the two parts' closed
forms, the share of timelike events in a forced sample, the pair's invariant mass and energy, and the
setup's mixture rate against the model."""

from __future__ import annotations

import math

import hepunits as u
import numpy as np
import pytest
from scipy import integrate

from na64reco import constants
from na64reco.geometry import load_setup
from na64reco.physics import tridents as phys_tridents
from na64reco.physics.muon_losses import LEAD
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
    """Every forced trident carries the probability of a trident in the forced region: the toy's
    rate x ln(v_max / v_bias) / ln(v_max / v_min) plus the timelike rate above v_bias; v > v_max (0.6)
    comes only from the timelike part, with its share of the forced rate times P(v > 0.6 | v > 0.45)."""
    rng = np.random.default_rng(1)
    n = 40_000
    p = np.full(n, E0)
    v, legs, recoil, w = tridents.draw(rng, p, E0, params, biased=True)
    r = tridents.rates(params, E0)
    toy = params.dimuon_rate * math.log(params.dimuon_v_max / params.bias_v_min) / math.log(
        params.dimuon_v_max / params.dimuon_v_min)
    atoms = LEAD.per_gram * params.ecal_lead_g_cm2
    assert r.toy_forced == pytest.approx(toy, rel=1e-12)
    assert np.all(w == pytest.approx(toy + phys_tridents.timelike_sigma(E0, params.bias_v_min) * atoms, rel=1e-12))
    assert np.all(v >= params.bias_v_min)
    expected = r.timelike_forced / r.forced * (phys_tridents.timelike_sigma(E0, params.dimuon_v_max)
                                               / phys_tridents.timelike_sigma(E0, params.bias_v_min))
    frac = float(np.mean(v > params.dimuon_v_max))
    assert frac == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / n) + 0.01)
    # the timelike events (the only ones with a recoil) are their share of the forced rate; the toy's
    # (no recoil) stay below v_max
    kinked = np.hypot(*recoil) > 0
    share = r.timelike_forced / r.forced
    assert float(np.mean(kinked)) == pytest.approx(share, abs=5 * math.sqrt(share * (1 - share) / n))
    assert np.all(v[~kinked] <= params.dimuon_v_max) and np.all(kinked[v > params.dimuon_v_max])


def test_the_timelike_pair_has_the_drawn_mass_and_energy(params):
    """A timelike pair's invariant mass is one of the mass table's grid centres (the decay conserves it
    to rounding) and its energy is v p."""
    rng = np.random.default_rng(2)
    n = 20_000
    p = np.full(n, E0)
    v, (plus, minus), _, _ = tridents.draw(rng, p, E0, params, biased=True)
    hard = v > params.dimuon_v_max  # timelike for sure
    e = [np.sqrt(leg[0][hard] ** 2 + M_MU**2) for leg in (plus, minus)]
    dirs = [np.stack([leg[1][hard], leg[2][hard], np.ones(hard.sum())]) for leg in (plus, minus)]
    dirs = [d / np.linalg.norm(d, axis=0) for d in dirs]
    cos = np.sum(dirs[0] * dirs[1], axis=0)
    p_abs = [plus[0][hard], minus[0][hard]]
    m2 = 2 * M_MU**2 + 2 * (e[0] * e[1] - p_abs[0] * p_abs[1] * cos)
    masses, _, _ = phys_tridents.mass_table(float(E0), params.bias_v_min)
    centres = np.sqrt(masses[1:] * masses[:-1])
    nearest = centres[np.abs(np.sqrt(m2)[:, None] - centres[None, :]).argmin(axis=1)]
    assert np.sqrt(m2) == pytest.approx(nearest, rel=3e-3)  # the slopes add the photon direction linearly
    assert e[0] + e[1] == pytest.approx(v[hard] * E0, rel=1e-9)


def test_mixture_rate_is_the_model(params):
    """``simulation.mixture.dimuon`` is the toy's rate plus the timelike rate (1 %)."""
    r = tridents.rates(params, E0)
    assert params.mixture["dimuon"] == pytest.approx(r.toy + r.timelike, rel=0.01)
