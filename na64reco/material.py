"""Passage of charged particles through matter: the one implementation of the Highland formula.

Low layer (imports only :mod:`numpy`): the simulation (:mod:`na64reco.sim.tracks`) and the
reconstruction (:mod:`na64reco.reco.tracking.resolution`) both use it.

Units: momenta and masses in MeV, material thickness in radiation lengths, angles in rad.
"""

from __future__ import annotations

import numpy as np

#: Highland constants (PDG 2024, "Passage of particles through matter", eq. 34.16).
HIGHLAND_MEV = 13.6
HIGHLAND_LOG = 0.038


def highland(p, mass, x_over_x0):
    """Plane-projected multiple-scattering angle theta0 (rad), Highland (PDG eq. 34.16):

        theta0 = 13.6 MeV / (beta c p) * sqrt(x/X0) * (1 + 0.038 ln(x / (X0 beta^2)))

    ``p`` and ``mass`` in MeV (scalars or arrays, broadcast), ``x_over_x0`` the material in
    radiation lengths.  Returns 0 where there is no material (and never a negative angle).
    A scalar result for scalar arguments.
    """
    p = np.asarray(p, float)
    x = np.asarray(x_over_x0, float)
    beta = p / np.sqrt(p * p + np.asarray(mass, float) ** 2)
    safe = np.where(x > 0, x, 1.0)
    theta = HIGHLAND_MEV / (beta * p) * np.sqrt(safe) * (1.0 + HIGHLAND_LOG * np.log(safe / beta**2))
    out = np.where(x > 0, np.clip(theta, 0.0, None), 0.0)
    return out[()] if out.ndim == 0 else out


def thick_scatterer_offset_sigma(theta0, length):
    """Spread (same unit as ``length``) of the entry-face position of the straight line
    fitted to the exit of a thick scatterer, relative to the true entry point.

    PDG eq. 34.19-34.20: at the exit ``y = L theta0 (z1/sqrt(12) + z2/2)``, ``theta = theta0 z2``;
    the exit line extrapolated back by ``L`` is off by ``L theta0 (z1/sqrt(12) - z2/2)``, whose
    variance is ``L^2 theta0^2 / 3``.
    """
    return np.asarray(length, float) * np.asarray(theta0, float) / np.sqrt(3.0)
