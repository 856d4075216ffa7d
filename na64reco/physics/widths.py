"""Decay widths and invisible branching ratio of the L_mu - L_tau Z'.

Tree-level widths for a vector coupling g to mu, tau (vector current) and to the
left-handed nu_mu, nu_tau (Gninenko, Krasnikov, Matveev, PRD 91, 095015 (2015); the same
expressions are used by DMG4, Bondi et al. arXiv:2101.12192, class DarkZ):

    Gamma(Z' -> nu_l nu_l)  = g^2 m / (24 pi)                      per flavour (nu_mu, nu_tau)
    Gamma(Z' -> l+ l-)      = g^2 m / (12 pi) (1 + 2 r) sqrt(1 - 4 r),  r = m_l^2 / m^2,  m > 2 m_l

(a left-handed neutrino pair carries half the width of a Dirac pair with a vector
coupling: g^2 m/(12 pi) -> g^2 m/(24 pi)).  Masses in MeV, widths in MeV.  The
invisible branching ratio Gamma(nu nu) / Gamma(total) is independent of g.
An optional dark-matter width ``gamma_dark`` (per unit of g^2, MeV) adds an invisible channel.
A dark photon A' is assumed to decay 100 % invisibly (A' -> chi chi) in NA64e.
"""

from __future__ import annotations

import numpy as np

from na64reco import constants

__all__ = ["width_neutrinos", "width_leptons", "width_total", "br_invisible"]


def width_neutrinos(mass, g):
    """Gamma(Z' -> nu_mu nu_mu) + Gamma(Z' -> nu_tau nu_tau) = 2 g^2 m/(24 pi) (MeV)."""
    return 2.0 * np.asarray(g, float) ** 2 * np.asarray(mass, float) / (24.0 * np.pi)


def width_leptons(mass, g, lepton_mass=constants.MUON_MASS):
    """Gamma(Z' -> l+ l-) = g^2 m/(12 pi) (1 + 2r) sqrt(1 - 4r), 0 below 2 m_l (MeV)."""
    mass = np.asarray(mass, float)
    r = lepton_mass**2 / mass**2
    phase = np.sqrt(np.clip(1.0 - 4.0 * r, 0.0, None))
    return np.where(mass > 2 * lepton_mass,
                    np.asarray(g, float) ** 2 * mass / (12.0 * np.pi) * (1.0 + 2.0 * r) * phase, 0.0)


def width_total(mass, g, gamma_dark=0.0):
    """Total Z' width (MeV): neutrinos + mu mu + tau tau (+ g^2 * gamma_dark)."""
    return (width_neutrinos(mass, g) + width_leptons(mass, g, constants.MUON_MASS)
            + width_leptons(mass, g, constants.TAU_MASS) + np.asarray(g, float) ** 2 * gamma_dark)


def br_invisible(mass, gamma_dark=0.0, model: str = "zprime"):
    """Br(X -> invisible): Z' -> nu nu (+ dark) over total; 1 for the A' ("aprime")."""
    if model == "aprime":
        return np.ones_like(np.asarray(mass, float))
    inv = width_neutrinos(mass, 1.0) + gamma_dark
    return inv / width_total(mass, 1.0, gamma_dark)
