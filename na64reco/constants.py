"""Physical constants, in hepunits internal units, each with its source.

Detector numbers (positions, sizes, resolutions) are *not* here: they live in
``calib/setups/*.yaml``.  Cut values live in ``selections/*.yaml``.  This module holds
constants of nature and published reference numbers used by physics code.
"""

from __future__ import annotations

import hepunits as u
from hepunits import constants as c

# --- particle masses (PDG 2024) ---------------------------------------------------------
ELECTRON_MASS = 0.51099895 * u.MeV  # PDG 2024
MUON_MASS = 105.6583755 * u.MeV  # PDG 2024
TAU_MASS = 1776.86 * u.MeV  # PDG 2024
PION_CHARGED_MASS = 139.57039 * u.MeV  # PDG 2024
KAON_CHARGED_MASS = 493.677 * u.MeV  # PDG 2024
PROTON_MASS = 938.27208816 * u.MeV  # PDG 2024

# --- lifetimes (PDG 2024), c*tau -----------------------------------------------------
PION_CHARGED_CTAU = 7.8045 * u.m  # PDG 2024
KAON_CHARGED_CTAU = 3.7110 * u.m  # PDG 2024
#: Branching fraction K+- -> mu nu (PDG 2024); pi -> mu nu is ~100 %.
KAON_TO_MUNU_BR = 0.6356

# --- couplings and conversion constants -----------------------------------------------
FINE_STRUCTURE = 1 / 137.035999084  # CODATA 2018
AVOGADRO = c.Avogadro  # per mole
HBARC = c.hbarc  # MeV * mm
C_LIGHT = c.c_light  # mm / ns
#: Momentum (MeV) of a unit-charge particle per (field integral x bend angle): p = K * BL / theta,
#: with K = c [mm/ns] * e, i.e. 0.2998 GeV per (T m rad).
MOMENTUM_PER_TESLA_METRE = C_LIGHT * c.eplus

# --- target material: lead (PDG Atomic and Nuclear Properties) ----------------------------
LEAD_Z = 82
LEAD_A = 207.2 * u.g / u.mole
LEAD_DENSITY = 11.35 * u.g / u.cm3
LEAD_RADIATION_LENGTH = 5.612 * u.mm  # 6.37 g/cm2 / 11.35 g/cm3

# --- muon g-2 --------------------------------------------------------------------------
#: Delta a_mu = a_mu(exp) - a_mu(SM, WP2020) after the FNAL 2021 result:
#: (2.51 +- 0.59) x 1e-9 (Muon g-2 Collaboration, PRL 126, 141801 (2021)).
DELTA_A_MU = 2.51e-9
DELTA_A_MU_ERROR = 0.59e-9

# --- published NA64mu 2022 reference inputs (PRL 132, 211803 (2024)) --------------------
NA64MU_2022_MOT = 1.98e10
NA64MU_2022_BACKGROUND = 0.07
NA64MU_2022_BACKGROUND_ERROR = 0.03
NA64MU_2022_OBSERVED = 0
