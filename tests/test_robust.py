"""Robust spread: MAD_TO_SIGMA x MAD recovers a Gaussian sigma and ignores a minority of outliers."""

import numpy as np
import pytest
from scipy.stats import norm

from na64reco.stats.robust import MAD_TO_SIGMA, median_and_sigma, robust_sigma


def test_constant_is_the_inverse_gaussian_quartile():
    assert MAD_TO_SIGMA == pytest.approx(1.0 / norm.ppf(0.75), rel=1e-4)


def test_gaussian_sigma_recovered_within_statistics():
    rng = np.random.default_rng(7)
    n = 40_000
    x = rng.normal(3.0, 2.0, n)
    med, sig = median_and_sigma(x)
    # standard errors of the median and of the MAD-based sigma for a Gaussian: 1.2533 and 1.1664 sigma/sqrt(n)
    assert abs(med - 3.0) < 4 * 1.2533 * 2.0 / np.sqrt(n)
    assert abs(sig - 2.0) < 4 * 1.1664 * 2.0 / np.sqrt(n)


def test_outliers_do_not_move_it_and_axis_works():
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, [1.0, 4.0], (20_000, 2))
    x[:1000] = 1e6  # 5 % far outliers
    sig = robust_sigma(x, axis=0)
    assert sig.shape == (2,)
    # 5 % outliers on one side shift the quartiles by ~0.07 sigma at most
    assert sig == pytest.approx([1.0, 4.0], rel=0.12)
    assert np.std(x[:, 0]) > 1e4
