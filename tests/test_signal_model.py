"""The signal model of each setup's search: one description (na64reco.selection.signal_model)."""

from __future__ import annotations

import hepunits as u
import pytest

from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.selection.schema import load_selection
from na64reco.selection.signal_model import signal_model


@pytest.mark.parametrize("setup, selection, variable, box_gev, e0_gev", [
    ("na64mu", "na64mu_invisible", "p_out", 80.0, 160.0),  # PRL 132, 211803 (2024)
    ("na64e", "na64e_invisible", "ecal_energy", 50.0, 100.0),  # NA64.md
])
def test_the_box_of_the_yields_is_the_box_of_the_analysis(setup, selection, variable, box_gev, e0_gev):
    m = signal_model(setup)
    box = load_selection(selection).signal_box
    assert (m.box_variable, m.box_max / u.GeV, box.max) == (variable, box_gev, box_gev)
    assert m.e0 == load_setup(setup).beam.energy == e0_gev * u.GeV
    assert m.x_min == pytest.approx(1.0 - box_gev / e0_gev, abs=1e-15)


def test_the_limit_command_and_the_efficiency_tables_read_it():
    from na64reco.efficiency import _kinematics

    m = signal_model("na64mu")
    assert _kinematics("na64mu") == (m.e0, m.lepton_mass, "zprime", m.x_min)
    with pytest.raises(ConfigError, match="setup 'na64x' has no signal model"):
        signal_model("na64x")
