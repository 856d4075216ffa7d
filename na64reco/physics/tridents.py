"""The timelike part of muon tridents, mu N -> mu N gamma* with gamma* -> mu+ mu-.

A virtual photon of mass M is emitted as a dark photon of that mass with epsilon = 1 would be
(:func:`na64reco.physics.darkbrem.sigma_total`, model ``aprime``, IWW), and it becomes a muon pair
with the spectral density (the muon loop's contribution to the photon propagator)

    dP/dM^2 = alpha / (3 pi M^2) beta (3 - beta^2) / 2,   beta = sqrt(1 - 4 m_mu^2 / M^2),

so that d sigma / dM^2 dx = dP/dM^2 x d sigma_A'(M; epsilon = 1) / dx.  Its x = E_gamma* / E0 (the
pair's energy fraction v) is hard: at 160 GeV in lead 88 % of it has v > 0.45 and 38 % v > 0.9.  The
spacelike (Bethe-Heitler) part, soft in v, is not here (the simulator's ``dimuon`` toy stands for it).
"""

from __future__ import annotations

import functools
import math

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.physics import darkbrem

__all__ = ["spectral_density", "timelike_sigma", "mass_table", "sample_mass"]

_M_MAX = 20 * u.GeV  # above it the 1/M^2 density and the falling cross section leave < 1e-3 of the rate


def spectral_density(mass):
    """dP/dM^2 of gamma* -> mu+ mu- (1/MeV^2); 0 below the threshold 2 m_mu."""
    mass = np.asarray(mass, float)
    ok = mass > 2 * constants.MUON_MASS
    beta = np.sqrt(np.where(ok, 1.0 - 4.0 * constants.MUON_MASS**2 / np.where(ok, mass, 1.0) ** 2, 0.0))
    return np.where(ok, constants.FINE_STRUCTURE / (3.0 * math.pi) * beta * (3.0 - beta**2) / 2.0
                    / np.where(ok, mass, 1.0) ** 2, 0.0)


@functools.lru_cache(maxsize=16)
def mass_table(e0: float, x_min: float | None = None, n_masses: int = 161):
    """``(masses, cdf, sigma)``: the pair mass's distribution (CDF on a log grid from just above 2 m_mu
    to 20 GeV) and the timelike cross section per lead nucleus (mm2) with x > ``x_min`` (None: all)."""
    masses = np.exp(np.linspace(math.log(2 * constants.MUON_MASS * 1.0005), math.log(_M_MAX), n_masses))
    sig = np.array([darkbrem.sigma_total(e0, m, coupling=1.0, model="aprime", x_min=x_min) for m in masses])
    dens = spectral_density(masses) * sig * 2.0 * masses * masses  # d sigma / d ln M
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(np.log(masses)))])
    return masses, cum / cum[-1], float(cum[-1])


def timelike_sigma(e0: float, x_min: float | None = None) -> float:
    """Timelike trident cross section per lead nucleus (mm2) with x > ``x_min``."""
    return mass_table(float(e0), x_min)[2]


def sample_mass(rng: np.random.Generator, n: int, e0: float, x_min: float | None = None) -> np.ndarray:
    """``n`` pair masses (MeV) from d sigma / dM with x > ``x_min``, each one of the table's grid masses
    (2.9 % apart in M) with the probability of its cell (so that x can be drawn from a few cached spectra)."""
    masses, cdf, _ = mass_table(float(e0), x_min)
    cell = np.searchsorted(cdf, rng.random(n), side="right") - 1  # cell [m_i, m_i+1) by its probability
    cell = np.clip(cell, 0, masses.size - 2)
    return np.sqrt(masses[cell] * masses[cell + 1])  # its geometric centre
