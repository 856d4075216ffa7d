"""Shared check of the forced-sampling tests: a stratified combination against a direct simulation."""

from __future__ import annotations

import math


def assert_combination_matches_direct(res: dict, direct_counts: dict) -> None:
    """``res`` (:func:`na64reco.background.forced_noise_ratio`) equals the tracked fraction of the
    direct simulation (``count`` output) within 4 sigma (binomial error of the direct sample and
    the combination's error in quadrature) plus the truncation bound."""
    direct = direct_counts["tracked"] / direct_counts["hard"]
    sigma = math.hypot(math.sqrt(direct * (1 - direct) / direct_counts["hard"]), res["error"])
    assert res["truncation"] < 0.01
    assert abs(res["ratio"] - direct) < 4 * sigma + res["truncation"], (res["ratio"], direct, sigma)
