"""Beam particles at ``beam.start_z``: momentum, spot, divergence, halo, hadron admixture.

Core beam: p = E (1 + momentum_spread N), (x, y) Gaussian with the spot sigmas, slopes
Gaussian with the divergences, all independent.  Halo: radius uniform in area between
``halo_radius_min`` and ``halo_radius_max`` (flat density), uniform azimuth, the core
divergence.  The beam is a mu-/e- (charge -1); hadrons of the admixture are pi- or K-
(process flags decide).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from na64reco.geometry import Setup, check_beam_energy
from na64reco.io.raw import PROCESSES
from na64reco.sim.randoms import standard_normals
from na64reco.sim.tracks import KIND_ELECTRON, KIND_KAON, KIND_MUON, KIND_PION, ROLE_PRIMARY, Tracks


def with_beam_energy(setup: Setup, energy: float) -> Setup:
    """``setup`` with beam energy ``energy`` (MeV): every magnet's field integral and
    reference momentum scale with it (the beam-line and spectrometer settings follow the
    beam energy), so beam particles follow the same reference trajectory and hit the
    detectors where the nominal beam does.  For calibration runs at other energies."""
    f = check_beam_energy(float(energy)) / setup.beam.energy
    magnets = {k: dataclasses.replace(m, field_integral=m.field_integral * f,
                                      reference_momentum=m.reference_momentum * f)
               for k, m in setup.magnets.items()}
    return dataclasses.replace(setup, beam=dataclasses.replace(setup.beam, energy=energy), magnets=magnets)


def beam_kind(setup: Setup) -> int:
    return KIND_MUON if setup.beam.particle.startswith("mu") else KIND_ELECTRON


def beam_charge(setup: Setup) -> int:
    return -1 if setup.beam.particle.endswith("-") else 1


def sample_beam(rng: np.random.Generator, setup: Setup, ev: np.ndarray, process: np.ndarray,
                role: int = ROLE_PRIMARY, t=None) -> Tracks:
    """Beam particles for events ``ev`` whose (forced) process codes are ``process``.

    Halo events get halo kinematics; hadron processes (hadron, kdecay, pidecay) a pi-/K- of
    the beam momentum; everything else (punchthrough: a leading hadron made by the muon in
    the target) a beam lepton.
    """
    b = setup.beam
    n = len(ev)
    z = standard_normals(rng, 5, n)  # = rng.standard_normal((5, n)), drawn in numba
    p = b.energy * (1.0 + b.momentum_spread * z[0])
    x = b.spot_sigma_x * z[1]
    y = b.spot_sigma_y * z[2]
    halo = process == PROCESSES["halo"]
    if np.any(halo):
        nh = int(halo.sum())
        r2 = rng.uniform(b.halo_radius_min**2, b.halo_radius_max**2, nh)
        phi = rng.uniform(0.0, 2 * np.pi, nh)
        x[halo] = np.sqrt(r2) * np.cos(phi)
        y[halo] = np.sqrt(r2) * np.sin(phi)
    kind = np.full(n, beam_kind(setup), np.int8)
    hadronic = np.isin(process, [PROCESSES["hadron"], PROCESSES["pidecay"]])
    kind[hadronic] = KIND_PION
    kind[process == PROCESSES["kdecay"]] = KIND_KAON
    return Tracks(
        ev=np.asarray(ev, np.int64), x=x, y=y,
        tx=b.divergence_x * z[3], ty=b.divergence_y * z[4], p=p,
        q=np.full(n, beam_charge(setup), np.int8), kind=kind,
        role=np.full(n, role, np.int8), flag=np.asarray(process, np.int8),
        t=np.zeros(n) if t is None else np.asarray(t, float), alive=np.ones(n, bool),
    )
