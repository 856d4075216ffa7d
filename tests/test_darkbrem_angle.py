"""The emission angle of dark bremsstrahlung (physics.darkbrem.pt_cdf / sample_pt) and the
signal muon's recoil in the simulator (sim.signal.recoil_slopes).

References: the double-differential WW cross section written out here from BEST eq. A12
(module docstring of na64reco.physics.darkbrem) and integrated numerically over the angle,
and the module's own x spectrum (dsigma_dx, IWW), which is that angle integral in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from na64reco import constants
from na64reco.physics import darkbrem
from na64reco.physics.flux import chi
from na64reco.sim.signal import recoil_slopes

E0 = 160_000.0  # MeV
M_MU = constants.MUON_MASS
CASES = [(1.0, 0.3), (1.0, 0.75), (10.0, 0.75), (100.0, 0.5), (1000.0, 0.9)]  # (m_X MeV, x)


def _d2sigma(theta, x, m, ml=M_MU):
    """d sigma / dx dcos(theta) / (8 alpha^2 alpha_X E0^2 beta chi), BEST eq. A12 with M^2 = m^2 + 2 m_l^2."""
    u = E0**2 * x * theta**2
    big_u = u + m**2 * (1 - x) / x + ml**2 * x
    return x / big_u**2 * ((1 - x + x**2 / 2) - x * (1 - x) * (m**2 + 2 * ml**2) * u / big_u**2)


def _theta_cut(x, m, ml=M_MU):
    """Largest angle with flux: t_min = (U / (2 E0 (1 - x)))^2 below t_max = m^2 + m_l^2 (IWW)."""
    u_cut = 2 * E0 * (1 - x) * np.sqrt(m**2 + ml**2) - (m**2 * (1 - x) / x + ml**2 * x)
    return np.sqrt(u_cut / (E0**2 * x))


@pytest.mark.parametrize("m,x", CASES)
def test_pt_cdf_is_the_angle_integral_of_the_ww_cross_section(m, x):
    th_cut = _theta_cut(x, m)
    norm = integrate.quad(lambda th: _d2sigma(th, x, m) * th, 0, th_cut, limit=400, epsabs=0)[0]
    for q in (0.1, 0.5, 0.9, 0.99):
        # p_T = x E0 theta; d cos(theta) = theta d theta at these angles
        th = q * th_cut if q > 0.95 else np.sqrt(q) * 1e-3 * (1 + m / 100)
        part = integrate.quad(lambda t: _d2sigma(t, x, m) * t, 0, th, limit=400, epsabs=0)[0]
        assert darkbrem.pt_cdf(x * E0 * th, x, E0, m) == pytest.approx(part / norm, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("m,x", CASES)
def test_the_angle_integral_is_the_x_spectrum(m, x):
    """Integrated over all angles (no flux cut), the double-differential formula gives dsigma_dx:
    the angle's density is the x spectrum's own (the cut where the flux vanishes differs only at
    x > 0.99, module docstring)."""
    full = integrate.quad(lambda th: _d2sigma(th, x, m) * th, 0, np.inf, limit=400, epsabs=0)[0]
    beta = np.sqrt(1 - (m / (x * E0)) ** 2)
    pref = 4 * constants.FINE_STRUCTURE**2 * darkbrem.alpha_x(1.0) * constants.HBARC**2
    flux = chi(m**4 / (4 * E0**2), m**2 + M_MU**2, constants.LEAD_Z, constants.LEAD_MASS_NUMBER, False)
    # d sigma/dx = Int dcos 8 alpha^2 alpha_X E0^2 x beta chi [...] / U^2
    #            = 2 E0^2 pref chi beta Int theta dtheta x [...] / U^2
    expected = darkbrem.dsigma_dx(np.array([x]), E0, m)[0]
    assert 2 * E0**2 * pref * flux * beta * full == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("m,x", CASES)
def test_sample_pt_follows_pt_cdf(m, x):
    rng = np.random.default_rng(7)
    pt = darkbrem.sample_pt(rng, np.full(40_000, x), E0, m)
    assert stats.kstest(pt, lambda v: darkbrem.pt_cdf(v, x, E0, m)).pvalue > 1e-3


def test_a_light_z_prime_recoils_with_the_muon_mass_scale_not_its_own():
    """The typical p_T is sqrt(x U0) = sqrt(m^2 (1 - x) + m_mu^2 x^2): ~79 MeV at x = 0.75 for
    m_X = 1 MeV (the simulator drew m_X |N(0,1)|, ~0.7 MeV, before)."""
    rng = np.random.default_rng(3)
    for m in (1.0, 10.0, 100.0):
        pt = darkbrem.sample_pt(rng, np.full(40_000, 0.75), E0, m)
        scale = np.sqrt(m**2 * 0.25 + M_MU**2 * 0.75**2)
        assert np.median(pt) == pytest.approx(scale, rel=0.03)


def test_sample_pt_takes_one_x_per_draw():
    rng = np.random.default_rng(5)
    x = np.array([0.2, 0.5, 0.9] * 20_000)
    pt = darkbrem.sample_pt(rng, x, E0, 10.0)
    assert pt.shape == x.shape
    for xv in (0.2, 0.5, 0.9):
        assert stats.kstest(pt[x == xv], lambda v, xv=xv: darkbrem.pt_cdf(v, xv, E0, 10.0)).pvalue > 1e-3


def test_recoil_slopes_give_the_muon_the_emission_pt():
    rng = np.random.default_rng(11)
    n, x, m = 30_000, 0.6, 10.0
    p_after = np.full(n, (1 - x) * E0)
    dtx, dty = recoil_slopes(rng, p_after, np.full(n, x), E0, m, M_MU)
    pt = np.hypot(dtx, dty) * p_after
    assert stats.kstest(pt, lambda v: darkbrem.pt_cdf(v, x, E0, m)).pvalue > 1e-3
    phi = np.arctan2(dty, dtx)
    assert stats.kstest((phi + np.pi) / (2 * np.pi), "uniform").pvalue > 1e-3


def test_bad_energy_fractions_are_refused_and_edges_are_handled():
    rng = np.random.default_rng(2)
    for bad in (0.0, 1.0, -0.2, np.nan, np.inf):
        with pytest.raises(ValueError, match="energy fraction x = .*expected a number in \\(0, 1\\)"):
            darkbrem.sample_pt(rng, np.array([0.5, bad]), E0, 10.0)
        with pytest.raises(ValueError, match="energy fraction"):
            darkbrem.pt_cdf(10.0, bad, E0, 10.0)
    assert darkbrem.pt_cdf(-5.0, 0.5, E0, 10.0) == 0.0
    assert darkbrem.pt_cdf(0.0, 0.5, E0, 10.0) == pytest.approx(0.0, abs=1e-12)
    assert darkbrem.pt_cdf(1e9, 0.5, E0, 10.0) == pytest.approx(1.0)
    assert darkbrem.sample_pt(rng, np.zeros(0), E0, 10.0).shape == (0,)
    assert np.ndim(darkbrem.sample_pt(rng, 0.5, E0, 10.0)) == 0
    # a flux bound that leaves no angle (U_cut <= U0; not reached with the IWW t_max): straight on
    assert np.all(darkbrem.sample_pt(rng, np.full(10, 0.5), E0, 10.0, t_max=1e-12) == 0.0)
    assert darkbrem.pt_cdf(0.0, 0.5, E0, 10.0, t_max=1e-12) == 1.0


def test_a_setup_that_still_sets_the_old_recoil_scale_is_refused(tmp_path):
    import shutil

    import yaml

    from na64reco.errors import ConfigError
    from na64reco.geometry import load_setup
    from na64reco.resources import calib_dir
    from na64reco.sim.params import load_sim_params

    src = calib_dir() / "setups" / "na64mu.yaml"
    body = yaml.safe_load(src.read_text())
    body["simulation"]["signal"]["recoil_pt_scale"] = 3.0
    path = tmp_path / "na64mu.yaml"
    path.write_text(yaml.safe_dump(body))
    shutil.copytree(calib_dir() / "conditions", tmp_path / "conditions")
    with pytest.raises(ConfigError, match="recoil_pt_scale.*no longer read"):
        load_sim_params(load_setup(str(path), run=1001))
