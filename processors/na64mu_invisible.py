"""NA64mu invisible search: one scattered muon with p_out < 80 GeV and nothing else.

See :mod:`processors.base` for what a processor does and returns, and
``selections/na64mu_invisible.yaml`` for the cut-flow.
"""

from __future__ import annotations

from processors.base import InvisibleProcessor


class Na64muInvisible(InvisibleProcessor):
    NAME = "na64mu_invisible"
    SETUP = "na64mu"
    SELECTION = "na64mu_invisible"
    MAIN_VARIABLES = ("p_in", "p_out", "chi2_in", "chi2_out", "ecal_energy", "hcal_energy",
                      "hcal_module_energy", "vhcal_energy", "veto_energy")
    PAIRS = (("ecal_energy", "hcal_energy"), ("p_out", "hcal_energy"))
    BINNING_OVERRIDES = {
        "ecal_energy": (100, 0.0, 5.0, r"$E_{ECAL}$ [GeV]"),
        "hcal_energy": (120, 0.0, 30.0, r"$E_{HCAL}$ [GeV]"),
    }


Processor = Na64muInvisible
