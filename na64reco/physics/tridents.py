"""The timelike part of muon tridents, mu N -> mu N gamma* with gamma* -> mu+ mu-.

A virtual photon of mass M is emitted as a dark photon of that mass with epsilon = 1 would be
(:func:`na64reco.physics.darkbrem.sigma_total`, model ``aprime``, IWW), and it becomes a muon pair
with the spectral density (the muon loop's contribution to the photon propagator)

    dP/dM^2 = alpha / (3 pi M^2) beta (3 - beta^2) / 2,   beta = sqrt(1 - 4 m_mu^2 / M^2),

so that d sigma / dM^2 dx = dP/dM^2 x d sigma_A'(M; epsilon = 1) / dx.  Its x = E_gamma* / E0 (the
pair's energy fraction v) is hard: at 160 GeV in lead 88 % of it has v > 0.45 and 38 % v > 0.9.

The spacelike (Bethe-Heitler) part, the pair made by the muon's nearly real photon in the nucleus' field,
is Kelner, Kokoulin and Petrukhin's direct muon pair production (Phys. At. Nucl. 63 (2000) 1603, their
eqs. 15-22):

    d sigma / dv = 2 / (3 pi) Z^2 (alpha r_e m_e / m_mu)^2 (1 - v) / v Int_-rho_max^rho_max Phi(v, rho) ln X drho,

with rho the pair's energy asymmetry (E+- = v E (1 +- rho) / 2) over both signs (the integrand is even:
twice the integral over [0, rho_max]), rho_max = 1 - 2 m_mu / (v E),
Phi = Phi_e + Phi_mu of Kokoulin and Petrukhin's e+e- formula with the pair lepton's mass set to the
muon's (:func:`na64reco.physics.muon_losses.pair_phi`: the two momentum-transfer regions of that formula
are one here), and X = 1 + U(rho) - U(rho_max) the nuclear form factor's logarithm,

    U = 0.65 A^-0.27 B Z^-1/3 (m_mu / m_e) / (1 + 2 sqrt(e) m_mu^2 B Z^-1/3 (1 + xi) (1 + Y) / (m_e v E (1 - rho^2))),

B = 183, Y = 10 sqrt(m_mu / E).  The normalisation: the rho integral over both signs, as PROPOSAL has it;
over [0, rho_max] only (Geant4's model) the cross section is half the equivalent-photon estimate (the
muon's photon flux up to a virtuality Q2max times Burkhardt, Kelner and Kokoulin's gamma N -> mu mu cross
section), which the full range meets at v = 0.03-0.2: 0.96-1.03 with Q2max = 4 m_mu^2, 0.73-1.7 for Q2max
from 16 to 1 m_mu^2 (the estimate's uncertainty, ~25 %; the half range would need Q2max ~ 0.15 m_mu^2, below
any pair's mass squared; ``tests/test_tridents.py``).  At 160 GeV in lead: 12.3 ub per nucleus above
v = 0.02 (9.1e-6 per muon crossing the ECAL's 40 X0), 1.22 ub above v = 0.45; its energy loss is 7.8e-4 of
the e+e- pairs'.  The identity of the two mu- (or mu+) in the final state and the interference with the
timelike part are left out, as in that paper.
"""

from __future__ import annotations

import functools
import math

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.physics import darkbrem
from na64reco.physics.muon_losses import LEAD, Absorber, ln_cumulative, pair_phi

__all__ = ["spectral_density", "timelike_sigma", "mass_table", "sample_mass", "spacelike_rho_integrand",
           "spacelike_dsigma", "spacelike_table", "spacelike_sigma", "sample_spacelike", "bethe_heitler_mumu",
           "equivalent_photon_dsigma"]

_M_MAX = 20 * u.GeV  # above it the 1/M^2 density and the falling cross section leave < 1e-3 of the rate


def spectral_density(mass):
    """dP/dM^2 of gamma* -> mu+ mu- (1/MeV^2); 0 below the threshold 2 m_mu."""
    mass = np.asarray(mass, float)
    ok = mass > 2 * constants.MUON_MASS
    beta = np.sqrt(np.where(ok, 1.0 - 4.0 * constants.MUON_MASS**2 / np.where(ok, mass, 1.0) ** 2, 0.0))
    return np.where(ok, constants.FINE_STRUCTURE / (3.0 * math.pi) * beta * (3.0 - beta**2) / 2.0
                    / np.where(ok, mass, 1.0) ** 2, 0.0)


@functools.lru_cache(maxsize=16)
def mass_table(e0: float, x_min: float | None = None, n_masses: int = 161):
    """``(masses, cdf, sigma)``: the pair mass's distribution (CDF on a log grid from just above 2 m_mu
    to 20 GeV) and the timelike cross section per lead nucleus (mm2) with x > ``x_min`` (None: all)."""
    masses = np.exp(np.linspace(math.log(2 * constants.MUON_MASS * 1.0005), math.log(_M_MAX), n_masses))
    sig = np.array([darkbrem.sigma_total(e0, m, coupling=1.0, model="aprime", x_min=x_min) for m in masses])
    cum = ln_cumulative(masses, spectral_density(masses) * sig * 2.0 * masses)  # d sigma / dM = 2 M d sigma / dM^2
    return masses, cum / cum[-1], float(cum[-1])


def timelike_sigma(e0: float, x_min: float | None = None) -> float:
    """Timelike trident cross section per lead nucleus (mm2) with x > ``x_min``."""
    return mass_table(float(e0), x_min)[2]


def sample_mass(rng: np.random.Generator, n: int, e0: float, x_min: float | None = None) -> np.ndarray:
    """``n`` pair masses (MeV) from d sigma / dM with x > ``x_min``, each one of the table's grid masses
    (2.9 % apart in M) with the probability of its cell (so that x can be drawn from a few cached spectra)."""
    masses, cdf, _ = mass_table(float(e0), x_min)
    cell = np.searchsorted(cdf, rng.random(n), side="right") - 1  # cell [m_i, m_i+1) by its probability
    cell = np.clip(cell, 0, masses.size - 2)
    return np.sqrt(masses[cell] * masses[cell + 1])  # its geometric centre


# ----------------------------------------------------------------------------------------------------
# the spacelike part (Kelner, Kokoulin, Petrukhin 2000)
_B = constants.KKP_SCREENING_B
_FF_COEFF = 0.65  # U's numerator: 0.65 A^-0.27 B Z^-1/3 m_mu / m_e (the nuclear size)
_FF_A_POWER = -0.27
_Y_COEFF = 10.0
_RHO_NODES, _RHO_WEIGHTS = np.polynomial.legendre.leggauss(48)


def _u_form_factor(absorber: Absorber, energy: float, v, r2, xi):
    z13 = absorber.z ** (1.0 / 3.0)
    m, me = constants.MUON_MASS, constants.ELECTRON_MASS
    y = _Y_COEFF * math.sqrt(m / energy)
    num = _FF_COEFF * absorber.a ** _FF_A_POWER * _B / z13 * (m / me)
    return num / (1.0 + 2.0 * math.sqrt(math.e) * m * m * _B / z13 * (1.0 + xi) * (1.0 + y)
                  / (me * energy * v * (1.0 - r2)))


def spacelike_rho_integrand(absorber: Absorber, energy: float, v, rho):
    """``Phi(v, rho) ln X(v, rho)``, the integrand over the pair's asymmetry (broadcast over ``v`` and
    ``rho``); 0 outside the physical region |rho| < rho_max(v)."""
    v = np.asarray(v, float)
    rho = np.asarray(rho, float)
    m = constants.MUON_MASS
    ok = (v * energy > 2 * m) & (energy * (1 - v) > m)
    vv = np.where(ok, v, 0.5)
    rho_max = 1.0 - 2.0 * m / (vv * energy)
    inside = ok & (np.abs(rho) < rho_max)
    r2 = np.where(inside, rho * rho, 0.0)
    beta = vv * vv / (2.0 * (1.0 - vv))
    xi = vv * vv * (1.0 - r2) / (4.0 * (1.0 - vv))
    phi_e, phi_mu = pair_phi(r2, beta, xi)
    x_max = vv * vv * (1.0 - rho_max**2) / (4.0 * (1.0 - vv))
    big_x = 1.0 + _u_form_factor(absorber, energy, vv, r2, xi) - _u_form_factor(absorber, energy, vv, rho_max**2,
                                                                                  x_max)
    return np.where(inside, (phi_e + phi_mu) * np.log(np.where(inside, big_x, 1.0)), 0.0)


def _prefactor(absorber: Absorber) -> float:
    """2 / (3 pi) Z^2 (alpha r_e m_e / m_mu)^2, times 2 for the rho integral's negative half (the integrand is
    even; :func:`spacelike_dsigma` integrates [0, rho_max])."""
    r = constants.FINE_STRUCTURE * constants.CLASSICAL_ELECTRON_RADIUS * constants.ELECTRON_MASS / constants.MUON_MASS
    return 2.0 * 2.0 / (3.0 * math.pi) * absorber.z**2 * r * r


def spacelike_dsigma(energy: float, v, absorber: Absorber = LEAD):
    """d sigma / dv per nucleus (mm2) of spacelike muon pair production by a muon of ``energy`` (MeV); 0
    outside 2 m_mu / E < v < 1 - m_mu / E.  The rho integral: twice the one over [0, rho_max], Gauss-Legendre
    in ln(1 - rho) (48 nodes; the integrand falls to 0 at rho_max)."""
    v = np.atleast_1d(np.asarray(v, float))
    m = constants.MUON_MASS
    out = np.zeros(v.size)
    ok = (v * energy > 2 * m) & (energy * (1 - v) > m)
    if not np.any(ok):
        return out
    w = v[ok][:, None]
    t_lo = np.log(2.0 * m / (w * energy))  # ln(1 - rho_max)
    t = 0.5 * t_lo * (1 - _RHO_NODES[None, :])  # rho = 1 - exp(t), t in [t_lo, 0]
    rho = -np.expm1(t)
    jac = np.exp(t) * (-0.5 * t_lo) * _RHO_WEIGHTS[None, :]
    integral = np.sum(spacelike_rho_integrand(absorber, energy, w, rho) * jac, axis=1)
    out[ok] = _prefactor(absorber) * (1 - v[ok]) / v[ok] * np.maximum(integral, 0.0)
    return out


@functools.lru_cache(maxsize=16)
def spacelike_table(e0: float, v_min: float, n_v: int = 257, n_rho: int = 65):
    """``(v, cdf_v, sigma, t, cdf_rho)``: the spacelike pair's v on a log grid from ``v_min`` to the
    kinematic end with its CDF, the cross section per lead nucleus above ``v_min`` (mm2), and per grid v the
    CDF of the asymmetry |rho| on a grid of ``t = ln(1 - |rho|) / ln(1 - rho_max)`` in [0, 1]."""
    m = constants.MUON_MASS
    v_hi = 1.0 - m / e0
    if not 2 * m / e0 < v_min < v_hi:
        raise ValueError(f"spacelike trident: v_min={v_min} outside the kinematic range ({2 * m / e0:.3g}, {v_hi:.6g})")
    v = np.exp(np.linspace(math.log(v_min), math.log(v_hi * (1 - 1e-9)), n_v))
    cum = ln_cumulative(v, spacelike_dsigma(e0, v))
    s = np.linspace(0.0, 1.0, n_rho)
    t_lo = np.log(2.0 * m / (v * e0))[:, None]
    rho = -np.expm1(s[None, :] * t_lo)
    f = spacelike_rho_integrand(LEAD, e0, v[:, None], rho) * np.exp(s[None, :] * t_lo) * (-t_lo)  # d/ds
    c = np.concatenate([np.zeros((v.size, 1)), np.cumsum(0.5 * (f[:, 1:] + f[:, :-1]) * np.diff(s), axis=1)], axis=1)
    c = c / np.where(c[:, -1:] > 0, c[:, -1:], 1.0)
    out = (v, cum / cum[-1], s, c)
    for a in out:  # cached: shared by every caller
        a.flags.writeable = False
    return out[0], out[1], float(cum[-1]), out[2], out[3]


def spacelike_sigma(e0: float, v_min: float) -> float:
    """Spacelike trident cross section per lead nucleus (mm2) with v > ``v_min``."""
    return spacelike_table(float(e0), float(v_min))[2]


def sample_spacelike(rng: np.random.Generator, n: int, e0: float, v_min: float, energy=None):
    """``n`` spacelike pairs above ``v_min`` from the tables at ``e0``: ``(v, rho)``, v by inverse CDF
    (linear in ln v between grid points), the asymmetry |rho| from the CDF of the nearest grid v in the
    variable ln(1 - |rho|) / ln(1 - rho_max), its sign at random.  ``energy`` (MeV, per pair; default e0):
    the muon's own energy, which sets rho_max = 1 - 2 m_mu / (v E) where that variable is mapped back (so
    that both muons of a muon below e0 keep E >= m_mu)."""
    v_grid, cdf, _, s, c = spacelike_table(float(e0), float(v_min))
    v = np.exp(np.interp(rng.random(n), cdf, np.log(v_grid)))
    k = np.clip(np.rint(np.interp(np.log(v), np.log(v_grid), np.arange(v_grid.size))).astype(np.int64), 0,
                v_grid.size - 1)
    u = rng.random(n)
    frac = np.empty(n)
    for kk in np.unique(k):
        sel = np.flatnonzero(k == kk)
        frac[sel] = np.interp(u[sel], c[kk], s)
    e = np.broadcast_to(np.asarray(e0 if energy is None else energy, float), (n,))
    t_lo = np.log(np.minimum(2.0 * constants.MUON_MASS / (v * e), 1.0))
    rho = -np.expm1(frac * t_lo) * np.where(rng.random(n) < 0.5, 1.0, -1.0)
    return v, rho


# ----------------------------------------------------------------------------------------------------
# an independent estimate of the spacelike part, for its normalisation's check
def bethe_heitler_mumu(e_gamma: float, absorber: Absorber = LEAD) -> float:
    """sigma(gamma N -> N mu+ mu-) per nucleus (mm2) at photon energy ``e_gamma`` (MeV): Burkhardt, Kelner and
    Kokoulin's parametrisation of the Bethe-Heitler cross section with the nuclear form factor
    (CERN-SL-2002-016); 0.27 / 0.42 / 0.58 mb on lead at 8 / 16 / 32 GeV."""
    m, me = constants.MUON_MASS, constants.ELECTRON_MASS
    if e_gamma <= 4.0 * m:
        return 0.0
    z, a = absorber.z, absorber.a
    b, dn = _B, constants.KKP_D_N_COEFF * a**constants.KKP_D_N_POWER
    zt = z ** (-1.0 / 3.0)
    w_inf = b * zt * m / (dn * me)
    w_med = 1.0 / (4.0 * dn * math.sqrt(math.e) * m)
    p_thr, p_sat = 1.479 + 0.00799 * dn, -0.88
    corr = 1.0 + 0.04 * math.log(1.0 + (-18.0 + 4347.0 / (b * zt)) / e_gamma)
    e_eff = (1.0 - 4.0 * m / e_gamma) ** p_thr * ((w_inf / w_med) ** p_sat + e_gamma**p_sat) ** (1.0 / p_sat)
    r_mu = constants.CLASSICAL_ELECTRON_RADIUS * me / m
    return 7.0 / 9.0 * 4.0 * constants.FINE_STRUCTURE * z * z * r_mu**2 * math.log(1.0 + w_med * corr * e_eff)


def equivalent_photon_dsigma(energy: float, v: float, q2max_m2: float = 4.0) -> float:
    """d sigma / dv per lead nucleus (mm2) of the spacelike part as the muon's nearly real photon converting in
    the nucleus' field: the photon flux (alpha / pi v) [(1 - v + v^2/2) ln(Q2max / Q2min) - (1 - v)],
    Q2min = m^2 v^2 / (1 - v), Q2max = ``q2max_m2`` m_mu^2, times :func:`bethe_heitler_mumu` at v E.  Valid
    at small v (Q2min << Q2max); its uncertainty from the choice of Q2max is ~25 %."""
    m = constants.MUON_MASS
    q2min = m * m * v * v / (1.0 - v)
    flux = constants.FINE_STRUCTURE / (math.pi * v) * ((1 - v + v * v / 2) * math.log(q2max_m2 * m * m / q2min)
                                                       - (1 - v))
    return flux * bethe_heitler_mumu(v * energy)
