"""Analytic expected momentum resolution of a station for the configured geometry.

The kick fit (see :mod:`.tracks`) is the weighted least-squares estimator
``theta = G u`` with ``G = (A^T W A)^-1 A^T W``, ``W = diag(1/sigma_i^2)`` (plane
resolutions only).  The measured coordinates have covariance

    V = diag(sigma_i^2) + sum_s theta_s^2 g_s g_s^T,     g_s,i = max(z_i - z_s, 0)

where ``s`` runs over the scatterers between the first and the last plane of the view:
every tracker plane (thin, ``x0_fraction``) and the air (``air_x0_per_metre``, each gap
between planes as a thick layer: its Highland angle spread uniformly over 16 thin
sub-layers).  Highland: :func:`na64reco.material.highland`.
The covariance of the estimator is ``G V G^T`` (sandwich: exact for Gaussian errors
even though the fit ignores the scattering correlations); ``sigma(p)/p = sigma(kappa)/kappa``
to first order.
"""

from __future__ import annotations

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.material import highland, thick_scatterer_offset_sigma
from na64reco.units import MM_PER_M, MRAD_PER_RAD

AIR_SUBLAYERS = 16


def scatterers(setup, z_first: float, z_last: float, p: float, mass=constants.MUON_MASS):
    """(z, theta0) of the scatterers between ``z_first`` and ``z_last`` (mm) at momentum ``p``."""
    out = []
    zs = sorted({pl.z for pl in setup.planes if z_first <= pl.z < z_last})
    for pl in setup.planes:
        if z_first <= pl.z < z_last:
            out.append((pl.z, highland(p, mass, pl.x0_fraction)))
    edges = [z_first] + [z for z in zs if z > z_first] + [z_last]
    air = setup.readout.air_x0_per_metre
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        th = highland(p, mass, air * (b - a) / MM_PER_M)
        sub = (np.arange(AIR_SUBLAYERS) + 0.5) / AIR_SUBLAYERS
        for f in sub:
            out.append((a + f * (b - a), th / np.sqrt(AIR_SUBLAYERS)))
    return out


def _view_fit(setup, view, planes_used=None):
    """``(z, sigma, G)`` of the used planes of ``view``: their positions (mm), resolutions (mm) and
    the weighted least-squares estimator ``G = (A^T W A)^-1 A^T W`` of the view's parameters."""
    used = np.ones(len(view.planes), bool) if planes_used is None else np.asarray(planes_used, bool)
    planes = [setup.planes[i] for i, u in zip(view.planes, used, strict=True) if u]
    dz = np.array([d for d, u in zip(view.dz, used, strict=True) if u])
    down = np.array([d for d, u in zip(view.down, used, strict=True) if u])
    cols = [np.ones_like(dz), dz] + ([np.where(down, -dz, 0.0)] if view.bend else [])
    A = np.stack(cols, axis=1)
    sig = np.array([pl.resolution for pl in planes])
    W = np.diag(1.0 / sig**2)
    return np.array([pl.z for pl in planes]), sig, np.linalg.solve(A.T @ W @ A, A.T @ W)


def view_covariance(setup, view, p: float, planes_used=None, *, scattering: bool = True,
                    mass=constants.MUON_MASS) -> np.ndarray:
    """Covariance of the fitted view parameters (a mm, b mrad[, kappa mrad]) at momentum ``p``.

    ``planes_used``: boolean mask over the view's planes (default: all).
    """
    z, sig, G = _view_fit(setup, view, planes_used)
    V = np.diag(sig**2)
    if scattering:
        for zs, th in scatterers(setup, z.min(), z.max(), p, mass):
            g = np.clip(z - zs, 0.0, None)
            V = V + th**2 * np.outer(g, g)
    return G @ V @ G.T


def momentum_resolution(setup, view, p: float, planes_used=None, *, scattering: bool = True) -> float:
    """Expected relative resolution sigma(p)/p of the bend ``view`` at momentum ``p`` (MeV)."""
    if not view.bend:
        raise ValueError(f"view {view.station}/{view.coord} is not a bend view: no momentum")
    cov = view_covariance(setup, view, p, planes_used, scattering=scattering)
    kappa = setup.magnets[view.station].kick(p) * MRAD_PER_RAD  # mrad
    return float(np.sqrt(cov[2, 2]) / kappa)


# ---------------------------------------------------------------------------------------
# Track matching at the ECAL front: incoming track (downstream segments of the "in" station)
# vs outgoing track (upstream segments of the "out" station), both extrapolated to the ECAL
# front face z_E.  Per projection the difference d = u_out - u_in has the variance
#
#   var(d) = g_in^T C_in g_in + sum_s theta_s(p_in)^2 (z_E - z_s)^2           incoming fit + material to z_E
#          + L^2 theta0_ECAL(p_out)^2 / 3                                       the ECAL (thick scatterer)
#          + g_out^T C_out g_out + sum_s theta_s(p_out)^2 (z_s - z_E)^2         outgoing fit + material back to z_E
#
# with C the fitted-parameter covariance of the view (:func:`view_covariance`, points and
# scattering between its planes), g = d(u at z_E)/d(parameters), and s the scatterers
# (tracker planes, air, counters/calorimeters other than the ECAL with x0_fraction > 0)
# between the view and the ECAL.  For beta = 1 every scattering term scales as 1/p^2, so
# var(d) = a + b_in (p_ref/p_in)^2 + b_out (p_ref/p_out)^2 with coefficients computed once.
# ``track_match_chi2 = dx^2/var(dx) + dy^2/var(dy)`` is chi2(2 dof) distributed for a muon
# that crosses the ECAL without a kink (the beam; the signal up to its emission angle).
def _material_between(setup, z_a: float, z_b: float, p: float, mass=constants.MUON_MASS, *, skip=("ECAL",)):
    """(z, theta0) of every scatterer in [z_a, z_b) (mm): tracker planes, air, counters and
    calorimeters with material (except ``skip``; a thick one counts at its centre)."""
    out = list(scatterers(setup, z_a, z_b, p, mass)) if z_b > z_a else []
    for name, det in setup.calorimeters.items():
        if name in skip or det.x0_fraction <= 0:
            continue
        zc = det.z + 0.5 * det.depth
        if z_a <= zc < z_b:
            out.append((zc, float(highland(p, mass, det.x0_fraction))))
    return out


def extrapolation_variance(setup, view, z: float, p: float, *, downstream: bool, planes_used=None,
                           mass=constants.MUON_MASS) -> float:
    """Variance (mm^2) of the position at ``z`` (mm) of a ``view`` track of momentum ``p`` (MeV)
    against the muon's true position there: the fitted parameters (points + scattering inside the
    view) propagated to ``z`` (the downstream segment if ``downstream``), and the scattering in
    the material between the view's planes and ``z``.

    A scatterer at ``z_s`` with angle ``theta_s`` moves the measured points by ``theta_s (z_i -
    z_s)+`` and the true position at ``z`` by ``theta_s (z - z_s)+``; the error of the extrapolation
    is the difference, ``theta_s h_s`` with ``h_s = g G S_s - (z - z_s)+`` (``G`` the fit, ``g`` its
    derivative at ``z``, ``S_s`` the points' displacements).  Before stop 48 the second term was
    left out for scatterers inside the view: a kink that the fit follows (one before the last planes)
    was counted as an error of the extrapolation to the ECAL, and the track-match chi2 of beam muons
    had its median at 0.71 of chi2(2)'s."""
    zi, sig, G = _view_fit(setup, view, planes_used)
    dz_z = (z - view.z_magnet) / MM_PER_M  # m (parameters: a mm, b mrad, kappa mrad)
    g = np.array([1.0, dz_z, -dz_z if downstream else 0.0])[: G.shape[0]]
    gG = g @ G  # the extrapolated position's weights on the measured points
    var = float(np.sum((gG * sig) ** 2))
    lo, hi = (zi.max(), z) if z >= zi.max() else (z, zi.min())
    material = scatterers(setup, zi.min(), zi.max(), p, mass) + _material_between(setup, lo, hi, p, mass)
    for z_s, th in material:
        h = gG @ np.clip(zi - z_s, 0.0, None) - max(z - z_s, 0.0)
        var += (th * h) ** 2
    return var


def ecal_match_variance(setup, p: float, mass=constants.MUON_MASS) -> float:
    """Variance (mm^2) of the back-extrapolated position at the ECAL front of a muon of
    momentum ``p`` (MeV) leaving the ECAL (thick scatterer, PDG eq. 34.19-34.20)."""
    ecal = setup.detector("ECAL")
    th = highland(p, mass, ecal.x0_fraction)
    return float(thick_scatterer_offset_sigma(th, ecal.depth)) ** 2


class MatchResolution:
    """``var(d)`` of one projection as ``a + b_in (p_ref/p_in)^2 + b_out (p_ref/p_out)^2``
    (mm^2, momenta in MeV); see the comment above.  ``in_used``/``out_used``: plane masks of
    the two views (default all planes)."""

    P_REF = 100 * u.GeV  # the reference momentum of the b terms

    def __init__(self, setup, view_in, view_out, in_used=None, out_used=None, mass=constants.MUON_MASS):
        z_e = setup.detector("ECAL").z

        def v_in(p):
            return extrapolation_variance(setup, view_in, z_e, p, downstream=True, planes_used=in_used, mass=mass)

        def v_out(p):
            var = extrapolation_variance(setup, view_out, z_e, p, downstream=False, planes_used=out_used, mass=mass)
            # the material between the ECAL back face and z_E itself is the ECAL (counted apart)
            return var + ecal_match_variance(setup, p, mass)

        # two evaluations per side separate the constant (point) part from the 1/p^2 part
        big = 1e12
        a_in, a_out = v_in(big), v_out(big)
        self.a = a_in + a_out
        self.a_out = a_out  # the outgoing track's part alone (matching it to incoming hits)
        self.b_in = v_in(self.P_REF) - a_in
        self.b_out = v_out(self.P_REF) - a_out

    def variance(self, p_in, p_out):
        """Variance (mm^2) of ``u_out - u_in`` at the ECAL front for momenta in MeV (arrays)."""
        p_in, p_out = np.asarray(p_in), np.asarray(p_out)
        return self.a + self.b_in * (self.P_REF / p_in) ** 2 + self.b_out * (self.P_REF / p_out) ** 2


def hit_extrapolation_variance(setup, plane, z: float, p: float, divergence: float, mass=constants.MUON_MASS) -> float:
    """Variance (mm^2) of the position at ``z`` (mm, downstream of ``plane``) of an incoming
    muon of momentum ``p`` (MeV) predicted from its hit on ``plane`` alone, carried along the
    beam direction (no bend between the plane and ``z`` in the plane's coordinate): the hit's
    resolution, the muon's angle to the beam direction at the plane (``divergence``, rad, and
    the scattering in the material from the beam start to the plane) times the lever arm, and
    the scattering in the material between the plane and ``z``."""
    lever = z - plane.z
    var = plane.resolution**2 + (divergence * lever) ** 2
    for _, th in _material_between(setup, setup.beam.start_z, plane.z, p, mass):
        var += (th * lever) ** 2
    for z_s, th in _material_between(setup, plane.z, z, p, mass):
        var += th**2 * (z - z_s) ** 2
    return float(var)


class HitMatchResolution:
    """Incoming hits as the incoming side of the track match, for a projection whose incoming
    view has no track: per usable plane of ``view_in`` (straight from the plane to the ECAL
    front in its coordinate: every plane of a non-bend view, the downstream planes of a bend
    view), ``shift`` (mm) carries a hit along the beam direction to the ECAL front (reference
    trajectory there minus at the plane) and its variance is ``c0 + c1 (p_ref/p_in)^2``
    (:func:`hit_extrapolation_variance`).  ``planes`` are the setup plane indices."""

    P_REF = MatchResolution.P_REF

    def __init__(self, setup, view_in, mass=constants.MUON_MASS):
        z_e = setup.detector("ECAL").z
        div = setup.beam.divergence_x if view_in.coord == "x" else setup.beam.divergence_y
        k = 0 if view_in.coord == "x" else 1
        ref_e = setup.reference_position(z_e)[k]
        planes, shift, c0, c1 = [], [], [], []
        for i, down in zip(view_in.planes, view_in.down, strict=True):
            pl = setup.planes[i]
            if view_in.bend and not down:
                continue
            big = hit_extrapolation_variance(setup, pl, z_e, 1e12, div, mass)
            planes.append(i)
            shift.append(float(ref_e - setup.reference_position(pl.z)[k]))
            c0.append(big)
            c1.append(hit_extrapolation_variance(setup, pl, z_e, self.P_REF, div, mass) - big)
        self.planes = np.array(planes, np.int64)
        self.shift, self.c0, self.c1 = np.array(shift), np.array(c0), np.array(c1)
