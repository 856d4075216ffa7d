"""Background estimates for the signal box.

* :mod:`~na64reco.background.estimates` -- the general toolkit, re-exported here: tail fits
  extrapolated from a sideband, MC components, rate components and the background table
  (``from na64reco import background as bg; bg.fit_tail(...)``);
* the NA64mu studies of the beam muon's momentum mis-measurement (issue 9), one module each:
  :mod:`~na64reco.background.fake_kicks` (fake kicks at the nominal tracker noise, by forced
  noise), :mod:`~na64reco.background.lone_muon_truth` and :mod:`~na64reco.background.lone_muon`
  (the lone muon classified on truth, the (0, 0) stratum), :mod:`~na64reco.background.outlier_tail`
  (its outliers integrated), :mod:`~na64reco.background.pileup_truth` and
  :mod:`~na64reco.background.soft_pileup` (the strata with an out-of-time muon near the trigger),
  :mod:`~na64reco.background.scatter_tail` (single large-angle scattering, a closed form).

The studies use the simulation (:mod:`na64reco.sim`) and the reconstruction; the layers below
(io, conditions, reco, sim, selection) never import this package.
"""

from na64reco.background.estimates import *  # noqa: F403  (the toolkit's __all__)
from na64reco.background.estimates import __all__  # noqa: F401
