"""Muon tridents mu N -> mu N mu+ mu- in the ECAL: what the transport's ``dimuon`` process draws.

Two parts, each a probability per muon crossing the ECAL, both computed (:mod:`na64reco.physics.tridents`):

* **spacelike** (Bethe-Heitler: the pair made by the muon's nearly real photon in the nucleus' field), above
  ``simulation.dimuon.v_min`` of the setup: the pair's energy fraction v and asymmetry rho from Kelner,
  Kokoulin and Petrukhin's cross section (``sample_spacelike``); the photon's transverse momentum k_T from
  the equivalent-photon spectrum k_T^2 dk_T^2 / (k_T^2 + m^2 v^2)^2 up to a virtuality 4 m^2 above its
  minimum (k_T^2 <= 4 m^2 (1 - v), assumed: the pair's mass scale), the primary recoiling with -k_T; each
  muon at an angle u m / E from the photon's direction, u from 2 u du / (1 + u^2)^2 (the leading form of
  the pair's angular distribution, cut at u = 10 and at 1 rad), the two azimuths opposite; the asymmetry's
  range from the muon's own energy;
* **timelike**: a virtual photon of mass M emitted like a dark photon with epsilon = 1, M from its spectral
  density times the emission cross section, v = x from the IWW spectrum at that M (``darkbrem.sample_x``),
  the primary recoiling with the photon's p_T (``darkbrem.sample_pt``), the photon decaying to the pair
  isotropically in its rest frame.

A ``dimuon`` event is timelike with probability rate_timelike / (rate_spacelike + rate_timelike).  Forced
(biased runs, v >= ``biasing.v_min``): the same two parts restricted to v >= v_min, each with its
probability there; the event's weight is their sum (the probability per muon of a trident in the
forced region), the part drawn by its share.  Until stop 44 the spacelike part was a toy with an assumed
rate (1e-5 per muon on 0.02 < v < 0.6, 1/v, no recoil): the computed part is 0.86x that on the toy's range,
1.07x in the forced region, and reaches v = 1 (4.6e-7 per muon above v = 0.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na64reco import constants
from na64reco.physics import darkbrem, tridents
from na64reco.physics.muon_losses import LEAD

_MAX_REDRAWS = 200


@dataclass(frozen=True)
class Rates:
    """Tridents per muon crossing the ECAL: the spacelike and the timelike part's, in all and forced."""

    spacelike: float
    timelike: float
    spacelike_forced: float
    timelike_forced: float

    @property
    def total(self) -> float:
        return self.spacelike + self.timelike

    @property
    def forced(self) -> float:
        return self.spacelike_forced + self.timelike_forced


def rates(params, e0: float) -> Rates:
    """:class:`Rates` for the setup's parameters (``SimParams``) and beam energy ``e0`` (MeV)."""
    atoms = LEAD.per_gram * params.ecal_lead_g_cm2  # lead nuclei per mm2 of the ECAL
    lo, bias = params.dimuon_v_min, params.need("bias_v_min")
    return Rates(spacelike=tridents.spacelike_sigma(e0, lo) * atoms, timelike=tridents.timelike_sigma(e0) * atoms,
                 spacelike_forced=tridents.spacelike_sigma(e0, max(lo, bias)) * atoms,
                 timelike_forced=tridents.timelike_sigma(e0, bias) * atoms)


#: the photon's virtuality above its minimum, in units of m_mu^2, where the equivalent-photon spectrum is
#: cut (the pair's mass scale, (2 m_mu)^2; assumed)
_KT_CUT_M2 = 4.0
#: the pair muons' angles from the photon's direction: u = theta E / m_mu up to this (the 1 / u^3 tail of
#: 2 u / (1 + u^2)^2 beyond it holds 1 % of the pairs), and theta up to _THETA_MAX (a muon of a few hundred
#: MeV: it leaves the ECAL sideways or stops in it)
_U_MAX = 10.0
_THETA_MAX = 1.0


def _photon_kt(rng, v: np.ndarray, m: float) -> np.ndarray:
    """k_T (MeV) of the spacelike photon: density k^2 dk^2 / (k^2 + a)^2, a = m^2 v^2, on
    k^2 <= _KT_CUT_M2 m^2 (1 - v), by inverting its CDF F(x) = ln(1 + x / a) - x / (x + a) (bisection)."""
    a = (m * v) ** 2
    k2max = _KT_CUT_M2 * m * m * (1.0 - v)

    def cdf(x):
        return np.log1p(x / a) - x / (x + a)

    target = rng.random(v.size) * cdf(k2max)
    lo, hi = np.zeros(v.size), k2max.copy()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.sqrt(0.5 * (lo + hi))


def _photon_emission(rng, pt: np.ndarray, v: np.ndarray, p: np.ndarray):
    """A photon of energy fraction ``v`` and transverse momentum ``pt`` emitted by muons of momentum ``p`` at a
    random azimuth: ``(recoil, (gx, gy))``, the primary's slopes' change and the photon's slopes."""
    phi = rng.uniform(0.0, 2 * np.pi, p.size)
    cos, sin = np.cos(phi), np.sin(phi)
    p_after, e_gamma = (1.0 - v) * p, v * p
    return (pt / p_after * cos, pt / p_after * sin), (-pt / e_gamma * cos, -pt / e_gamma * sin)


def _spacelike(rng, p: np.ndarray, e0: float, v_min: float):
    """``(v, legs, recoil)`` of spacelike pairs for muons of momentum ``p`` (see the module doc)."""
    m = constants.MUON_MASS
    n = p.size
    v, rho = tridents.sample_spacelike(rng, n, e0, v_min, energy=p)
    recoil, (gx, gy) = _photon_emission(rng, _photon_kt(rng, v, m), v, p)
    e_pair = v * p
    az = rng.uniform(0.0, 2 * np.pi, n)
    legs = []
    for sign in (1.0, -1.0):
        energy = 0.5 * e_pair * (1.0 + sign * rho)
        r = rng.random(n) * _U_MAX**2 / (1.0 + _U_MAX**2)  # the CDF u^2 / (1 + u^2) cut at _U_MAX
        theta = np.tan(np.minimum(np.sqrt(r / (1.0 - r)) * m / energy, _THETA_MAX))  # as a slope
        legs.append((np.sqrt(np.clip(energy**2 - m * m, 0.0, None)),
                     gx + sign * theta * np.cos(az), gy + sign * theta * np.sin(az)))
    return v, legs, recoil


def _draw_x_pt(rng, e0: float, masses: np.ndarray, x_min: float | None):
    """x from the IWW spectrum at each mass (redrawn below ``x_min``, the forced region) and the photon's
    p_T at that x (``darkbrem.sample_pt``), per mass of the table's grid (``masses`` are grid values)."""
    x, pt = np.empty(masses.size), np.empty(masses.size)
    for m in np.unique(masses):
        sel = np.flatnonzero(masses == m)
        xs = darkbrem.sample_x(rng, sel.size, e0, m)
        for _ in range(_MAX_REDRAWS):
            low = np.flatnonzero(xs < x_min) if x_min is not None else np.zeros(0, np.int64)
            if not low.size:
                break
            xs[low] = darkbrem.sample_x(rng, low.size, e0, m)
        else:  # (at least ~half of every mass's spectrum lies above the forced region's edge)
            raise RuntimeError(f"timelike trident of mass {m:.1f} MeV: no x >= {x_min} in {_MAX_REDRAWS} draws")
        x[sel] = xs
        pt[sel] = darkbrem.sample_pt(rng, x[sel], e0, m)
    return x, pt


def _timelike(rng, p: np.ndarray, e0: float, x_min: float | None):
    """``(v, legs, recoil)`` of timelike pairs for muons of momentum ``p`` (see the module doc)."""
    m = constants.MUON_MASS
    n = p.size
    masses = tridents.sample_mass(rng, n, e0, x_min)
    x, pt = _draw_x_pt(rng, e0, masses, x_min)
    recoil, (gx, gy) = _photon_emission(rng, pt, x, p)
    e_gamma = x * p
    # the decay: isotropic in the photon's rest frame, boosted along its direction
    pstar = np.sqrt(np.clip(masses**2 / 4.0 - m**2, 0.0, None))
    cos = rng.uniform(-1.0, 1.0, n)
    sin = np.sqrt(1.0 - cos**2)
    az = rng.uniform(0.0, 2 * np.pi, n)
    gamma = e_gamma / masses
    beta = np.sqrt(np.clip(1.0 - 1.0 / gamma**2, 0.0, None))
    legs = []
    for sign in (1.0, -1.0):
        p_par = gamma * (sign * pstar * cos + beta * masses / 2.0)
        p_t = sign * pstar * sin
        energy = gamma * (masses / 2.0 + sign * beta * pstar * cos)
        along = np.maximum(p_par, 1e-9)
        legs.append((np.sqrt(np.clip(energy**2 - m**2, 0.0, None)),  # its momentum
                     gx + p_t / along * np.cos(az), gy + p_t / along * np.sin(az)))
    return x, legs, recoil


def draw(rng: np.random.Generator, p: np.ndarray, e0: float, params, biased: bool):
    """The tridents of muons of momentum ``p`` (MeV): ``(v, legs, recoil, weight)``.

    ``v``: the pair's energy fraction; ``legs``: two ``(momentum, dtx, dty)`` of mu+ and mu- (slopes relative
    to the primary's before the vertex); ``recoil``: the primary's ``(dtx, dty)``; ``weight``: the forced
    probability per muon (biased) or 1.
    """
    n = p.size
    r = rates(params, e0)
    share_tl = (r.timelike_forced / r.forced) if biased else r.timelike / r.total
    timelike = rng.random(n) < share_tl
    v = np.empty(n)
    legs = [[np.empty(n), np.zeros(n), np.zeros(n)] for _ in range(2)]
    recoil = (np.zeros(n), np.zeros(n))
    bias = params.need("bias_v_min") if biased else None
    v_min = max(bias, params.dimuon_v_min) if biased else params.dimuon_v_min
    parts = ((np.flatnonzero(~timelike), lambda pp: _spacelike(rng, pp, e0, v_min)),
             (np.flatnonzero(timelike), lambda pp: _timelike(rng, pp, e0, bias)))
    for sel, make in parts:  # the spacelike part first, then the timelike one
        if sel.size:
            v[sel], pair, (rx, ry) = make(p[sel])
            recoil[0][sel], recoil[1][sel] = rx, ry
            for leg, made in zip(legs, pair, strict=True):
                for k in range(3):
                    leg[k][sel] = made[k]
    weight = np.full(n, r.forced) if biased else np.ones(n)
    return v, [tuple(leg) for leg in legs], recoil, weight
