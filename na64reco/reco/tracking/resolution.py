"""Analytic expected momentum resolution of a station for the configured geometry.

The kick fit (see :mod:`.tracks`) is the weighted least-squares estimator
``theta = G u`` with ``G = (A^T W A)^-1 A^T W``, ``W = diag(1/sigma_i^2)`` (plane
resolutions only).  The measured coordinates have covariance

    V = diag(sigma_i^2) + sum_s theta_s^2 g_s g_s^T,     g_s,i = max(z_i - z_s, 0)

where ``s`` runs over the scatterers between the first and the last plane of the view:
every tracker plane (thin, ``x0_fraction``) and the air (``air_x0_per_metre``, each gap
between planes as a thick layer: its Highland angle spread uniformly over 16 thin
sub-layers).  Highland (PDG 2024 eq. 34.16):
``theta0 = 13.6 MeV / (beta p) sqrt(x) (1 + 0.038 ln(x / beta^2))``.
The covariance of the estimator is ``G V G^T`` (sandwich: exact for Gaussian errors
even though the fit ignores the scattering correlations); ``sigma(p)/p = sigma(kappa)/kappa``
to first order.
"""

from __future__ import annotations

import numpy as np

from na64reco import constants

HIGHLAND_MEV = 13.6  # PDG 2024 eq. 34.16
HIGHLAND_LOG = 0.038
AIR_SUBLAYERS = 16


def highland(p, x_over_x0, mass=constants.MUON_MASS):
    """Projected multiple-scattering angle (rad) for momentum ``p`` (MeV)."""
    if x_over_x0 <= 0:
        return 0.0
    beta = p / np.hypot(p, mass)
    return HIGHLAND_MEV / (beta * p) * np.sqrt(x_over_x0) * (1 + HIGHLAND_LOG * np.log(x_over_x0 / beta**2))


def scatterers(setup, z_first: float, z_last: float, p: float, mass=constants.MUON_MASS):
    """(z, theta0) of the scatterers between ``z_first`` and ``z_last`` (mm) at momentum ``p``."""
    out = []
    zs = sorted({pl.z for pl in setup.planes if z_first <= pl.z < z_last})
    for pl in setup.planes:
        if z_first <= pl.z < z_last:
            out.append((pl.z, highland(p, pl.x0_fraction, mass)))
    edges = [z_first] + [z for z in zs if z > z_first] + [z_last]
    air = setup.readout.air_x0_per_metre
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        th = highland(p, air * (b - a) / 1000.0, mass)
        sub = (np.arange(AIR_SUBLAYERS) + 0.5) / AIR_SUBLAYERS
        for f in sub:
            out.append((a + f * (b - a), th / np.sqrt(AIR_SUBLAYERS)))
    return out


def view_covariance(setup, view, p: float, planes_used=None, *, scattering: bool = True,
                    mass=constants.MUON_MASS) -> np.ndarray:
    """Covariance of the fitted view parameters (a mm, b mrad[, kappa mrad]) at momentum ``p``.

    ``planes_used``: boolean mask over the view's planes (default: all).
    """
    used = np.ones(len(view.planes), bool) if planes_used is None else np.asarray(planes_used, bool)
    planes = [setup.planes[i] for i, u in zip(view.planes, used) if u]
    dz = np.array([d for d, u in zip(view.dz, used) if u])
    down = np.array([d for d, u in zip(view.down, used) if u])
    cols = [np.ones_like(dz), dz] + ([np.where(down, -dz, 0.0)] if view.bend else [])
    A = np.stack(cols, axis=1)
    sig = np.array([pl.resolution for pl in planes])
    W = np.diag(1.0 / sig**2)
    G = np.linalg.solve(A.T @ W @ A, A.T @ W)
    V = np.diag(sig**2)
    if scattering:
        z = np.array([pl.z for pl in planes])
        for zs, th in scatterers(setup, z.min(), z.max(), p, mass):
            g = np.clip(z - zs, 0.0, None)
            V = V + th**2 * np.outer(g, g)
    return G @ V @ G.T


def momentum_resolution(setup, view, p: float, planes_used=None, *, scattering: bool = True) -> float:
    """Expected relative resolution sigma(p)/p of the bend ``view`` at momentum ``p`` (MeV)."""
    if not view.bend:
        raise ValueError(f"view {view.station}/{view.coord} is not a bend view: no momentum")
    cov = view_covariance(setup, view, p, planes_used, scattering=scattering)
    kappa = setup.magnets[view.station].kick(p) * 1000.0  # mrad
    return float(np.sqrt(cov[2, 2]) / kappa)
