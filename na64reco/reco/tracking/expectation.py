"""Closed-form expectations of the track search, for validation against the simulation."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.stats import norm

from na64reco.reco.tracking.config import load_tracking_config


def closed_form_efficiency(setup) -> float:
    """P(p_in and p_out found) for beam muons: in each bend view at most its ``max_missing_planes``
    of its planes without a hit and none of its ``required_planes`` (independent plane
    efficiencies), times the beam-spot acceptance of the narrowest plane of the view (Gaussian
    spot on the reference trajectory)."""
    from na64reco.reco.tracking.tracks import make_views

    total = 1.0
    for view in make_views(setup, load_tracking_config(setup)):
        if not view.bend:
            continue
        planes = [setup.planes[i] for i in view.planes]
        eff = np.array([p.efficiency for p in planes])
        required = np.array(view.required or (False,) * len(planes), bool)
        prob = 0.0
        for k in range(view.max_missing + 1):
            for miss in combinations(range(len(planes)), k):
                mask = np.zeros(len(planes), bool)
                mask[list(miss)] = True
                if (mask & required).any():
                    continue
                prob += np.prod(np.where(mask, 1 - eff, eff))
        sigma = setup.beam.spot_sigma_x if view.coord == "x" else setup.beam.spot_sigma_y
        total *= prob * (2 * norm.cdf(min(p.width for p in planes) / 2 / sigma) - 1)
    return float(total)
