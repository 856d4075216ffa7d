"""Muon tridents mu N -> mu N mu+ mu- in the ECAL: what the transport's ``dimuon`` process draws.

Two parts, each a probability per muon crossing the ECAL:

* **spacelike (Bethe-Heitler), the toy** (``simulation.dimuon`` of the setup, rate *assumed*): the pair's
  energy fraction v from 1/v on [v_min, v_max], its share between the two muons uniform in 0.1-0.9, each
  muon's angle Gaussian with sigma m_mu / p, the primary without a recoil;
* **timelike** (:mod:`na64reco.physics.tridents`, computed): a virtual photon of mass M emitted like a
  dark photon with epsilon = 1, M from its spectral density times the emission cross section, v = x from
  the IWW spectrum at that M (``darkbrem.sample_x``), the primary recoiling with the photon's p_T
  (``darkbrem.sample_pt``), the photon decaying to the pair isotropically in its rest frame.

A ``dimuon`` event is timelike with probability rate_timelike / (rate_toy + rate_timelike).  Forced
(biased runs, v >= ``biasing.v_min``): the same two parts restricted to v >= v_min, each with its
probability there; the event's weight is their sum (the probability per muon of a trident in the
forced region), the part drawn by its share.
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
    """Tridents per muon crossing the ECAL: the toy's and the timelike part's, in all and forced."""

    toy: float
    timelike: float
    toy_forced: float
    timelike_forced: float

    @property
    def forced(self) -> float:
        return self.toy_forced + self.timelike_forced


def rates(params, e0: float) -> Rates:
    """:class:`Rates` for the setup's parameters (``SimParams``) and beam energy ``e0`` (MeV)."""
    atoms = LEAD.per_gram * params.ecal_lead_g_cm2  # lead nuclei per mm2 of the ECAL
    lo, hi, bias = params.dimuon_v_min, params.dimuon_v_max, params.bias_v_min
    toy_share = np.log(hi / max(bias, lo)) / np.log(hi / lo) if bias < hi else 0.0
    return Rates(toy=params.dimuon_rate, timelike=tridents.timelike_sigma(e0) * atoms,
                 toy_forced=params.dimuon_rate * float(toy_share),
                 timelike_forced=tridents.timelike_sigma(e0, bias) * atoms)


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


def draw(rng: np.random.Generator, p: np.ndarray, e0: float, params, biased: bool):
    """The tridents of muons of momentum ``p`` (MeV): ``(v, legs, recoil, weight)``.

    ``v``: the pair's energy fraction; ``legs``: two ``(momentum, dtx, dty)`` of mu+ and mu- (slopes relative
    to the primary's before the vertex); ``recoil``: the primary's ``(dtx, dty)``; ``weight``: the forced
    probability per muon (biased) or 1.
    """
    n = p.size
    r = rates(params, e0)
    share_tl = (r.timelike_forced / r.forced) if biased else r.timelike / (r.toy + r.timelike)
    timelike = rng.random(n) < share_tl
    v = np.empty(n)
    legs = [[np.empty(n), np.zeros(n), np.zeros(n)] for _ in range(2)]
    recoil = (np.zeros(n), np.zeros(n))
    # the toy (spacelike)
    toy = np.flatnonzero(~timelike)
    if toy.size:
        lo = max(params.bias_v_min, params.dimuon_v_min) if biased else params.dimuon_v_min
        v[toy] = np.exp(rng.uniform(np.log(lo), np.log(params.dimuon_v_max), toy.size))
        share = rng.uniform(0.1, 0.9, toy.size)
        for leg, frac in zip(legs, (share, 1.0 - share), strict=True):
            e = v[toy] * p[toy] * frac
            leg[0][toy] = e
            th = constants.MUON_MASS / e * rng.standard_normal((2, toy.size))
            leg[1][toy], leg[2][toy] = th
    # the timelike part
    tl = np.flatnonzero(timelike)
    if tl.size:
        x_min = params.bias_v_min if biased else None
        masses = tridents.sample_mass(rng, tl.size, e0, x_min)
        x, pt = _draw_x_pt(rng, e0, masses, x_min)
        v[tl] = x
        e_gamma = x * p[tl]
        phi = rng.uniform(0.0, 2 * np.pi, tl.size)
        p_after = (1.0 - x) * p[tl]
        recoil[0][tl], recoil[1][tl] = pt / p_after * np.cos(phi), pt / p_after * np.sin(phi)
        gx, gy = -pt / e_gamma * np.cos(phi), -pt / e_gamma * np.sin(phi)  # the photon's direction
        # the decay: isotropic in the photon's rest frame, boosted along its direction
        pstar = np.sqrt(np.clip(masses**2 / 4.0 - constants.MUON_MASS**2, 0.0, None))
        cos = rng.uniform(-1.0, 1.0, tl.size)
        sin = np.sqrt(1.0 - cos**2)
        az = rng.uniform(0.0, 2 * np.pi, tl.size)
        gamma = e_gamma / masses
        beta = np.sqrt(np.clip(1.0 - 1.0 / gamma**2, 0.0, None))
        for leg, sign in zip(legs, (1.0, -1.0), strict=True):
            p_par = gamma * (sign * pstar * cos + beta * masses / 2.0)
            p_t = sign * pstar * sin
            energy = gamma * (masses / 2.0 + sign * beta * pstar * cos)
            leg[0][tl] = np.sqrt(np.clip(energy**2 - constants.MUON_MASS**2, 0.0, None))  # its momentum
            along = np.maximum(p_par, 1e-9)
            leg[1][tl] = gx + p_t / along * np.cos(az)
            leg[2][tl] = gy + p_t / along * np.sin(az)
    weight = np.full(n, r.forced) if biased else np.ones(n)
    return v, [tuple(leg) for leg in legs], recoil, weight
