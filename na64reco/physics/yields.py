"""Expected number of dark-bremsstrahlung signal events in the NA64 target.

    N = N_MOT * (rho N_A / A) * Sum_i Delta L_i sigma(E_i) * Br(X -> invisible) * efficiency

(Gninenko, Krasnikov, Matveev, PRD 91, 095015 (2015); Sieber, OPG/SPS 2021 slides;
NA64.md section 3).  Assumptions (documented, adjustable by argument):

* Target = the lead of the ECAL.  40 X0 of Pb/Sc shashlik corresponds to 40 X0(Pb) =
  224.5 mm of lead; the scintillator (Z = 6) contributes < 1 % of the Z^2-weighted yield
  and is neglected.
* Muon mode: the muon keeps its identity and loses energy continuously,
  -dE/dz = rho (a + b E) with Bethe's a and the radiative b of lead at the beam energy
  (:func:`na64reco.physics.muon_losses.mean_loss_coefficients`; at 160 GeV a = 1.86 MeV cm^2/g,
  b = 1.47e-5 cm^2/g).  Over 224.5 mm a 160 GeV muon loses ~1.1 GeV (~0.7 %), so a constant energy would be
  good at the 1 % level; we integrate anyway (``n_steps`` slices, midpoint energies).
* Electron mode (NA64e, A'): only the primary electron radiates, with mean energy
  E(z) = E0 exp(-z/X0), over ``target_x0`` = 1 X0 by default (L_e ~ 1 X0, Sieber 2021).
  Shower secondaries are ignored: a rough estimate, not the NA64e yield model.
* Signal box: ``x_min`` is the minimum energy fraction taken by X (NA64mu: p_out < 80 GeV
  at 160 GeV is x > 0.5).  With ``p_out_max`` the box is defined in absolute momentum:
  x > 1 - p_out_max / E_i at each depth.
* Br(invisible): Z' -> nu nu over the total width (:mod:`na64reco.physics.widths`);
  1 for the A'.  Yields scale exactly as coupling^2.

Energies, masses and lengths in hepunits (MeV, mm).
"""

from __future__ import annotations

import math

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.physics.darkbrem import sigma_total
from na64reco.physics.muon_losses import LEAD, mean_loss_coefficients
from na64reco.physics.widths import br_invisible

__all__ = ["lead_number_density", "muon_energy_profile", "electron_energy_profile",
           "expected_signal"]


def lead_number_density() -> float:
    """Atoms per mm^3 of lead: rho N_A / A."""
    return constants.LEAD_DENSITY * constants.AVOGADRO / constants.LEAD_A


def muon_energy_profile(e0: float, thickness: float, n_steps: int = 20):
    """Midpoint muon energies (MeV) and slice lengths (mm) through ``thickness`` mm of lead.

    Integrates -dE/dz = rho (a + b E) exactly: E(z) = (E0 + a/b) exp(-rho b z) - a/b, with a and b
    of a muon of ``e0`` in lead (:func:`na64reco.physics.muon_losses.mean_loss_coefficients`).
    """
    rho = constants.LEAD_DENSITY
    a, b = mean_loss_coefficients(LEAD, e0)
    edges = np.linspace(0.0, thickness, n_steps + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    energy = (e0 + a / b) * np.exp(-rho * b * mid) - a / b
    return energy, np.diff(edges)


def electron_energy_profile(e0: float, thickness: float, n_steps: int = 20):
    """Midpoint mean energies E0 exp(-z/X0) (MeV) and slice lengths (mm) in lead."""
    edges = np.linspace(0.0, thickness, n_steps + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    return e0 * np.exp(-mid / constants.LEAD_RADIATION_LENGTH), np.diff(edges)


def expected_signal(n_mot: float, mass: float, coupling: float, efficiency: float = 1.0, *,
                    e0: float = constants.NA64MU_BEAM_ENERGY,
                    lepton_mass: float = constants.MUON_MASS, model: str = "zprime",
                    target_x0: float | None = None, x_min: float | None = None,
                    p_out_max: float | None = None, br_inv: float | None = None,
                    n_steps: int = 20, method: str = "iww") -> float:
    """Expected number of X -> invisible events for ``n_mot`` leptons on target.

    Args:
        n_mot: leptons on target.  mass: X mass (MeV).  coupling: g (Z') or eps (A').
        efficiency: signal efficiency in (0, 1] (selection x detector, excluding the
            x acceptance when ``x_min``/``p_out_max`` is given).
        e0: beam energy (MeV).  lepton_mass: muon (default) or electron mass.
        model: "zprime" or "aprime".
        target_x0: lead depth in radiation lengths (default 40 for muons, 1 for electrons).
        x_min: keep only x = E_X/E_i > x_min.  p_out_max: keep only (1 - x) E_i < p_out_max.
        br_inv: invisible branching ratio (default from :func:`br_invisible`).
        n_steps: depth slices.  method: "iww" or "ww".

    Returns the expected count (float).  Inputs a yield cannot have (a mass, energy or exposure that is
    not a finite positive number, an efficiency outside (0, 1], an ``x_min`` outside [0, 1)) are refused.
    """
    checks = {"n_mot": (n_mot, n_mot >= 0), "mass": (mass, 0 < mass < e0), "coupling": (coupling, coupling >= 0),
              "efficiency": (efficiency, 0 < efficiency <= 1), "e0": (e0, e0 > 0),
              "x_min": (x_min, x_min is None or 0 <= x_min < 1),
              "p_out_max": (p_out_max, p_out_max is None or p_out_max > 0)}
    for name, (value, ok) in checks.items():
        if value is not None and not (math.isfinite(value) and ok):
            raise ValueError(f"expected_signal: {name} = {value!r} (MeV for energies and masses) is not one a yield "
                             "can have: expected n_mot, coupling >= 0, 0 < mass < e0, efficiency in (0, 1], x_min in "
                             "[0, 1), all finite")
    is_muon = lepton_mass > 10 * constants.ELECTRON_MASS
    if target_x0 is None:
        target_x0 = constants.NA64_ECAL_DEPTH_X0 if is_muon else constants.ELECTRON_SIGNAL_DEPTH_X0
    thickness = target_x0 * constants.LEAD_RADIATION_LENGTH
    profile = muon_energy_profile if is_muon else electron_energy_profile
    energies, lengths = profile(e0, thickness, n_steps)
    total = 0.0
    for energy, length in zip(energies, lengths, strict=True):
        xm = x_min
        if p_out_max is not None:
            xm = max(xm or 0.0, 1.0 - p_out_max / energy)
        sigma = sigma_total(energy, mass, lepton_mass, constants.LEAD_Z, constants.LEAD_MASS_NUMBER,
                            coupling, x_min=xm, model=model, method=method)
        total += sigma * length
    if br_inv is None:
        br_inv = float(br_invisible(mass, model=model))
    return float(n_mot * lead_number_density() * total * br_inv * efficiency)


#: Convenience for printing: cross sections in pb.
PICOBARN = u.picobarn
