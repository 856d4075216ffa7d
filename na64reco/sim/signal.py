"""Dark bremsstrahlung signal: l N -> l N X with X (Z' or A') escaping.

* x = E_X / E_0 is drawn from the IWW d sigma/dx of :mod:`na64reco.physics.darkbrem`
  (``sample_x``) at the nominal beam energy; the shape depends only weakly on E_0 over
  the few-% beam spread, so E_X = x E at the vertex.
* Vertex depth: muons (na64mu) uniform in the ECAL's radiation lengths, i.e. in the lead crossed,
  not in millimetres (the muon keeps ~its energy over 40 X0, so the production rate per X0 is flat;
  ``na64reco.sim.transport._vertex_depths``); electrons (na64e) uniform over the
  primary electron's first ``constants.ELECTRON_SIGNAL_DEPTH_X0`` (1 X0) from the ECAL front, as the
  yield integrates it (:mod:`na64reco.physics.yields`); the electron reaches the vertex with its mean
  energy E(t) = E_0 exp(-t), the photons it radiated before shower from the ECAL front, and the X
  takes x E(t).
* The lepton continues with (1 - x) E (E at the vertex; the electron's shower starts there) and
  the opposite of the X's transverse momentum,
  drawn at that x from the same WW double-differential cross section
  (:func:`na64reco.physics.darkbrem.sample_pt`; typically sqrt(m_X^2 (1 - x) + m_l^2 x^2),
  ~80 MeV at x = 0.75 for a light Z', the nucleus's recoil neglected), in a uniform
  azimuth; the X deposits nothing.
* truth weight: expected signal events per beam particle for (mass, coupling) from
  :func:`na64reco.physics.yields.expected_signal` (N_MOT = 1, efficiency 1, the whole x
  range); 1.0 if that module is not available.
"""

from __future__ import annotations

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.errors import ConfigError


def lepton_mass_of(particle: str) -> float:
    return constants.MUON_MASS if particle.startswith("mu") else constants.ELECTRON_MASS


def sample_signal_x(rng: np.random.Generator, n: int, e0: float, mass: float, lepton_mass: float):
    """``n`` values of x from the IWW spectrum (physics.darkbrem.sample_x)."""
    from na64reco.physics.darkbrem import sample_x, x_limits

    lo, hi = x_limits(e0, mass, lepton_mass)
    if not 0 < lo < hi:
        raise ConfigError(f"signal mass {mass / u.GeV:g} GeV is not kinematically allowed at "
                          f"E0 = {e0 / u.GeV:g} GeV")
    if n == 0:
        return np.zeros(0)
    return sample_x(rng, n, e0, mass, lepton_mass, constants.LEAD_Z, constants.LEAD_MASS_NUMBER)


def signal_weight(mass: float, coupling: float, e0: float, lepton_mass: float) -> float:
    """Expected signal events per beam particle (:func:`na64reco.physics.yields.expected_signal`).

    A ConfigError if it is above 1: each beam particle makes at most one event, and the yield's
    coupling^2 scaling (a thin target, the X rarely emitted) has broken down long before."""
    from na64reco.physics.yields import expected_signal

    model = "zprime" if lepton_mass > 10 * constants.ELECTRON_MASS else "aprime"
    weight = float(expected_signal(1.0, mass, coupling, e0=e0, lepton_mass=lepton_mass, model=model))
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"coupling {coupling:g} at mass {mass / u.GeV:g} GeV gives {weight:.3g} expected signal "
                          "events per beam particle, not in 0..1: the yield's coupling^2 scaling does not hold "
                          "there; simulate with a smaller coupling (the weights scale as coupling^2)")
    return weight


def recoil_slopes(rng: np.random.Generator, p_after, x, e0: float, mass: float, lepton_mass: float):
    """(dtx, dty) of the lepton recoiling from an X emitted with energy fraction ``x``: its p_T
    from :func:`na64reco.physics.darkbrem.sample_pt`, its azimuth uniform."""
    from na64reco.physics.darkbrem import sample_pt

    n = np.size(p_after)
    pt = sample_pt(rng, np.asarray(x, float), e0, mass, lepton_mass)
    phi = rng.uniform(0, 2 * np.pi, n)
    return pt / p_after * np.cos(phi), pt / p_after * np.sin(phi)
