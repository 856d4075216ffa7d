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

from na64reco.background.estimates import (
    DESIGN_NA64MU_PER_MOT,
    DESIGN_PUNCHTHROUGH_100GEV,
    TAIL_MODELS,
    BackgroundComponent,
    BackgroundTable,
    TailFit,
    TailModel,
    dimuon_estimate,
    dimuon_from_json,
    extrapolate,
    factorised_rate,
    fit_tail,
    independence_ratio,
    mc_component,
    mc_component_from_sums,
    misreco_from_json,
    misreconstruction_background,
    published_na64mu_2022,
    rate_component,
    single_scatter_from_json,
    sum_components,
)

__all__ = [
    "TAIL_MODELS",
    "DESIGN_NA64MU_PER_MOT",
    "DESIGN_PUNCHTHROUGH_100GEV",
    "BackgroundComponent",
    "BackgroundTable",
    "TailFit",
    "TailModel",
    "dimuon_estimate",
    "dimuon_from_json",
    "single_scatter_from_json",
    "extrapolate",
    "factorised_rate",
    "fit_tail",
    "independence_ratio",
    "mc_component",
    "mc_component_from_sums",
    "misreco_from_json",
    "misreconstruction_background",
    "published_na64mu_2022",
    "rate_component",
    "sum_components",
]
