"""Single large-angle scattering (na64reco.background.scatter_tail, na64reco.sim.forced_scatter): cross
sections against closed forms, the kink algebra against a direct fit of a kinked track."""

import math

import hepunits as u
import numpy as np
import pytest

from na64reco import constants as C
from na64reco.background import scatter_tail as st
from na64reco.geometry import load_setup
from na64reco.material import highland
from na64reco.physics import single_scatter as xs
from na64reco.sim import material_path as mp

P = 160 * u.GeV


@pytest.fixture(scope="module")
def geo2022():
    return st.station_geometry(load_setup("na64mu", run=1))


def test_rutherford_limit_without_form_factors():
    theta = np.array([1e-4, 1e-3, 3e-3, 1e-2])
    for z in (1, 7, 82):
        got = xs.sigma_above_q(P * theta, z, 2.0 * z, form_factors=False, q_max=1e9 * u.GeV)
        assert np.allclose(got, xs.rutherford_above(theta, P, z), rtol=1e-3)


def test_form_factors_limits():
    # F(0) = 1: the coherent Z^2 at small q; at 0.5 GeV lead's coherent part is gone and the
    # incoherent nucleons (~Z x dipole) are left
    assert xs.helm(1e-3, 207.2) == pytest.approx(1.0, abs=1e-6)
    assert xs.structure(0.1 * u.MeV, 82, 207.2) == pytest.approx(82**2, rel=1e-3)
    wp, _ = xs.nucleon_weights(500 * u.MeV)
    assert xs.structure(500 * u.MeV, 82, 207.2) == pytest.approx(82 * wp, rel=0.5)
    assert xs.structure(500 * u.MeV, 82, 207.2) < 1e-2 * 82**2


@pytest.mark.parametrize(("a_mass", "r_rms_fm"), [(207.2, 5.5012), (55.845, 3.7377)])
def test_helm_form_factor_has_the_measured_charge_radius(a_mass, r_rms_fm):
    """F(q) = 1 - q^2 <r^2> / 6 + ...: the Helm parameters give the measured rms charge radii of 208Pb and
    56Fe (Angeli and Marinova, ADNDT 99 (2013) 69) within 1 %; HELM_C_OFFSET 0.60 -> 0 fm gives 5.96 fm for
    lead (+8 %), a change the scattering tests do not see at the box's 420 MeV transfer."""
    q = 0.5 * u.MeV
    r2 = 6 * (1 - float(xs.helm(q, a_mass))) / q**2 * C.HBARC**2  # mm^2
    assert math.sqrt(r2) / u.fermi == pytest.approx(r_rms_fm, rel=0.01)


def test_single_scattering_rms_has_the_highland_order():
    # <theta^2> of single scatters from the screening angle up = 2 theta0^2 up to the
    # logarithms Highland folds in: a factor < 2 in the width
    for material, x in (("air", 0.01), ("polyimide", 0.004), ("lead", 1.0)):
        rms = math.sqrt(xs.mean_square_angle(material, x, P) / 2)
        assert 0.5 < rms / highland(P, C.MUON_MASS, x) < 2.0, material


def test_electron_recoil_cannot_fake_the_kick():
    r = xs.electron_recoil(2.0e-3, P)
    assert r["theta_max"] == pytest.approx(C.ELECTRON_MASS / C.MUON_MASS, rel=0.02)
    # the 2.6 mrad the box needs: the muon keeps < 90 GeV, the electron takes > 70 GeV
    r = xs.electron_recoil(2.62e-3, P)
    assert max(r["p_after"]) < 90 * u.GeV and min(r["electron_energy"]) > 70 * u.GeV
    assert xs.electron_recoil(5e-3, P)["p_after"] is None


def _direct_fit(view, used, u_hits):
    a = np.stack([np.ones(view["dz"].size), view["dz"], -view["dz"] * view["down"]], axis=1)[:, :view["npar"]]
    w = 1 / view["sigma"] ** 2
    a, w, y = a[used], w[used], u_hits[used]
    par = np.linalg.solve(a.T @ (a * w[:, None]), a.T @ (w * y))
    return par, float(np.sum(w * (y - a @ par) ** 2))


@pytest.mark.parametrize("z_s", [19.0, 21.0, 23.8, 24.0, 24.3, 26.5])
def test_kink_algebra_matches_a_direct_fit(geo2022, z_s):
    view = geo2022["bend"]
    used = np.ones(view["dz"].size, bool)
    kappa, theta = 2.6, -1.7  # mrad
    line = 0.3 + 0.05 * view["dz"] - kappa * view["dz"] * view["down"]
    kinked = line + theta * np.clip(view["z"] - z_s, 0, None)
    p0, _ = _direct_fit(view, used, line)
    p1, chi2 = _direct_fit(view, used, kinked)
    dk, r, e = st.fit_response(view, used, z_s)
    assert p1[2] - p0[2] == pytest.approx(theta * dk, abs=1e-9)
    assert chi2 == pytest.approx((theta * r) ** 2, rel=1e-9, abs=1e-12)
    assert (p1[0] + p1[1] * view["anchor_dz"]) - (p0[0] + p0[1] * view["anchor_dz"]) == pytest.approx(theta * e)
    if z_s < view["z"].min():  # upstream of the station: a tilt of the incoming line, no fake kick
        assert dk == pytest.approx(0, abs=1e-12) and r == pytest.approx(0, abs=1e-9)
    if z_s == view["z_magnet"]:  # at the magnet: exactly a kick
        assert dk == pytest.approx(-1.0) and r == pytest.approx(0, abs=1e-9)


def test_only_the_gap_at_the_magnet_reaches_the_box(geo2022):
    kappa0 = 2.6232
    theta = -np.geomspace(0.1, 100, 200)
    at_magnet, _ = st.view_acceptance(geo2022["bend"], geo2022, 24.0, theta, kappa0, 2 * kappa0)
    all_planes = float(np.prod(geo2022["bend"]["eff"]))  # 2022: every plane required
    assert at_magnet[theta <= -2.63].min() == pytest.approx(all_planes) and at_magnet[theta > -2.6].max() == 0
    for z_s in (19.1, 20.5, 22.0, 26.0, 28.0):  # VETO, the MS2 planes: too far from the magnet
        acc, _ = st.view_acceptance(geo2022["bend"], geo2022, z_s, theta, kappa0, 2 * kappa0)
        assert acc.max() == 0, z_s


def test_forced_scatter_weights_and_draws(tmp_path):
    from na64reco.io.raw import open_raw
    from na64reco.sim.forced_scatter import ForcedScatter, plan
    from na64reco.sim.generate import simulate

    setup = load_setup("na64mu", run=1)
    fs = ForcedScatter(theta_min=1.8e-3, z_first=22010.0, z_last=26000.0)
    pl = plan(setup, fs)
    q_min = setup.beam.energy * fs.theta_min
    # W: the natural probability of one scatter above q_min in the region (MM5Y's foil and the air)
    pieces = [s for s in mp.path_elements(setup) if 22010.0 <= s.z0 and s.z1 <= 26000.0]
    want = sum(float(xs.probability_above_q(s.material, s.x_over_x0, [q_min])[0]) for s in pieces)
    assert pl.weight == pytest.approx(want, rel=1e-9)
    assert np.all((pl.z > 22010.0) & (pl.z <= 26000.001))
    # the q distribution of a piece: P(q > 2 q_min | q > q_min) from its cdf against the cross section
    k = int(np.argmax(pl.prob))
    p2 = xs.probability_above_q("air", 1.0, [q_min, 2 * q_min])
    assert 1 - np.interp(2 * q_min, pl.q[k], pl.cdf[k]) == pytest.approx(p2[1] / p2[0], rel=1e-2)  # 400-point grid
    out = tmp_path / "f.root"
    simulate("na64mu", 2000, 5, 1, out, process="beam", trigger="calibration", forced_scatter=fs)
    w = np.asarray(open_raw(out).truth()["weight"])
    assert w.size > 0 and np.allclose(w, pl.weight)


def test_single_scatter_row_from_json(tmp_path):
    """The background row of the forced kinks: rate per MOT with the count's Poisson error, a
    limit at 0 counts, and one-line errors naming the file and key."""
    import json
    import math

    from na64reco.background.estimates import single_scatter_from_json
    from na64reco.errors import NA64Error

    path = tmp_path / "single_scatter.json"
    forced = {"muons": 1000, "weight": 1e-7, "box": {"80.0": 4}, "per_mot": {"80.0": 4e-10}}
    path.write_text(json.dumps({"forced": {"2022": forced}}))
    c = single_scatter_from_json(path, "2022", 80.0)
    assert not c.upper_limit and c.n == 4e-10 and math.isclose(c.error, 2e-10)
    forced["box"]["80.0"] = 0
    path.write_text(json.dumps({"forced": {"2022": forced}}))
    assert single_scatter_from_json(path, "2022", 80.0).upper_limit
    with pytest.raises(NA64Error, match="single_scatter.json: key 'forced.2023'"):
        single_scatter_from_json(path, "2023", 80.0)
    forced["per_mot"]["80.0"] = "4e-10"
    path.write_text(json.dumps({"forced": {"2022": forced}}))
    with pytest.raises(NA64Error, match=r"single_scatter.json: key 'forced.2022.per_mot.80.0'"):
        single_scatter_from_json(path, "2022", 80.0)


def test_the_fit_cut_on_the_best_candidate_shrinks_the_kink_window(geo2022):
    """A kink 0.3 m from the magnet centre passes the search (chi2/ndf <= 10) as a kick but not
    the selection's chi2_out <= 5; at 0.1 m it passes both."""
    kappa0 = 2.6232
    theta = np.array([-2.8])
    loose, _ = st.view_acceptance(geo2022["bend"], geo2022, 24.3, theta, kappa0, 2 * kappa0)
    tight, _ = st.view_acceptance(geo2022["bend"], geo2022, 24.3, theta, kappa0, 2 * kappa0, chi2_best_max=5.0)
    near, _ = st.view_acceptance(geo2022["bend"], geo2022, 24.1, theta, kappa0, 2 * kappa0, chi2_best_max=5.0)
    assert loose[0] > 0 and tight[0] == 0 and near[0] > 0


def test_the_period_rules_enter_the_patterns():
    """2022: the y view at N-1 (3 of 4 planes), the bend view every plane; 2023: MM6X in every
    bend-view pattern.  The selection's cuts as the closed form reads them."""
    g22 = st.station_geometry(load_setup("na64mu", run=1))
    assert g22["other"]["max_missing"] == 1 and g22["bend"]["max_missing"] == 0
    assert {int(u.sum()) for u, _ in st._patterns(g22["other"])} == {3, 4}
    g23 = st.station_geometry(load_setup("na64mu", run=10001))
    k = g23["bend"]["names"].index("MM6X")
    assert g23["bend"]["required"][k] and all(used[k] for used, _ in st._patterns(g23["bend"]))
    assert sum(p for _, p in st._patterns(g23["bend"])) == pytest.approx(
        g23["bend"]["eff"][k] * st._tracked_probability(np.delete(g23["bend"]["eff"], k), 1))
    assert st.selection_cuts() == {"track_match_max": 20.0, "chi2_out_max": 5.0}


def test_helium_in_the_gap_lowers_the_closed_form():
    """The MS2 bag: the closed form with the selection's cuts names the helium gap as the only
    element reaching the box, 5-10x below the same gap in air (the setup without the bag)."""
    import dataclasses

    setup = load_setup("na64mu", run=1)
    cuts = st.selection_cuts()
    he = st.element_table(setup, **cuts)
    air_setup = dataclasses.replace(setup, readout=dataclasses.replace(setup.readout, gas_volumes=()))
    air = st.element_table(air_setup, **cuts)
    rows = [k for k, r in he["rows"].items() if r["probability"] > 0]
    assert rows == ["helium, MS2 gap"]
    assert 5.0 < air["total"] / he["total"] < 10.0


def test_the_stronger_2023_ms2_puts_the_closed_form_kinks_below_the_goal():
    """The 2023 MS2 at twice the field integral (assumed, docs/periods.md "A stronger MS2 in
    2023"): the box needs twice the kink (kappa(80) - kappa(160) scales with B L), and the tail
    above it falls ~100x, below the 2023 goal of 5e-13 per MOT; the same trackers at 1.4 T m
    give ~100x more."""
    import dataclasses

    s23 = load_setup("na64mu", run=10001)
    ms2 = s23.magnets["MS2"]
    weak = dataclasses.replace(s23, magnets={**s23.magnets, "MS2": dataclasses.replace(
        ms2, field_integral=ms2.field_integral / 2)})
    cuts = st.selection_cuts()
    strong, base = st.element_table(s23, **cuts), st.element_table(weak, **cuts)
    assert strong["kappa_box_mrad"] - strong["kappa_beam_mrad"] == pytest.approx(
        2 * (base["kappa_box_mrad"] - base["kappa_beam_mrad"]))
    assert 0 < strong["total"] < 5e-13
    assert 50 < base["total"] / strong["total"] < 200
