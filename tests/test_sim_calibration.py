"""Simulator options for calibration runs: the calibration trigger and the beam-energy override."""

from __future__ import annotations

import hepunits as u
import numpy as np
import pytest

from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.io.raw import TRIGGER_BITS, open_raw
from na64reco.sim import simulate
from na64reco.sim.beam import with_beam_energy
from na64reco.sim.trigger import calibration_trigger


def test_calibration_trigger_writes_full_energy_electrons(tmp_path):
    phys, cal = tmp_path / "phys.root", tmp_path / "cal.root"
    simulate("na64e", 300, 5, 3, phys, process="beam")
    res = simulate("na64e", 300, 5, 3, cal, process="beam", trigger="calibration")
    with open_raw(cal) as f:
        truth, events, meta = f.truth(), f.events(), f.meta
    # the physics trigger (ECAL < 95 GeV) rejects most full-energy showers; the calibration
    # trigger (beam counters only) writes every beam electron
    with open_raw(phys) as f:
        assert f.n_events < 0.5 * res.n_written
    assert res.n_written >= 295
    assert np.all(np.asarray(events["trigger"]) == TRIGGER_BITS["calibration"])
    assert np.median(truth["e_ecal"]) > 97.0
    assert meta["simulation"]["trigger"] == "calibration"
    terms = calibration_trigger(load_setup("na64e").trigger).terms
    assert [t.detector for t in terms] == ["S0", "S1"]


def test_beam_energy_override_keeps_the_reference_trajectory(tmp_path):
    path = tmp_path / "e10.root"
    simulate("na64e", 300, 6, 3, path, process="beam", trigger="calibration", beam_energy=10 * u.GeV)
    with open_raw(path) as f:
        truth, meta = f.truth(), f.meta
    assert meta["simulation"]["beam_energy_gev"] == pytest.approx(10.0)
    assert np.median(truth["p_in"]) == pytest.approx(10.0, rel=0.01)
    assert 9.0 < np.median(truth["e_ecal"]) < 10.0
    setup = load_setup("na64e")
    scaled = with_beam_energy(setup, 10 * u.GeV)
    z = np.array([setup.detector("ECAL").z])
    np.testing.assert_allclose(scaled.reference_position(z), setup.reference_position(z), atol=1e-9)
    with pytest.raises(ConfigError, match="beam energy -0.001 GeV: expected above 0"):
        with_beam_energy(setup, -1.0)
    with pytest.raises(ConfigError, match="unknown trigger"):
        simulate("na64e", 10, 1, 1, tmp_path / "x.root", trigger="cosmic")
