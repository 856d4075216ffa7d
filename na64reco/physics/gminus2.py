"""One-loop contribution of a vector Z' to the muon anomalous magnetic moment.

    Delta a_mu = g^2 / (4 pi^2) Int_0^1 dx x^2 (1 - x) / (x^2 + (1 - x) m^2 / m_mu^2)

(Leveille, NPB 137 (1978) 285; Pospelov, PRD 80, 095002 (2009); NA64.md).  Limits:
g^2/(8 pi^2) for m << m_mu and g^2 m_mu^2 / (12 pi^2 m^2) for m >> m_mu.
The target is the 2021 anomaly Delta a_mu = (2.51 +- 0.59) x 1e-9
(``constants.DELTA_A_MU``, PRL 126, 141801 (2021)).  Masses in MeV (hepunits).
"""

from __future__ import annotations

import numpy as np

from na64reco import constants

__all__ = ["loop_integral", "delta_a_mu", "g_band"]

_GX, _GW = np.polynomial.legendre.leggauss(48)


def _gl_log(f, lo, hi):
    """Int_lo^hi f(x) dx with Gauss-Legendre in ln x (lo, hi arrays with a trailing axis)."""
    l0, l1 = np.log(lo), np.log(hi)
    x = np.exp(0.5 * (l1 - l0) * _GX + 0.5 * (l1 + l0))
    return 0.5 * (l1 - l0)[..., 0] * np.sum(_GW * f(x) * x, axis=-1)


def loop_integral(mass):
    """I(m) = Int_0^1 x^2 (1-x) / (x^2 + (1-x) r) dx, r = (m/m_mu)^2 (vectorised).

    Gauss-Legendre panels in ln x on (0, 1/2], split at x = sqrt(r) (where the integrand
    turns over for small r), and in ln(1-x) on [1/2, 1), split at 1-x = 1/r (the turn-over
    for large r).  Limits: 1/2 for m -> 0 and 1/(3 r) for m -> infinity.
    """
    mass = np.asarray(mass, float)
    if not np.all(np.isfinite(mass) & (mass > 0)):
        bad = mass[~(np.isfinite(mass) & (mass > 0))].ravel()[0]
        raise ValueError(f"Z' mass {bad:g} MeV: expected a finite mass > 0 (only m^2 enters the loop: a negative "
                         "mass gave the value of its absolute one)")
    r = (mass / constants.MUON_MASS) ** 2
    r1 = r[..., None]

    def f(x):
        return x**2 * (1 - x) / (x**2 + (1 - x) * r1)

    def f_mirror(y):  # f at x = 1 - y
        return f(1.0 - y)

    xb = np.clip(np.sqrt(r1), 1e-12, 0.25)
    yb = np.clip(1.0 / r1, 1e-12, 0.25)
    return (_gl_log(f, 1e-12 * xb, xb) + _gl_log(f, xb, 0.5 + 0 * xb)
            + _gl_log(f_mirror, 1e-12 * yb, yb) + _gl_log(f_mirror, yb, 0.5 + 0 * yb))


def delta_a_mu(m_zprime, g):
    """Delta a_mu of a vector Z' of mass ``m_zprime`` (MeV) and coupling ``g`` (vectorised)."""
    return np.asarray(g, float) ** 2 / (4 * np.pi**2) * loop_integral(m_zprime)


def g_band(m, n_sigma: float = 2.0, delta: float = constants.DELTA_A_MU,
           error: float = constants.DELTA_A_MU_ERROR):
    """Couplings (g_low, g_central, g_high) explaining Delta a_mu = delta +- n_sigma * error.

    ``m`` in MeV (array ok).  g_low is 0 where delta - n_sigma*error <= 0.
    """
    per_g2 = delta_a_mu(m, 1.0)
    lo = max(delta - n_sigma * error, 0.0)
    return (np.sqrt(lo / per_g2), np.sqrt(delta / per_g2), np.sqrt((delta + n_sigma * error) / per_g2))
