"""Checks of the raw files of a calibration against what the command was told about them:
the run range the constants are published for, the beam particle, the beam energy."""

from __future__ import annotations

from hepunits import GeV

from na64reco.constants import CALIBRATION_BEAM_ENERGY_TOLERANCE
from na64reco.errors import ConfigError
from na64reco.geometry import Setup
from na64reco.io.raw import open_raw

#: beam particles of an electron calibration (``calibrate --kind electron``)
ELECTRON_BEAMS = ("e-", "e+")


def check_runs(files, setup: Setup, runs: tuple[int, int]) -> None:
    """Every file's run inside ``runs`` (the validity of the constants derived from them)."""
    first, last = runs
    for path in files:
        with open_raw(path, setup=setup.name) as f:
            run = f.run
        if not first <= run <= last:
            raise ConfigError(f"--runs {first} {last}: {path} is run {run}, outside the run range the new "
                              "constants would be valid for; give a --runs range that contains the runs of the files")


def check_electron_beam(f, path, setup: Setup) -> None:
    """The open raw file ``f`` (of ``setup``) was taken with an electron or positron beam."""
    particle = setup.beam.particle
    if particle not in ELECTRON_BEAMS:
        raise ConfigError(f"{path}: a run of setup {f.setup}, whose beam is {particle} (beam.particle of the setup); "
                          f"the electron calibration needs electron-beam runs ({', '.join(ELECTRON_BEAMS)}): "
                          "calibrate muon runs with --kind mip")


def file_beam_energy(f, path, setup: Setup, beam_energy_gev: float | None) -> float:
    """Beam energy (GeV) of the open raw file ``f``: ``beam_energy_gev`` if given, else the one the
    simulator recorded (``simulation.beam_energy_gev``), else the setup's.  A given energy that
    differs from the recorded one by more than ``CALIBRATION_BEAM_ENERGY_TOLERANCE`` is refused."""
    recorded = (f.meta.get("simulation") or {}).get("beam_energy_gev")
    if beam_energy_gev is None:
        return float(recorded or setup.beam.energy / GeV)
    tol = CALIBRATION_BEAM_ENERGY_TOLERANCE
    if recorded and abs(beam_energy_gev - recorded) > tol * recorded:
        raise ConfigError(f"--beam-energy {beam_energy_gev:g}: {path} records a beam energy of {recorded:g} GeV; "
                          f"expected {recorded * (1 - tol):g}-{recorded * (1 + tol):g} GeV (within {tol:.0%}, "
                          "na64reco.constants.CALIBRATION_BEAM_ENERGY_TOLERANCE), or leave --beam-energy out")
    return float(beam_energy_gev)
