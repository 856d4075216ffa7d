"""Closed-form expectations of the track search, for validation against the simulation."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.stats import norm

from na64reco.reco.tracking.config import load_tracking_config


def closed_form_efficiency(setup) -> float:
    """P(p_in and p_out found) for beam muons: in each bend view at most ``max_missing_planes``
    of its planes without a hit (independent plane efficiencies), times the beam-spot
    acceptance of the narrowest plane of the view (Gaussian spot on the reference trajectory)."""
    cfg = load_tracking_config(setup)
    total = 1.0
    for st in cfg.stations:
        m = setup.magnets[st.magnet]
        planes = [p for p in setup.planes_of(m.name) if p.measures == m.bend_plane]
        eff = np.array([p.efficiency for p in planes])
        prob = 0.0
        for k in range(cfg.max_missing_planes + 1):
            for miss in combinations(range(len(planes)), k):
                mask = np.zeros(len(planes), bool)
                mask[list(miss)] = True
                prob += np.prod(np.where(mask, 1 - eff, eff))
        sigma = setup.beam.spot_sigma_x if m.bend_plane == "x" else setup.beam.spot_sigma_y
        total *= prob * (2 * norm.cdf(min(p.width for p in planes) / 2 / sigma) - 1)
    return float(total)
