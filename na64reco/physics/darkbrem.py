"""Dark bremsstrahlung l N -> l N X of a vector X in the (improved) Weizsacker-Williams approximation.

X is the Z' of U(1)_{L_mu - L_tau} (coupling ``g`` to muons, ``model="zprime"``) or a
dark photon A' (kinetic mixing ``eps``, ``model="aprime"``).  They differ only in the
coupling constant of the X-lepton vertex:  alpha_X = g^2/(4 pi)  or  alpha_X = eps^2 alpha.

Double-differential WW cross section (Bjorken, Essig, Schuster, Toro (BEST), PRD 80,
075018 (2009), eq. A12; with the lepton mass kept in the amplitude, m^2 -> m^2 + 2 m_l^2,
as in Gninenko, Kirpichnikov, Kirsanova, Krasnikov, PLB 782 (2018) 406 and Kirpichnikov et
al., arXiv:2107.13297; checked against the DMG4 expressions, Bondi et al. arXiv:2101.12192):

    d sigma / dx dcos(theta) = 8 alpha^2 alpha_X E0^2 x beta / U^2 * chi
        * [ (1 - x + x^2/2) - x (1 - x) M^2 u / U^2 ],
    u = E0^2 x theta^2,   U = u + U0,   U0 = m^2 (1 - x)/x + m_l^2 x,   M^2 = m^2 + 2 m_l^2,
    beta = sqrt(1 - m^2 / (x E0)^2),   x = E_X / E0.

IWW: chi is taken at t_min = m^4 / (4 E0^2), t_max = m^2 + m_l^2 (BEST; x- and
theta-independent), and the theta integral is done in closed form
(Int_0^inf du/U^2 = 1/U0, Int_0^inf u du/U^4 = 1/(6 U0^2)):

    d sigma / dx = 4 alpha^2 alpha_X chi beta [ (1 - x + x^2/2)/U0 - x (1 - x) M^2 / (6 U0^2) ]
                 = 4 alpha^2 alpha_X chi beta [ (1 - x + x^2/3)/U0 + m_l^2 x (x^2 + 2x - 2)/(6 U0^2) ].

For m >> m_l this is BEST's  4 alpha^2 alpha_X chi beta x (1 - x + x^2/3) / (m^2 (1 - x)).

Emission angle (:func:`sample_pt`): at fixed x, with chi taken theta-independent as in IWW, the
formula above is a density in u (d cos(theta) = du / (2 E0^2 x)) with the closed-form CDF

    G(U) = A (1/U0 - 1/U) - B (1/(6 U0^2) - 1/(2 U^2) + U0/(3 U^3)),   A = 1 - x + x^2/2,
    B = x (1 - x) M^2,

cut where the flux vanishes (t_min = (U / (2 E0 (1 - x)))^2 > t_max, the WW relation): the
transverse momentum of X is p_T = x E0 theta = sqrt(x u), typically sqrt(x U0) =
sqrt(m^2 (1 - x) + m_l^2 x^2) (~ m_l x for m << m_l, not ~ m).  Approximations: chi is taken
angle-independent (IWW; the WW flux falls with the angle, so the tail here is harder); the cut
removes 0.05 % of the angle integral at x = 0.5, 3 % at x = 0.99 and ~50 % at the largest x,
while x is drawn from the uncut IWW spectrum (a difference only where the lepton keeps < 2 %
of E0); and the lepton's recoil is the opposite of the X's p_T, the nucleus's neglected
(the lead form factor allows q_T up to ~70 MeV, of the size of p_T: the lepton's angle is
right in its scale, not in its detailed shape).

WW (``method="ww"``): chi depends on x and theta through
t_min = (U / (2 E0 (1 - x)))^2 and the theta (u) integral is numerical; t_max defaults to
E0^2 as in DMG4 (the flux vanishes where t_min > t_max, which bounds the angles).

Units: energies and masses in hepunits (MeV); cross sections in hepunits area (mm^2;
divide by ``hepunits.picobarn`` for pb).  ``A`` is the mass number (dimensionless).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from na64reco import constants
from na64reco.physics.flux import chi

__all__ = ["alpha_x", "dsigma_dx", "sigma_total", "x_limits", "x_pdf", "sample_x", "pt_cdf", "sample_pt"]

_HBARC2 = constants.HBARC**2  # MeV^2 mm^2: converts 1/MeV^2 to mm^2
_ALPHA = constants.FINE_STRUCTURE
_MODELS = ("zprime", "aprime")
_METHODS = ("iww", "ww")


def alpha_x(coupling, model: str = "zprime"):
    """Coupling constant of the X-lepton vertex: g^2/(4 pi) (Z') or eps^2 alpha (A')."""
    if model == "zprime":
        return np.asarray(coupling, float) ** 2 / (4.0 * np.pi)
    if model == "aprime":
        return np.asarray(coupling, float) ** 2 * _ALPHA
    raise ValueError(f"model must be one of {_MODELS}, got {model!r}")


def x_limits(e0: float, mass: float, lepton_mass: float = constants.MUON_MASS):
    """Kinematic range of x = E_X/E0: (m/E0, 1 - m_l/E0).  Energies in MeV."""
    return mass / e0, 1.0 - lepton_mass / e0


def _u0(x, mass, lepton_mass):
    """U0 = m^2 (1 - x)/x + m_l^2 x (MeV^2): U at zero emission angle."""
    return mass**2 * (1.0 - x) / x + lepton_mass**2 * x


def _big_m2(mass, lepton_mass):
    """M^2 = m^2 + 2 m_l^2 of the amplitude's second term (MeV^2)."""
    return mass**2 + 2.0 * lepton_mass**2


def _u_cut(x, e0, t_max):
    """U above which the flux vanishes (t_min = (U / (2 E0 (1 - x)))^2 > t_max; MeV^2)."""
    return 2.0 * e0 * (1.0 - x) * np.sqrt(t_max)


def _iww_bracket(x, e0, mass, lepton_mass):
    """beta * [(1-x+x^2/2)/U0 - x(1-x)M^2/(6 U0^2)] in 1/MeV^2 (0 outside kinematics)."""
    x = np.asarray(x, float)
    lo, hi = x_limits(e0, mass, lepton_mass)
    inside = (x > lo) & (x < hi)
    xs = np.where(inside, x, 0.5)
    beta = np.sqrt(np.clip(1.0 - (mass / (xs * e0)) ** 2, 0.0, None))
    u0 = _u0(xs, mass, lepton_mass)
    big_m2 = _big_m2(mass, lepton_mass)
    val = beta * ((1.0 - xs + 0.5 * xs**2) / u0 - xs * (1.0 - xs) * big_m2 / (6.0 * u0**2))
    return np.where(inside, val, 0.0)


def _t_max_default(e0, mass, lepton_mass, method):
    return mass**2 + lepton_mass**2 if method == "iww" else e0**2


# Gauss-Legendre nodes for the WW u-integral (in ln U) and for the x integrals.
_GLU_X, _GLU_W = np.polynomial.legendre.leggauss(64)


def _ww_bracket(x, e0, mass, lepton_mass, Z, A, t_max, inelastic):
    """Int du chi(t_min(x,u)) beta [...] / U^2 (the WW analogue of chi * _iww_bracket)."""
    x = np.asarray(x, float)
    lo, hi = x_limits(e0, mass, lepton_mass)
    inside = (x > lo) & (x < hi)
    xs = np.where(inside, x, 0.5)[..., None]
    beta = np.sqrt(np.clip(1.0 - (mass / (xs * e0)) ** 2, 0.0, None))
    u0 = _u0(xs, mass, lepton_mass)
    big_m2 = _big_m2(mass, lepton_mass)
    # chi vanishes for U > U_cut = 2 E0 (1 - x) sqrt(t_max); integrate in ln U.
    u_cut = _u_cut(xs, e0, t_max)
    ok = u_cut > u0
    l0, l1 = np.log(u0), np.log(np.where(ok, u_cut, 2.0 * u0))
    s = 0.5 * (l1 - l0) * _GLU_X + 0.5 * (l1 + l0)
    big_u = np.exp(s)
    t_min = (big_u / (2.0 * e0 * (1.0 - xs))) ** 2
    flux = chi(t_min, t_max, Z, A, inelastic)
    u = big_u - u0
    amp = (1.0 - xs + 0.5 * xs**2) - xs * (1.0 - xs) * big_m2 * u / big_u**2
    integrand = flux * amp / big_u**2 * big_u  # dU = U d lnU
    val = 0.5 * (l1 - l0)[..., 0] * np.sum(_GLU_W * integrand, axis=-1) * beta[..., 0]
    return np.where(inside & ok[..., 0], val, 0.0)


def dsigma_dx(x, e0: float, mass: float, lepton_mass: float = constants.MUON_MASS,
              Z: float = constants.LEAD_Z, A: float = constants.LEAD_MASS_NUMBER,
              coupling: float = 1.0, *, model: str = "zprime", method: str = "iww",
              t_max: float | None = None, inelastic: bool = False):
    """Differential cross section d sigma/dx of l N -> l N X, vectorised in ``x``.

    Args:
        x: energy fraction E_X/E0 (array); 0 is returned outside (m/E0, 1 - m_l/E0).
        e0: lepton energy (MeV).  mass: X mass (MeV).  lepton_mass: beam lepton mass (MeV).
        Z, A: target atomic and mass number.  coupling: g (Z') or eps (A').
        model: "zprime" or "aprime".  method: "iww" (default) or "ww".
        t_max: upper bound of the flux integral (MeV^2); default m^2 + m_l^2 (IWW, BEST)
            or E0^2 (WW, DMG4).
        inelastic: include the inelastic atomic form factor in chi.

    Returns d sigma/dx in hepunits area (mm^2) per nucleus, same shape as ``x``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if e0 <= mass + lepton_mass:
        return np.zeros_like(np.asarray(x, float))
    if t_max is None:
        t_max = _t_max_default(e0, mass, lepton_mass, method)
    pref = 4.0 * _ALPHA**2 * alpha_x(coupling, model) * _HBARC2
    if method == "iww":
        flux = chi(mass**4 / (4.0 * e0**2), t_max, Z, A, inelastic)
        return pref * flux * _iww_bracket(x, e0, mass, lepton_mass)
    return pref * _ww_bracket(x, e0, mass, lepton_mass, Z, A, t_max, inelastic)


def _x_nodes(x_lo: float, x_hi: float, n_panels: int = 12, order: int = 24):
    """Quadrature nodes/weights on (x_lo, x_hi), Gauss-Legendre in logit(x) = ln(x/(1-x)).

    The logit map resolves both the ~1/x rise at small x (m << m_l) and the narrow peak
    at 1 - x ~ m_l^2/m^2 (m >> m_l).
    """
    gx, gw = np.polynomial.legendre.leggauss(order)
    s0, s1 = np.log(x_lo / (1.0 - x_lo)), np.log(x_hi / (1.0 - x_hi))
    edges = np.linspace(s0, s1, n_panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    s = (half * gx + mid).ravel()
    w = (half * gw).ravel()
    x = 1.0 / (1.0 + np.exp(-s))
    return x, w * x * (1.0 - x)


def sigma_total(e0: float, mass: float, lepton_mass: float = constants.MUON_MASS,
                Z: float = constants.LEAD_Z, A: float = constants.LEAD_MASS_NUMBER,
                coupling: float = 1.0, *, x_min: float | None = None, x_max: float | None = None,
                model: str = "zprime", method: str = "iww", t_max: float | None = None,
                inelastic: bool = False) -> float:
    """Total cross section Int dx d sigma/dx over [x_min, x_max] (mm^2, per nucleus).

    ``x_min``/``x_max`` default to the kinematic limits; ``x_min=0.5`` gives the NA64mu
    signal-box part (p_out < E0/2).  Other arguments as in :func:`dsigma_dx`.
    """
    lo, hi = x_limits(e0, mass, lepton_mass)
    lo = max(lo, x_min) if x_min is not None else lo
    hi = min(hi, x_max) if x_max is not None else hi
    if e0 <= mass + lepton_mass or hi <= lo:
        return 0.0
    x, w = _x_nodes(lo, hi)
    f = dsigma_dx(x, e0, mass, lepton_mass, Z, A, coupling, model=model, method=method,
                  t_max=t_max, inelastic=inelastic)
    return float(np.sum(w * f))


@lru_cache(maxsize=256)
def _cdf_table(e0: float, mass: float, lepton_mass: float, Z: float, A: float, method: str):
    """(x grid, normalised CDF) of d sigma/dx on a fine logit grid (cached)."""
    lo, hi = x_limits(e0, mass, lepton_mass)
    s = np.linspace(np.log(lo / (1 - lo)), np.log(hi / (1 - hi)), 4001)
    x = 1.0 / (1.0 + np.exp(-s))
    pdf = dsigma_dx(x, e0, mass, lepton_mass, Z, A, 1.0, method=method)
    # interior points only carry the density; the end points are 0 by construction
    dens = pdf * x * (1.0 - x)  # d sigma / d s
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(s))])
    if cdf[-1] <= 0.0:
        raise ValueError(f"no phase space for mass {mass} MeV at E0 = {e0} MeV")
    return x, cdf / cdf[-1]


def x_pdf(x, e0: float, mass: float, lepton_mass: float = constants.MUON_MASS,
          Z: float = constants.LEAD_Z, A: float = constants.LEAD_MASS_NUMBER, *,
          method: str = "iww"):
    """Normalised density of x = E_X/E0 on (0, 1): (1/sigma) d sigma/dx (dimensionless)."""
    total = sigma_total(e0, mass, lepton_mass, Z, A, 1.0, method=method)
    if total <= 0.0:
        raise ValueError(f"no phase space for mass {mass} MeV at E0 = {e0} MeV")
    return dsigma_dx(x, e0, mass, lepton_mass, Z, A, 1.0, method=method) / total


def sample_x(rng: np.random.Generator, n: int, e0: float, mass: float,
             lepton_mass: float = constants.MUON_MASS, Z: float = constants.LEAD_Z,
             A: float = constants.LEAD_MASS_NUMBER, *, method: str = "iww") -> np.ndarray:
    """Draw ``n`` values of x = E_X/E0 from :func:`x_pdf` (inverse CDF on a 4001-point grid).

    Args:
        rng: numpy Generator.  n: number of draws.
        e0, mass, lepton_mass: MeV (hepunits).  Z, A: target.  method: "iww" or "ww".
    Returns an array of shape (n,) in (m/E0, 1 - m_l/E0).
    """
    x, cdf = _cdf_table(float(e0), float(mass), float(lepton_mass), float(Z), float(A), method)
    return np.interp(rng.random(n), cdf, x)


def _angular_terms(x, e0, mass, lepton_mass, t_max):
    """(A, B, U0, U_cut) of the emission angle's density at energy fraction(s) ``x`` (MeV^2); a
    ValueError for an x that is not a number in (0, 1)."""
    x = np.asarray(x, float)
    if x.size and not np.all((x > 0.0) & (x < 1.0)):
        bad = x[~((x > 0.0) & (x < 1.0))].ravel()[0]
        raise ValueError(f"energy fraction x = {float(bad)!r}: expected a number in (0, 1) (E_X / E0)")
    if t_max is None:
        t_max = _t_max_default(e0, mass, lepton_mass, "iww")
    u0 = _u0(x, mass, lepton_mass)
    u_cut = np.maximum(_u_cut(x, e0, t_max), u0)  # no phase space left: theta = 0
    return 1.0 - x + 0.5 * x**2, x * (1.0 - x) * _big_m2(mass, lepton_mass), u0, u_cut


def _angular_g(big_u, a, b, u0):
    return a * (1.0 / u0 - 1.0 / big_u) - b * (1.0 / (6.0 * u0**2) - 0.5 / big_u**2 + u0 / (3.0 * big_u**3))


def pt_cdf(pt, x, e0: float, mass: float, lepton_mass: float = constants.MUON_MASS, *,
           t_max: float | None = None):
    """P(p_T(X) < ``pt``) at energy fraction ``x`` (closed form, module docstring); MeV.

    ``t_max`` (MeV^2) bounds the flux as in :func:`dsigma_dx` (default the IWW m^2 + m_l^2).
    """
    a, b, u0, u_cut = _angular_terms(x, e0, mass, lepton_mass, t_max)
    pt = np.asarray(pt, float)
    big_u = np.clip(u0 + pt**2 / np.asarray(x, float), u0, u_cut)
    norm = _angular_g(u_cut, a, b, u0)
    cdf = np.where(norm > 0, _angular_g(big_u, a, b, u0) / np.where(norm > 0, norm, 1.0), 1.0)
    return np.where(pt < 0, 0.0, cdf)


def sample_pt(rng: np.random.Generator, x, e0: float, mass: float, lepton_mass: float = constants.MUON_MASS,
              *, t_max: float | None = None) -> np.ndarray:
    """Transverse momentum (MeV) of X emitted with energy fraction ``x`` (array), one per x.

    Drawn from :func:`pt_cdf`'s density: U from the 1/U^2 part by its inverse CDF, kept with
    probability 1 - (B/A)(U - U0)/U^2 (>= 1/2 for every x and mass: the M^2 term's largest
    share is B/(4 A U0)).  The recoiling lepton gets -p_T (the nucleus's recoil neglected).
    """
    a, b, u0, u_cut = (np.broadcast_to(v, np.shape(x)).astype(float).ravel()
                       for v in _angular_terms(x, e0, mass, lepton_mass, t_max))
    big_u = np.empty(a.size)
    todo = np.arange(a.size)
    while todo.size:
        r = rng.random(todo.size)
        inv0 = 1.0 / u0[todo]
        u = 1.0 / (inv0 - r * (inv0 - 1.0 / u_cut[todo]))
        keep = rng.random(todo.size) * a[todo] <= a[todo] - b[todo] * (u - u0[todo]) / u**2
        big_u[todo[keep]] = u[keep]
        todo = todo[~keep]
    xs = np.asarray(x, float).ravel()
    return np.sqrt(np.clip(xs * (big_u - u0), 0.0, None)).reshape(np.shape(x))
