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
#: Branching fraction pi+- -> mu nu (PDG 2024).
PION_TO_MUNU_BR = 0.9998770

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
#: Lead's mass number, the PDG atomic weight (dimensionless; the form factors' A).
LEAD_MASS_NUMBER = 207.2
LEAD_A = LEAD_MASS_NUMBER * u.g / u.mole
LEAD_DENSITY = 11.35 * u.g / u.cm3
LEAD_RADIATION_LENGTH = 5.612 * u.mm  # X0_LEAD (6.37 g/cm2, below) / LEAD_DENSITY, rounded as PDG quotes it
#: Classical electron radius (CODATA 2018).
CLASSICAL_ELECTRON_RADIUS = 2.8179403262e-15 * u.m
# Stopping of muons (na64reco.physics.muon_losses.Absorber): Z, A (g/mol), mean excitation energy I,
# Sternheimer's density-effect parameters C-bar, x0, x1, a, k, delta0 (Sternheimer, Berger, Seltzer,
# ADNDT 30 (1984) 261, as listed by PDG "Atomic and Nuclear Properties").
LEAD_STOPPING = (LEAD_Z, LEAD_A / (u.g / u.mole), 823.0 * u.eV, 6.2018, 0.3776, 3.8073, 0.09359, 3.1608, 0.14)
IRON_STOPPING = (26, 55.845, 286.0 * u.eV, 4.2911, -0.0012, 3.1531, 0.14680, 2.9632, 0.12)
#: Bethe's K = 4 pi N_A r_e^2 m_e c^2 per g/mol (PDG Table 34.1): K Z/A is the loss scale per g/cm2.
BETHE_K = 0.307075 * u.MeV * u.cm2 / u.g
#: Muon critical energies, where the electronic loss equals the radiative one, a(E_c) = b(E_c) E_c
#: (PDG "Atomic and Nuclear Properties"; Groom, Mokhov, Striganov, ADNDT 78 (2001) 183).
IRON_MUON_CRITICAL_ENERGY = 347.0 * u.GeV
#: Minimum mean ionisation of a muon (PDG "Atomic and Nuclear Properties"), MeV cm2/g.
LEAD_MIN_IONISATION = 1.122 * u.MeV * u.cm2 / u.g
IRON_MIN_IONISATION = 1.451 * u.MeV * u.cm2 / u.g

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

# --- physics layer additions ------------------------------------------------------------
# Atomic + nuclear elastic form factor of the Weizsacker-Williams photon flux (Bjorken,
# Essig, Schuster, Toro, PRD 80, 075018 (2009), eqs. A18-A19; Tsai, RMP 46, 815 (1974)).
#: Screening radius a = FF_SCREENING_ELASTIC * Z^(-1/3) / m_e (Thomas-Fermi, BEST A18).
FF_SCREENING_ELASTIC = 111.0
#: Inelastic (atomic electron) screening a' = FF_SCREENING_INELASTIC * Z^(-2/3) / m_e (BEST A19).
FF_SCREENING_INELASTIC = 773.0
#: Nuclear size parameter d = FF_NUCLEAR_D * A^(-2/3) (BEST A18; A the mass number).
FF_NUCLEAR_D = 0.164 * u.GeV**2
#: Proton dipole form-factor scale (BEST A19).
FF_PROTON_DIPOLE = 0.71 * u.GeV**2
#: Proton magnetic moment in nuclear magnetons (PDG 2024).
PROTON_MAGNETIC_MOMENT = 2.792847
# Muon energy loss -dE/dx = rho (a + b E) (na64reco.physics.muon_losses computes a and b).
#: Muon critical energy in Pb, where the electronic loss equals the radiative one (PDG "Atomic and
#: Nuclear Properties"; Groom, Mokhov, Striganov, ADNDT 78 (2001) 183): a check of the computed a, b.
LEAD_MUON_CRITICAL_ENERGY = 141.0 * u.GeV
#: Photonuclear part of b, ~0.4e-6 cm2/g in lead and iron at 10-1000 GeV (Groom, Mokhov, Striganov,
#: above; Bezrukov-Bugaev); not computed by na64reco.physics.muon_losses.
MUON_PHOTONUCLEAR_B = 0.4e-6 * u.cm2 / u.g
#: NA64 ECAL depth used as the dark-bremsstrahlung target: 40 X0 of Pb/Sc shashlik
#: (NA64.md; Sieber, OPG/SPS 2021: L_mu ~ 40 X0).  Effective lead = 40 X0(Pb).
NA64_ECAL_DEPTH_X0 = 40.0
#: Depth over which the primary electron (NA64e) produces the A' in the yield and the simulation: its
#: effective length L_e ~ 1 X0 (Sieber, OPG/SPS 2021), its mean energy falling as E0 exp(-t) over it.
ELECTRON_SIGNAL_DEPTH_X0 = 1.0
#: Nominal beam energies: NA64mu M2 muons 160 GeV, NA64e H4 electrons 100 GeV (NA64.md).
NA64MU_BEAM_ENERGY = 160 * u.GeV
NA64E_BEAM_ENERGY = 100 * u.GeV
#: (The signal boxes, p_out < 80 GeV for NA64mu (PRL 132, 211803 (2024)) and E_ECAL < 50 GeV for NA64e
#: (NA64.md), are the selections' (selections/*_invisible.yaml; na64reco.selection.signal_model).)

# --- single large-angle scattering (na64reco.physics.single_scatter) ---------------------------------
#: Neutron magnetic moment in nuclear magnetons (PDG 2024).
NEUTRON_MAGNETIC_MOMENT = -1.91304273
#: Helm nuclear form factor (Lewin & Smith, Astropart. Phys. 6 (1996) 87, eqs. 4.7-4.11):
#: c = HELM_C_SLOPE A^(1/3) - HELM_C_OFFSET, a = HELM_DIFFUSENESS, skin s = HELM_SKIN,
#: R0^2 = c^2 + 7/3 pi^2 a^2 - 5 s^2.
HELM_C_SLOPE = 1.23 * u.fermi
HELM_C_OFFSET = 0.60 * u.fermi
HELM_DIFFUSENESS = 0.52 * u.fermi
HELM_SKIN = 0.9 * u.fermi
#: Radiation lengths (PDG "Atomic and Nuclear Properties": air dry, polyimide (Kapton),
#: polyvinyltoluene plastic scintillator, lead).
X0_AIR = 36.62 * u.g / u.cm2
X0_POLYIMIDE = 40.58 * u.g / u.cm2
X0_SCINTILLATOR = 43.90 * u.g / u.cm2
X0_LEAD = 6.37 * u.g / u.cm2
#: Helium gas (PDG "Atomic and Nuclear Properties": X0 94.32 g/cm2, density 1.663e-4 g/cm3 at
#: 20 C and 1 atm): 5.67 km, 19x the radiation length of air.
X0_HELIUM = 94.32 * u.g / u.cm2
HELIUM_DENSITY = 1.663e-4 * u.g / u.cm3
#: Compositions by mass fraction, (Z, A in g/mol, fraction) (PDG "Atomic and Nuclear Properties").
HELIUM_COMPOSITION = ((2, 4.0026, 1.0),)
#: Gases that may fill a volume on the beam path instead of air (setup ``gas_volumes``):
#: name -> (X0, density).
GASES = {"helium": (X0_HELIUM, HELIUM_DENSITY)}
AIR_COMPOSITION = ((7, 14.007, 0.7553), (8, 15.999, 0.2318), (18, 39.948, 0.0128))
POLYIMIDE_COMPOSITION = ((1, 1.008, 0.0264), (6, 12.011, 0.6911), (7, 14.007, 0.0733), (8, 15.999, 0.2092))
SCINTILLATOR_COMPOSITION = ((1, 1.008, 0.0850), (6, 12.011, 0.9150))
LEAD_COMPOSITION = ((82, 207.2, 1.0),)

# --- plausibility limits of raw-file values (na64reco.io.raw.check_content) ---------------------
#: Momentum of the SPS protons slow-extracted to the CERN North Area; M2 (NA64mu) and H4 (NA64e)
#: carry their secondaries and tertiaries, so no beam particle at NA64 has more (CERN SPS North
#: Area beams: 400 GeV/c primary protons).  The simulator refuses a beam energy above it.
SPS_NORTH_AREA_MOMENTUM = 400 * u.GeV
#: Largest true momentum (``truth.p_in``, ``truth.p_out``) a raw file may hold: the North Area
#: proton momentum plus 25 % (12-25 sigma of the 1-2 % beam momentum spread of the setups at
#: that energy; no simulated process adds momentum to the beam particle).  Above it a value is
#: a wrong one, not a particle.
TRUTH_MOMENTUM_MAX = 1.25 * SPS_NORTH_AREA_MOMENTUM
#: Most beam particles one spill may count (``spills.n_beam``): the NA64 beams carry 1e6-1e7
#: particles per 4.8 s spill (NA64.md), the M2 line at most ~1e8, and a scintillator beam counter
#: separates particles ~1 ns apart at best (< 5e9 in a 4.8 s spill); 1e10 is 2-4 orders above any
#: real count and far below a corrupt one (2^62 ~ 4.6e18).
MAX_BEAM_PER_SPILL = 10**10

# --- plausibility of calibration inputs and results (na64reco.calibration) -------------------
#: Relative tolerance between ``calibrate --beam-energy`` and the beam energy a file records
#: (``simulation.beam_energy_gev``): the beams' momentum spread (1-2 %, ``beam.momentum_spread`` of
#: calib/setups/*.yaml).  A given energy further off is another beam setting, not a rounding.
CALIBRATION_BEAM_ENERGY_TOLERANCE = 0.02
#: Allowed range of the ECAL response to beam electrons (peak of the uncorrected ECAL sum / beam
#: energy) in ``calibrate --kind electron``.  The zero suppression loses ~2 % of a 100 GeV shower
#: and ~16 % of a 5 GeV one (responses 0.84-0.98 in calib/conditions/na64e/calorimeter/v002.yaml),
#: gains are off by ~10 % at most (``msadc.gain_spread``): below half or above 1.2 the input is not
#: electrons of that energy (a muon or hadron run, a wrong --beam-energy, gains off by a factor).
ECAL_ELECTRON_RESPONSE_RANGE = (0.5, 1.2)
#: Allowed range of each fitted ECAL section scale (beam energy / section sum, same runs): the
#: preshower, which loses most below the threshold, needs 1.25-1.27 at 5-10 GeV (v002 above); a factor
#: 2 either way is not a threshold loss but a wrong input.
ECAL_SECTION_SCALE_RANGE = (0.5, 2.0)

# --- plausibility of the calorimeter conditions (na64reco.conditions) --------------------------
#: Allowed range of a channel's gain relative to its detector's ``nominal_gain`` (calib/setups): the
#: channel-to-channel spread is ~10 % (``msadc.gain_spread``) and the shipped constants lie within
#: 0.74-1.29 of nominal; a factor 100 either way is not a calibration but a unit or typing error
#: (a gain of 1e30 MeV per count made a 3.5e31 GeV ECAL energy, read without a word, before).
CALO_GAIN_TO_NOMINAL_RANGE = (0.01, 100.0)

# --- Kelner, Kokoulin and Petrukhin's muon cross sections (na64reco.physics.muon_losses, .tridents) ----
#: Screening constant B of the atomic form factor, ln(B Z^-1/3) (Kelner, Kokoulin, Petrukhin, Phys. At.
#: Nucl. 60 (1997) 576 and 63 (2000) 1603; Groom, Mokhov, Striganov, ADNDT 78 (2001) 183).
KKP_SCREENING_B = 183.0
#: The nucleus' size in the nuclear form factor: D_n = KKP_D_N_COEFF A^KKP_D_N_POWER (same papers).
KKP_D_N_COEFF = 1.54
KKP_D_N_POWER = 0.27
