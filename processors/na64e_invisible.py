"""NA64e invisible search: an SRD-tagged electron leaving E_ECAL < 50 GeV and nothing else.

See :mod:`processors.base` for what a processor does and returns, and
``selections/na64e_invisible.yaml`` for the cut-flow.
"""

from __future__ import annotations

from processors.base import InvisibleProcessor


class Na64eInvisible(InvisibleProcessor):
    NAME = "na64e_invisible"
    SETUP = "na64e"
    SELECTION = "na64e_invisible"
    MAIN_VARIABLES = ("p_in", "ecal_energy", "ecal_preshower_energy", "ecal_shower_chi2",
                      "hcal_energy", "hcal_module_energy", "vhcal_energy", "veto_energy",
                      "srd_module_energy")
    PAIRS = (("ecal_energy", "hcal_energy"),)
    BINNING_OVERRIDES = {
        "p_in": (120, 0.0, 120.0, r"$p_{in}$ [GeV]"),
        "ecal_energy": (120, 0.0, 120.0, r"$E_{ECAL}$ [GeV]"),
        "hcal_energy": (120, 0.0, 120.0, r"$E_{HCAL}$ [GeV]"),
    }


Processor = Na64eInvisible
