"""Muon g-2 contribution of a vector Z' and the coupling band explaining the anomaly."""

import numpy as np
import pytest
from scipy.integrate import quad

from na64reco import constants as c
from na64reco.physics import gminus2 as gm


def _reference(m):
    r = (m / c.MUON_MASS) ** 2
    return quad(lambda x: x * x * (1 - x) / (x * x + (1 - x) * r), 0, 1, epsabs=0, epsrel=1e-12,
                points=[min(np.sqrt(r), 0.5)], limit=400)[0]


@pytest.mark.parametrize("m", [0.01, 1.0, 10.0, 40.0, 105.0, 1000.0, 1e4])
def test_loop_integral_matches_quad(m):
    assert gm.loop_integral(m) == pytest.approx(_reference(m), rel=1e-5)


def test_light_limit():
    g = 4.5e-4
    assert gm.delta_a_mu(1e-4, g) == pytest.approx(g**2 / (8 * np.pi**2), rel=1e-5)


def test_heavy_limit():
    g, m = 1e-2, 2e5
    assert gm.delta_a_mu(m, g) == pytest.approx(g**2 * c.MUON_MASS**2 / (12 * np.pi**2 * m**2), rel=1e-3)


def test_vectorised_and_monotonic():
    m = np.geomspace(0.1, 1e4, 30)
    d = gm.delta_a_mu(m, 1e-3)
    assert d.shape == m.shape and np.all(np.diff(d) < 0)


def test_g_band_reproduces_delta_a_mu():
    m = np.array([1.0, 40.0, 300.0])
    lo, mid, hi = gm.g_band(m, n_sigma=2)
    np.testing.assert_allclose(gm.delta_a_mu(m, mid), c.DELTA_A_MU, rtol=1e-12)
    np.testing.assert_allclose(gm.delta_a_mu(m, lo), c.DELTA_A_MU - 2 * c.DELTA_A_MU_ERROR, rtol=1e-12)
    np.testing.assert_allclose(gm.delta_a_mu(m, hi), c.DELTA_A_MU + 2 * c.DELTA_A_MU_ERROR, rtol=1e-12)
    # known number: light Z' needs g = sqrt(8 pi^2 * 2.51e-9) = 4.45e-4
    assert gm.g_band(1e-3)[1] == pytest.approx(np.sqrt(8 * np.pi**2 * 2.51e-9), rel=1e-4)
    assert gm.g_band(1.0, n_sigma=5)[0] == 0.0


@pytest.mark.parametrize("m", [-5.0, 0.0, float("nan"), float("inf")])
def test_a_mass_that_is_not_positive_and_finite_is_refused(m):
    """(-5 MeV gave the 5 MeV value, NaN a NaN band, 0 a division warning: statistics review, stop 48)"""
    with pytest.raises(ValueError, match="expected a finite mass > 0"):
        gm.g_band(np.array([10.0, m]))
