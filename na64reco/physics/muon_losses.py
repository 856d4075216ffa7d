"""Energy losses of a high-energy muon in matter, process by process, from their cross sections.

The mean loss is ``-dE/dx = a(E) + b(E) E`` (Groom, Mokhov, Striganov, ADNDT 78 (2001) 183;
PDG "Passage of particles through matter", section "Muon energy loss at high energy"):

* ``a``: the electronic loss, Bethe's formula with the spin-1/2 term and Sternheimer's density
  effect (:func:`ionisation`, PDG eqs. 34.5 and 34.7).  Its hard part, single knock-on electrons
  of kinetic energy T, has the spin-1/2 spectrum (PDG section "Energetic knock-on electrons")

      d2N/dT dx = (K/2) (Z/A) (1/beta^2) (1/T^2) [1 - beta^2 T/W_max + T^2 / (2 E^2)],   T <= W_max

  (:func:`knock_on_spectrum`);
* ``b``: the radiative losses,
  - bremsstrahlung on the screened nucleus and on the atomic electrons (Kelner, Kokoulin,
    Petrukhin, Phys. At. Nucl. 60 (1997) 576; the form used by Geant4's muon bremsstrahlung),
    :func:`bremsstrahlung_dsigma`;
  - e+e- pair production (Kokoulin and Petrukhin, Proc. 12th ICCR (1971) 2436; Kelner,
    Kokoulin, Petrukhin 2000), a one-dimensional integral over the pair's energy asymmetry rho,
    :func:`pair_dsigma`;
  - photonuclear interactions are not computed here: b_nucl ~ 0.4e-6 cm2/g, ~3 % of b in lead
    (``constants.MUON_PHOTONUCLEAR_B``, only in the mean loss); the hard ones are the simulator's
    leading-hadron process.

Cross sections per atom (mm2 in hepunits), as functions of the fraction ``v = eps / E`` of the
muon's total energy E carried off.  ``LossSpectrum`` tabulates dN/dv of several processes for a
thickness of one material and samples the losses above a ``v_min``.

The checks (``tests/test_muon_losses.py``): the Bethe minimum against the PDG tables (Pb
1.122, Fe 1.451 MeV cm2/g), the muon critical energy a(E_c) = b(E_c) E_c against PDG's 141 GeV
(Pb) and 347 GeV (Fe), the knock-on number against its closed form, sampling against the table.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import hepunits as u
import numpy as np

from na64reco import constants

__all__ = ["Absorber", "LEAD", "IRON", "ionisation", "knock_on_spectrum", "bremsstrahlung_dsigma", "pair_dsigma",
           "pair_phi", "ln_cumulative", "energy_loss_b", "mean_loss_coefficients", "critical_energy", "LossSpectrum",
           "loss_spectrum"]

_ME = constants.ELECTRON_MASS
_SQRT_E = math.sqrt(math.e)
_K = constants.BETHE_K


@dataclass(frozen=True)
class Absorber:
    """An element: Z, A (g/mol), mean excitation energy I and Sternheimer's density-effect
    parameters (C-bar, x0, x1, a, k, delta0) (Sternheimer, Berger, Seltzer, ADNDT 30 (1984) 261;
    PDG "Atomic and Nuclear Properties")."""

    name: str
    z: int
    a: float  # g/mol (a number)
    mean_excitation: float  # MeV
    c_bar: float
    x0: float
    x1: float
    sa: float
    sk: float
    delta0: float

    @property
    def per_gram(self) -> float:
        """Atoms per (g/cm2) of thickness, in 1/mm2: N_A / A."""
        return constants.AVOGADRO / (self.a * u.g / u.mole) * (u.g / u.cm2)


LEAD = Absorber("lead", *constants.LEAD_STOPPING)
IRON = Absorber("iron", *constants.IRON_STOPPING)


def _kinematics(energy: float, mass: float):
    gamma = energy / mass
    beta2 = 1.0 - 1.0 / (gamma * gamma)
    w_max = 2 * _ME * beta2 * gamma * gamma / (1 + 2 * gamma * _ME / mass + (_ME / mass) ** 2)
    return gamma, beta2, w_max


def density_effect(absorber: Absorber, beta_gamma: float) -> float:
    """Sternheimer's delta(beta gamma) (PDG eq. 34.7)."""
    x = math.log10(beta_gamma)
    if x >= absorber.x1:
        return 2 * math.log(10) * x - absorber.c_bar
    if x >= absorber.x0:
        return 2 * math.log(10) * x - absorber.c_bar + absorber.sa * (absorber.x1 - x) ** absorber.sk
    return absorber.delta0 * 10 ** (2 * (x - absorber.x0))


def ionisation(absorber: Absorber, energy: float, mass: float = constants.MUON_MASS) -> float:
    """Mean electronic loss a(E) in MeV per g/cm2 (a number): Bethe with the spin-1/2 term,
    PDG eq. 34.5:  K Z/A / beta^2 [1/2 ln(2 m_e beta^2 gamma^2 W_max / I^2) - beta^2 - delta/2
    + (W_max / E)^2 / 8]."""
    gamma, beta2, w_max = _kinematics(energy, mass)
    bg2 = beta2 * gamma * gamma
    bracket = (0.5 * math.log(2 * _ME * bg2 * w_max / absorber.mean_excitation**2) - beta2
               - density_effect(absorber, math.sqrt(bg2)) / 2 + (w_max / energy) ** 2 / 8)
    return float(_K * absorber.z / absorber.a / beta2 * bracket / (u.MeV * u.cm2 / u.g))


def knock_on_spectrum(absorber: Absorber, energy: float, v, mass: float = constants.MUON_MASS):
    """dN/dv per g/cm2 (a number) of knock-on electrons taking T = v E (0 above W_max)."""
    v = np.asarray(v, float)
    _, beta2, w_max = _kinematics(energy, mass)
    t = v * energy
    k = _K * absorber.z / absorber.a / (u.MeV * u.cm2 / u.g)  # MeV per g/cm2
    spec = k / 2 / beta2 / (t * t) * (1 - beta2 * t / w_max + t * t / (2 * energy**2)) * energy
    return np.where((t > 0) & (t <= w_max), spec, 0.0)


def bremsstrahlung_dsigma(absorber: Absorber, energy: float, v, mass: float = constants.MUON_MASS):
    """dsigma/dv per atom (mm2) of muon bremsstrahlung (Kelner, Kokoulin, Petrukhin 1997):

        dsigma/dv = alpha (2 Z r_e m_e / m)^2 (4/3 - 4/3 v + v^2) / v  [Phi_n(delta) + Phi_e(delta) / Z]

    delta = m^2 v / (2 E (1 - v)); Phi_n = ln[B Z^-1/3 (m + delta (D_n sqrt(e) - 2)) / (D_n (m_e +
    delta sqrt(e) B Z^-1/3))] with B = 183, D_n = 1.54 A^0.27 (the nucleus' size); Phi_e =
    ln[B' Z^-2/3 m / ((1 + delta m / (m_e^2 sqrt(e))) (m_e + delta sqrt(e) B' Z^-2/3))] with
    B' = 1429, for v below the muon-electron kinematic limit 1 / (1 + m^2 / (2 m_e E)).
    """
    v = np.clip(np.asarray(v, float), 0.0, 1.0 - 1e-12)
    z = absorber.z
    z13 = z ** (-1.0 / 3.0)
    delta = mass * mass * v / (2 * energy * (1 - v))
    d_n = constants.KKP_D_N_COEFF * absorber.a**constants.KKP_D_N_POWER
    b = constants.KKP_SCREENING_B
    phi_n = np.log(b * z13 * (mass + delta * (d_n * _SQRT_E - 2)) / (d_n * (_ME + delta * _SQRT_E * b * z13)))
    phi_e = np.log(1429 * z13 * z13 * mass / ((1 + delta * mass / (_ME * _ME * _SQRT_E))
                                                * (_ME + delta * _SQRT_E * 1429 * z13 * z13)))
    phi_e = np.where(v < 1 / (1 + mass * mass / (2 * _ME * energy)), np.maximum(phi_e, 0.0), 0.0)
    phi_n = np.maximum(phi_n, 0.0)
    r_e = constants.CLASSICAL_ELECTRON_RADIUS
    pref = constants.FINE_STRUCTURE * (2 * z * r_e * _ME / mass) ** 2
    out = pref * (4 / 3 - 4 / 3 * v + v * v) / np.where(v > 0, v, 1.0) * (phi_n + phi_e / z)
    return np.where((v > 0) & (v < 1 - 1e-12), out, 0.0)


_RHO_NODES, _RHO_WEIGHTS = np.polynomial.legendre.leggauss(48)


def pair_dsigma(absorber: Absorber, energy: float, v, mass: float = constants.MUON_MASS):
    """dsigma/dv per atom (mm2) of e+e- pair production by a muon (Kokoulin, Petrukhin 1971):

        dsigma/dv = 4/(3 pi) Z (Z + zeta) (alpha r_e)^2 (1 - v)/v Int_0^rho_max [Phi_e + (m_e/m)^2 Phi_mu] drho

    with the screening and form-factor logarithms L_e, L_mu of Kelner, Kokoulin and Petrukhin and
    zeta the pair production on the atomic electrons; 4 m_e / E < v < 1 - 3/4 sqrt(e) (m / E) Z^1/3.
    The rho integral: Gauss-Legendre in ln(1 - rho) (48 nodes; the integrand has a log singularity
    at rho -> 1).
    """
    v = np.atleast_1d(np.asarray(v, float))
    z = absorber.z
    z13 = z ** (1.0 / 3.0)
    em = energy / mass
    zeta_num = 0.073 * math.log(em / (1 + 1.95e-5 * z13 * z13 * em)) - 0.26
    zeta_den = 0.058 * math.log(em / (1 + 5.3e-5 * z13 * em)) - 0.14
    zeta = zeta_num / zeta_den if (zeta_num > 0 and zeta_den > 0) else 0.0
    v_lo, v_hi = 4 * _ME / energy, 1 - 0.75 * _SQRT_E * (mass / energy) * z13
    ok = (v > v_lo) & (v < v_hi)
    out = np.zeros(v.size)
    if not np.any(ok):
        return out
    w = v[ok][:, None]
    rho_max = (1 - 6 * mass * mass / (energy * energy * (1 - w))) * np.sqrt(1 - 4 * _ME / (energy * w))
    # rho = 1 - exp(t), t in [ln(1 - rho_max), 0]; drho = exp(t) dt
    t_lo = np.log1p(-np.clip(rho_max, 0.0, 1 - 1e-15))
    t = 0.5 * t_lo * (1 - _RHO_NODES[None, :])  # maps [-1, 1] -> [t_lo, 0]
    rho = -np.expm1(t)
    jac = np.exp(t) * (-0.5 * t_lo) * _RHO_WEIGHTS[None, :]
    r2 = rho * rho
    beta = w * w / (2 * (1 - w))
    xi = (mass * w / (2 * _ME)) ** 2 * (1 - r2) / (1 - w)
    y_e = (5 - r2 + 4 * beta * (1 + r2)) / (2 * (1 + 3 * beta) * np.log(3 + 1 / xi) - r2 - 2 * beta * (2 - r2))
    y_mu = (4 + r2 + 3 * beta * (1 + r2)) / ((1 + r2) * (1.5 + 2 * beta) * np.log(3 + xi) + 1 - 1.5 * r2)
    bz = constants.KKP_SCREENING_B / z13
    ev = energy * w * (1 - r2)
    l_e = (np.log(bz * np.sqrt((1 + xi) * (1 + y_e)) / (1 + 2 * _ME * _SQRT_E * bz * (1 + xi) * (1 + y_e) / ev))
           - 0.5 * np.log(1 + (1.5 * _ME * z13 / mass) ** 2 * (1 + xi) * (1 + y_e)))
    l_mu = (np.log(mass / _ME * bz * np.sqrt((1 + 1 / xi) * (1 + y_mu))
                   / (1 + 2 * _ME * _SQRT_E * bz * (1 + xi) * (1 + y_mu) / ev))
            - np.log(1.5 * z13 * np.sqrt((1 + 1 / xi) * (1 + y_mu))))
    b_e, b_mu = pair_phi(r2, beta, xi)
    integrand = np.maximum(b_e * l_e, 0.0) + (_ME / mass) ** 2 * np.maximum(b_mu * l_mu, 0.0)
    integral = np.sum(integrand * jac, axis=1)
    r_e = constants.CLASSICAL_ELECTRON_RADIUS
    pref = 4 / (3 * math.pi) * z * (z + zeta) * (constants.FINE_STRUCTURE * r_e) ** 2
    out[ok] = pref * (1 - v[ok]) / v[ok] * np.maximum(integral, 0.0)
    return out


def pair_phi(r2, beta, xi):
    """Kokoulin and Petrukhin's ``(Phi_e, Phi_mu)`` of lepton pair production by a muon (without their
    logarithms L_e, L_mu): the parts of the pair's asymmetry rho (``r2`` = rho^2) integrand from momentum
    transfers of the order of the pair lepton's mass and of the muon's, with ``beta = v^2 / (2 (1 - v))`` and
    ``xi = (m_mu v / (2 m_pair))^2 (1 - rho^2) / (1 - v)``.  For a muon pair (m_pair = m_mu) their sum is the
    Phi of Kelner, Kokoulin and Petrukhin's muon-pair cross section (:mod:`na64reco.physics.tridents`)."""
    phi_e = (((2 + r2) * (1 + beta) + xi * (3 + r2)) * np.log1p(1 / xi) + (1 - r2 - beta) / (1 + xi) - (3 + r2))
    phi_mu = (((1 + r2) * (1 + 1.5 * beta) - (1 + 2 * beta) * (1 - r2) / xi) * np.log1p(xi)
              + xi * (1 - r2 - beta) / (1 + xi) + (1 + 2 * beta) * (1 - r2))
    return phi_e, phi_mu


_DSIGMA = {"brems": bremsstrahlung_dsigma, "pair": pair_dsigma}


def _log_grid(v_min: float, n: int) -> np.ndarray:
    return np.exp(np.linspace(math.log(v_min), 0.0, n))


def ln_cumulative(v: np.ndarray, dn_dv: np.ndarray) -> np.ndarray:
    """Int_{v_0}^{v_i} dN/dv dv on a log grid ``v`` (trapezoids in ln v), from 0 at the first point."""
    f = dn_dv * v  # dN / d ln v
    return np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(v)))])


def energy_loss_b(absorber: Absorber, energy: float, process: str, mass: float = constants.MUON_MASS) -> float:
    """b of one radiative process ("brems" or "pair") in cm2/g (a number): Int v dsigma/dv dv N_A/A."""
    if process not in _DSIGMA:
        raise ValueError(f"process {process!r}: unknown (known: {', '.join(_DSIGMA)})")
    v = _log_grid(1e-7, 4001)
    return float(ln_cumulative(v, v * _DSIGMA[process](absorber, energy, v, mass))[-1]) * absorber.per_gram


@functools.lru_cache(maxsize=64)  # ~20 ms each; the yields ask for the beam energy's at every mass and coupling
def mean_loss_coefficients(absorber: Absorber, energy: float, mass: float = constants.MUON_MASS):
    """``(a, b)`` of the mean loss -dE/dx = rho (a + b E) at ``energy``, in hepunits (MeV cm2/g,
    cm2/g): Bethe's a, b = b_brems + b_pair + b_nucl (the photonuclear part from
    ``constants.MUON_PHOTONUCLEAR_B``, not computed here)."""
    b = energy_loss_b(absorber, energy, "brems", mass) + energy_loss_b(absorber, energy, "pair", mass)
    return (ionisation(absorber, energy, mass) * u.MeV * u.cm2 / u.g,
            b * u.cm2 / u.g + constants.MUON_PHOTONUCLEAR_B)


def critical_energy(absorber: Absorber, mass: float = constants.MUON_MASS) -> float:
    """The muon critical energy (MeV), where a(E) = b(E) E (PDG's definition; Groom et al.)."""
    from scipy.optimize import brentq

    def diff(e_gev):
        a, b = mean_loss_coefficients(absorber, e_gev * u.GeV, mass)
        return a - b * e_gev * u.GeV

    return brentq(diff, 20.0, 3000.0) * u.GeV


@dataclass(frozen=True)
class LossSpectrum:
    """The discrete losses v > v_min of a muon of ``energy`` crossing ``thickness`` g/cm2 of one
    absorber: dN/dv tabulated on a ln-v grid, summed over ``processes``."""

    absorber: str
    energy: float
    thickness: float  # g/cm2 (a number)
    v_min: float
    processes: tuple[str, ...]
    v: np.ndarray
    dndv: np.ndarray  # per muon, summed over the processes
    cumulative: np.ndarray  # N(V <= v_i | V > v_min) per muon

    def mean_number(self, v_lo: float, v_hi: float = 1.0) -> float:
        """Expected number of losses with v in [v_lo, v_hi) per muon (v_lo >= v_min)."""
        lo, hi = np.interp([v_lo, v_hi], self.v, self.cumulative)
        return float(hi - lo)

    def cdf(self, v) -> np.ndarray:
        """P(V <= v | V > v_min) of one loss."""
        return np.interp(np.asarray(v, float), self.v, self.cumulative) / self.cumulative[-1]

    def quantile(self, q) -> np.ndarray:
        """Inverse of :meth:`cdf` (linear in ln v between grid points)."""
        return np.exp(np.interp(np.asarray(q, float) * self.cumulative[-1], self.cumulative, np.log(self.v)))

    def b_fraction(self) -> float:
        """Mean fractional loss in the discrete part: Int_{v_min}^1 v dN/dv dv."""
        return float(ln_cumulative(self.v, self.v * self.dndv)[-1])


_ABSORBERS = {"lead": LEAD, "iron": IRON}


@functools.lru_cache(maxsize=256)  # the simulator's ECAL needs ~60 energies (1-160 GeV) per absorber
def loss_spectrum(absorber: str, energy: float, thickness: float, v_min: float,
                  processes: tuple[str, ...] = ("brems", "pair", "knock_on"), n_grid: int = 1025) -> LossSpectrum:
    """:class:`LossSpectrum` of ``absorber`` ("lead" or "iron") for a muon of total ``energy`` (MeV)."""
    if absorber not in _ABSORBERS:
        raise ValueError(f"absorber {absorber!r}: unknown (known: {', '.join(_ABSORBERS)})")
    if not 0.0 < v_min < 1.0:
        raise ValueError(f"v_min={v_min!r}: expected a fraction in (0, 1)")
    ab = _ABSORBERS[absorber]
    v = _log_grid(v_min, n_grid)
    dndv = np.zeros(v.size)
    for proc in processes:
        if proc == "knock_on":
            dndv += knock_on_spectrum(ab, energy, v) * thickness
        elif proc in _DSIGMA:
            dndv += _DSIGMA[proc](ab, energy, v) * ab.per_gram * thickness
        else:
            raise ValueError(f"process {proc!r}: unknown (known: brems, pair, knock_on)")
    cumulative = ln_cumulative(v, dndv)
    return LossSpectrum(absorber, float(energy), float(thickness), float(v_min), tuple(processes), v, dndv, cumulative)
