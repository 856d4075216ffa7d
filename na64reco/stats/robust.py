"""Robust location and spread: the median and the median absolute deviation (MAD).

For a Gaussian the MAD is ``sigma * Phi^-1(3/4)``, so ``MAD_TO_SIGMA * MAD`` estimates
sigma while ignoring a minority of outliers (tails, pile-up, dead channels).
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): sigma of a Gaussian per unit of its median absolute deviation


def robust_sigma(x, axis=None, centre=None) -> np.ndarray | float:
    """``MAD_TO_SIGMA`` x the median absolute deviation of ``x`` from ``centre`` (its median by default)."""
    x = np.asarray(x, dtype=float)
    med = np.median(x, axis=axis, keepdims=True) if centre is None else centre
    return MAD_TO_SIGMA * np.median(np.abs(x - med), axis=axis)


def median_and_sigma(x) -> tuple[float, float]:
    """(median, robust sigma) of a 1-d sample."""
    x = np.asarray(x, dtype=float)
    med = float(np.median(x))
    return med, float(robust_sigma(x, centre=med))
