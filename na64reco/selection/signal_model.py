"""The signal model of each setup's invisible-mode search, from one description.

The beam energy is the setup's (``calib/setups``); the model of each setup's search and its lepton
are fixed here (NA64mu: a Z' coupled to muons; NA64e: an A' mixing with the photon, electrons); the
signal box is the search's selection's (``selections/<setup>_invisible.yaml``, found as
:func:`~na64reco.selection.schema.load_selection` finds it): ``x_min = 1 - box / E0`` for a
box on the scattered muon's momentum (NA64mu, p_out < 80 GeV) or on the ECAL energy (NA64e,
E_ECAL < 50 GeV).  The ``limit`` command, the efficiency tables and the background studies read
it here, so that the box of the yields is the box of the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import hepunits as u

from na64reco import constants
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.selection.schema import load_selection

#: the invisible-mode search of each setup: its selection and signal model
_SEARCHES = {
    "na64mu": ("na64mu_invisible", "zprime", "g", constants.MUON_MASS),
    "na64e": ("na64e_invisible", "aprime", "eps", constants.ELECTRON_MASS),
}


@dataclass(frozen=True)
class SignalModel:
    """What the yields of a setup's search need (energies in MeV, hepunits)."""

    setup: str
    e0: float             # beam energy
    lepton_mass: float
    model: str            # "zprime" | "aprime"
    coupling: str         # the coupling's name: "g" | "eps"
    box_variable: str     # the signal box's variable (p_out | ecal_energy)
    box_max: float        # its upper edge
    x_min: float          # the smallest energy fraction of the X the box takes: 1 - box_max / e0


def signal_model(setup: str) -> SignalModel:
    """The :class:`SignalModel` of ``setup``'s invisible-mode search (a ConfigError for another setup)."""
    if setup not in _SEARCHES:
        raise ConfigError(f"setup {setup!r} has no signal model; choose one of: {', '.join(_SEARCHES)}")
    selection, model, coupling, lepton_mass = _SEARCHES[setup]
    box = load_selection(selection).signal_box
    if box.max is None or box.min is not None:
        raise ConfigError(f"selection {selection!r}: the signal box must be an upper edge only, found {box.text}")
    e0 = load_setup(setup).beam.energy
    box_max = box.max * u.GeV  # (a selection's bounds are in GeV)
    return SignalModel(setup, e0, lepton_mass, model, coupling, box.variable, box_max, 1.0 - box_max / e0)
