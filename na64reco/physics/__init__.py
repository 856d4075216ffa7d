"""Signal physics: dark-bremsstrahlung cross sections, Z' widths, muon g-2 and yields.

Pure functions in hepunits (MeV, mm); see each module for sources.
"""

from na64reco.physics.darkbrem import dsigma_dx, sample_x, sigma_total, x_pdf
from na64reco.physics.flux import chi

__all__ = ["chi", "dsigma_dx", "sigma_total", "x_pdf", "sample_x"]
