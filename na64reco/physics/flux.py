"""Effective photon flux chi of the Weizsacker-Williams approximation.

    chi(t_min, t_max) = Int_{t_min}^{t_max} dt (t - t_min) / t^2 * G2(t)

with the elastic form factor (complete atomic screening x nuclear size, Bjorken, Essig,
Schuster, Toro, PRD 80, 075018 (2009), eq. A18; Kirpichnikov et al., arXiv:2107.13297):

    G2_el(t) = Z^2 * (t / (t + t_a))^2 * (t_d / (t + t_d))^2,
    t_a = 1/a^2,  a = 111 Z^(-1/3) / m_e;     t_d = d = 0.164 GeV^2 A^(-2/3)

and, optionally, the inelastic atomic term (BEST eq. A19), which is suppressed by 1/Z:

    G2_in(t) = Z * (t / (t + t_a'))^2 * ((1 + t (mu_p^2 - 1) / (4 m_p^2)) / (1 + t/0.71 GeV^2)^4)^2,
    t_a' = 1/a'^2, a' = 773 Z^(-2/3) / m_e.

Units: t in MeV^2 (hepunits); chi is dimensionless (it contains Z^2).

The elastic integral is done in closed form (partial fractions, derived here):

    (t - t0) / ((t + a)^2 (t + b)^2) = A1/(t+a) + A2/(t+a)^2 - A1/(t+b) + B2/(t+b)^2,
    D = b - a,  A1 = (a + b + 2 t0)/D^3,  A2 = -(a + t0)/D^2,  B2 = -(b + t0)/D^2,

so chi_el = Z^2 b^2 [A1 ln((t+a)/(t+b)) - A2/(t+a) - B2/(t+b)]_{t0}^{t_max}.
:func:`_chi_reference` is the slow scipy.quad twin used by the tests.
"""

from __future__ import annotations

import numpy as np

from na64reco import constants

__all__ = ["screening_t", "nuclear_t", "g2_elastic", "g2_inelastic", "chi"]


def screening_t(Z: float) -> float:
    """Atomic screening scale t_a = 1/a^2 in MeV^2 (a = 111 Z^-1/3 / m_e)."""
    a = constants.FF_SCREENING_ELASTIC * Z ** (-1.0 / 3.0) / constants.ELECTRON_MASS
    return 1.0 / a**2


def nuclear_t(A: float) -> float:
    """Nuclear size scale t_d = 0.164 GeV^2 A^-2/3 in MeV^2 (A the mass number)."""
    return constants.FF_NUCLEAR_D * A ** (-2.0 / 3.0)


def _inelastic_screening_t(Z: float) -> float:
    a = constants.FF_SCREENING_INELASTIC * Z ** (-2.0 / 3.0) / constants.ELECTRON_MASS
    return 1.0 / a**2


def g2_elastic(t, Z: float, A: float):
    """Elastic atomic+nuclear form factor G2_el(t) (BEST eq. A18); t in MeV^2."""
    t = np.asarray(t, dtype=float)
    ta, td = screening_t(Z), nuclear_t(A)
    return Z**2 * (t / (t + ta)) ** 2 * (td / (t + td)) ** 2


def g2_inelastic(t, Z: float):
    """Inelastic atomic form factor G2_in(t) (BEST eq. A19); t in MeV^2."""
    t = np.asarray(t, dtype=float)
    ta = _inelastic_screening_t(Z)
    mp2 = constants.PROTON_MASS**2
    mu2 = constants.PROTON_MAGNETIC_MOMENT**2
    proton = (1.0 + t * (mu2 - 1.0) / (4.0 * mp2)) / (1.0 + t / constants.FF_PROTON_DIPOLE) ** 4
    return Z * (t / (t + ta)) ** 2 * proton**2


def _elastic_primitive(t, t0, a, b):
    """Antiderivative of (t - t0)/((t+a)^2 (t+b)^2) (see module docstring)."""
    D = b - a
    A1 = (a + b + 2.0 * t0) / D**3
    A2 = -(a + t0) / D**2
    B2 = -(b + t0) / D**2
    return A1 * np.log((t + a) / (t + b)) - A2 / (t + a) - B2 / (t + b)


# Gauss-Legendre nodes on [-1, 1] for the inelastic term (integrated in ln t).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(96)


def _chi_inelastic(t_min, t_max, Z):
    lo, hi = np.log(t_min)[..., None], np.log(t_max)[..., None]
    s = 0.5 * (hi - lo) * _GL_X + 0.5 * (hi + lo)
    t = np.exp(s)
    f = (t - t_min[..., None]) / t * g2_inelastic(t, Z)  # dt/t^2 * t = d ln t / t
    return 0.5 * (hi[..., 0] - lo[..., 0]) * np.sum(_GL_W * f, axis=-1)


def chi(t_min, t_max, Z: float = constants.LEAD_Z, A: float = constants.LEAD_MASS_NUMBER,
        inelastic: bool = False):
    """Photon flux chi(t_min, t_max) (dimensionless, includes Z^2), vectorised.

    Args:
        t_min, t_max: momentum-transfer bounds in MeV^2 (arrays broadcast).
        Z, A: atomic and mass number of the target nucleus (default lead).
        inelastic: add the (1/Z suppressed) inelastic atomic term of BEST eq. A19.

    Returns chi with the shape of the broadcast inputs; 0 where t_max <= t_min.
    """
    t_min, t_max = np.broadcast_arrays(np.asarray(t_min, float), np.asarray(t_max, float))
    ok = t_max > t_min
    t0 = np.where(ok, t_min, 1.0)
    t1 = np.where(ok, t_max, 2.0)
    a, b = screening_t(Z), nuclear_t(A)
    val = Z**2 * b**2 * (_elastic_primitive(t1, t0, a, b) - _elastic_primitive(t0, t0, a, b))
    if inelastic:
        val = val + _chi_inelastic(t0, t1, Z)
    return np.where(ok, val, 0.0)


def _chi_reference(t_min: float, t_max: float, Z: float, A: float, inelastic: bool = False) -> float:
    """Slow reference twin of :func:`chi`: scipy.quad of the defining integral in ln t."""
    from scipy.integrate import quad

    def integrand(s):
        t = np.exp(s)
        g2 = g2_elastic(t, Z, A) + (g2_inelastic(t, Z) if inelastic else 0.0)
        return float((t - t_min) / t * g2)

    lo, hi = np.log(t_min), np.log(t_max)
    pts = [p for p in (np.log(screening_t(Z)), np.log(nuclear_t(A))) if lo < p < hi]
    val, _ = quad(integrand, lo, hi, points=pts or None, limit=400, epsrel=1e-10)
    return val
