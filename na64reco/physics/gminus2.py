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


def loop_integral(mass):
    """I(m) = Int_0^1 x^2 (1-x) / (x^2 + (1-x) r) dx, r = (m/m_mu)^2 (vectorised).

    Gauss-Legendre on panels split at x = sqrt(r) (where the integrand turns over for
    small r), in ln x below it; 1/2 for m -> 0 and 1/(3 r) for m -> infinity.
    """
    r = (np.asarray(mass, float) / constants.MUON_MASS) ** 2
    r1 = r[..., None]
    xb = np.clip(np.sqrt(r1), 1e-12, 0.5)

    def f(x):
        return x**2 * (1 - x) / (x**2 + (1 - x) * r1)

    # [1e-12 xb, xb] in ln x, then [xb, 1] linear
    l0, l1 = np.log(1e-12 * xb), np.log(xb)
    s = 0.5 * (l1 - l0) * _GX + 0.5 * (l1 + l0)
    x = np.exp(s)
    low = 0.5 * (l1 - l0)[..., 0] * np.sum(_GW * f(x) * x, axis=-1)
    x = 0.5 * (1 - xb) * _GX + 0.5 * (1 + xb)
    high = 0.5 * (1 - xb)[..., 0] * np.sum(_GW * f(x), axis=-1)
    return low + high


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
