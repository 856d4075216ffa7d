"""Single large-angle scattering of a muon on atoms: cross sections in the assumed materials.

Per atom, small angles, beta = 1, momentum transfer q = p theta:

    dsigma / dOmega = 4 (alpha hbar c)^2 / (p^2 theta^4) x [Z^2 F(q)^2 + (1 - F(q)^2) (Z W_p + N W_n)]

* coherent on the nucleus: Rutherford x the Helm form factor F (radius from A, constants);
* incoherent on the nucleons (closure: 1 - F^2 of the nuclear response is quasi-elastic):
  protons ``W_p = (G_E^2 + tau G_M^2) / (1 + tau)``, neutrons the magnetic part only, dipole form
  factors, ``tau = q^2 / 4 M^2``;
* on the electrons: not counted here; :func:`electron_recoil` gives the two-body kinematics that
  show why (:mod:`na64reco.background.scatter_tail`);
* atomic screening cuts the Rutherford rise below ~1e-7 rad (irrelevant at mrad).

Used by the simulation's natural single-scattering tail (:mod:`na64reco.sim.hard_scatter`), its
forced variant (:mod:`na64reco.sim.forced_scatter`) and the closed form of the mis-reconstruction
rate (:mod:`na64reco.background.scatter_tail`).  Materials (assumed): tracker planes polyimide,
counters plastic scintillator, ECAL lead, gaps air or a gas volume's gas; constants with units and
sources in :mod:`na64reco.constants`.
"""

from __future__ import annotations

import math

import hepunits as u
import numpy as np

from na64reco import constants as C
from na64reco.errors import ConfigError

ALPHA_HBARC = C.FINE_STRUCTURE * C.HBARC  # MeV mm

#: (X0, composition) of the assumed materials.
MATERIALS = {
    "air": (C.X0_AIR, C.AIR_COMPOSITION),
    "helium": (C.X0_HELIUM, C.HELIUM_COMPOSITION),
    "polyimide": (C.X0_POLYIMIDE, C.POLYIMIDE_COMPOSITION),
    "scintillator": (C.X0_SCINTILLATOR, C.SCINTILLATOR_COMPOSITION),
    "lead": (C.X0_LEAD, C.LEAD_COMPOSITION),
}


def helm(q, a_mass: float):
    """Helm nuclear form factor F(q) (q in MeV, ``a_mass`` the mass number; F(0) = 1)."""
    c = C.HELM_C_SLOPE * a_mass ** (1 / 3) - C.HELM_C_OFFSET
    r0 = math.sqrt(c * c + 7 / 3 * math.pi**2 * C.HELM_DIFFUSENESS**2 - 5 * C.HELM_SKIN**2)
    k = np.asarray(q, float) / C.HBARC  # 1/mm
    x = np.maximum(k * r0, 1e-6)
    j1 = (np.sin(x) - x * np.cos(x)) / x**2
    return 3 * j1 / x * np.exp(-0.5 * (k * C.HELM_SKIN) ** 2)


def nucleon_weights(q):
    """(W_p, W_n): the Rosenbluth structure of a free proton / neutron at small angle, dipole
    form factors (``constants.FF_PROTON_DIPOLE``), ``G_En = 0``."""
    q2 = np.asarray(q, float) ** 2
    gd2 = 1.0 / (1.0 + q2 / C.FF_PROTON_DIPOLE) ** 4
    tau = q2 / (4 * C.PROTON_MASS**2)
    wp = gd2 * (1 + tau * C.PROTON_MAGNETIC_MOMENT**2) / (1 + tau)
    wn = gd2 * tau * C.NEUTRON_MAGNETIC_MOMENT**2 / (1 + tau)
    return wp, wn


def structure(q, z: int, a_mass: float, form_factors: bool = True):
    """The bracket of the module doc's cross section for one atom (``Z^2`` without form factors)."""
    q = np.asarray(q, float)
    if not form_factors:
        return np.full(q.shape, float(z * z))
    wp, wn = nucleon_weights(q)
    if z == 1:  # hydrogen: the nucleus is a proton
        return wp
    f2 = helm(q, a_mass) ** 2
    n = round(a_mass) - z
    return z * z * f2 + (1 - f2) * (z * wp + n * wn)


def dsigma_d2q(q, z: int, a_mass: float, form_factors: bool = True):
    """dsigma / d^2q (mm^2 per MeV^2) per atom: ``4 (alpha hbar c)^2 / q^4 x structure``; with
    ``d^2q = p^2 dOmega`` it is the same for every momentum."""
    q = np.asarray(q, float)
    return 4 * ALPHA_HBARC**2 / q**4 * structure(q, z, a_mass, form_factors)


def rutherford_above(theta, p, z: int):
    """Closed form without form factors: sigma(> theta) = 4 pi (Z alpha hbar c / p)^2 / theta^2 (mm^2)."""
    return 4 * math.pi * (z * ALPHA_HBARC / p) ** 2 / np.asarray(theta, float) ** 2


def sigma_above_q(q_grid, z: int, a_mass: float, form_factors: bool = True, q_max: float = 30 * u.GeV):
    """sigma(> q) per atom (mm^2) at each q of the increasing ``q_grid`` (MeV): the integral of
    ``2 pi q dsigma/d^2q`` (trapezoids in log q on a fine grid) up to ``q_max``."""
    q_grid = np.asarray(q_grid, float)
    fine = np.geomspace(q_grid.min(), q_max, 4000)
    f = 2 * math.pi * fine * fine * dsigma_d2q(fine, z, a_mass, form_factors)  # per d ln q
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(fine)))])
    above = cum[-1] - cum
    return np.interp(np.log(q_grid), np.log(fine), above)


def atoms_per_area(material: str, x_over_x0: float) -> list[tuple[int, float, float]]:
    """(Z, A, atoms per mm^2) of ``x_over_x0`` radiation lengths of an assumed material."""
    if material not in MATERIALS:
        raise ConfigError(f"single_scatter: unknown material {material!r}; choose one of {', '.join(MATERIALS)}")
    x0, comp = MATERIALS[material]
    t = x_over_x0 * x0
    return [(z, a, t * w * C.AVOGADRO / (a * u.g / u.mole)) for z, a, w in comp]


def probability_above_q(material: str, x_over_x0: float, q_grid, form_factors: bool = True):
    """P(one scatter with momentum transfer > q) in ``x_over_x0`` of ``material`` (thin: P << 1)."""
    return sum(n * sigma_above_q(q_grid, z, a, form_factors) for z, a, n in atoms_per_area(material, x_over_x0))


def mean_square_angle(material: str, x_over_x0: float, p: float) -> float:
    """<theta^2> (space angle, rad^2) of single scatters in the layer, from the atomic screening
    angle (Thomas-Fermi, ``constants.FF_SCREENING_ELASTIC``) up: the order of the Highland width
    (``<theta^2> = 2 theta0^2``) is a check of the normalisation."""
    total = 0.0
    for z, a, n in atoms_per_area(material, x_over_x0):
        q_scr = C.ELECTRON_MASS * z ** (1 / 3) / C.FF_SCREENING_ELASTIC
        q = np.geomspace(q_scr, 30 * u.GeV, 6000)
        f = 2 * math.pi * q * q * dsigma_d2q(q, z, a) * (q / p) ** 2
        total += n * float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(q))))
    return total


def electron_recoil(theta, p: float) -> dict:
    """Elastic mu e at momentum ``p`` for a muon turn ``theta`` (rad): the largest possible turn
    ``theta_max`` and, below it, the muon's momentum after the turn on the soft branch and the
    hard one (MeV, the two solutions; the hard one needs theta < theta_max).  Exact two-body
    kinematics on an electron at rest."""
    m, me = C.MUON_MASS, C.ELECTRON_MASS
    e = math.hypot(p, m)
    s = m * m + me * me + 2 * me * e
    ps = p * me / math.sqrt(s)  # CM momentum
    g = (e + me) / math.sqrt(s)
    bg = p / math.sqrt(s)
    es = math.hypot(ps, m)
    cos_star = np.linspace(-1, 1, 200001)
    pt = ps * np.sqrt(1 - cos_star**2)
    pl = g * ps * cos_star + bg * es
    ang = np.arctan2(pt, pl)
    mom = np.hypot(pt, pl)
    theta_max = float(ang.max())
    theta = float(theta)
    if theta > theta_max:
        return {"theta_max": theta_max, "p_after": None, "electron_energy": None}
    i_max = int(np.argmax(ang))
    hard = np.interp(theta, ang[i_max:][::-1], mom[i_max:][::-1])  # forward branch (cos* > cos* of max)
    soft = np.interp(theta, ang[:i_max + 1], mom[:i_max + 1])
    return {"theta_max": theta_max, "p_after": (float(soft), float(hard)),
            "electron_energy": (float(e - math.hypot(hard, m)), float(e - math.hypot(soft, m)))}
