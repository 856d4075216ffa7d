"""The lone muon's mis-measurement (the (0, 0) stratum) on truth (na64reco.background.lone_muon).

The true crossings are opt-in and change nothing else; the kick fit is linear (gains, chi2
reach against brute force); on a small (0, 0) sample the right-hit fits have Gaussian pulls
of the fit's own sigma (times the scattering's few per cent), every pull beyond 5 widths is
an outlier of the discrete classes, and the model (Gaussian core at each muon's measured
outlier shift) predicts the tail it can see; the box probability and its bound against
closed forms; the row of misreco_from_json with the truth-classified (0, 0) stratum.  The
strata with one extra hit source: the foreign hits a track used (handmade and on a small
(1, 0) sample, where the noise cluster is used), one wrong hit's chi2-limited pull against
brute force, the row with ``truth_strata``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from na64reco.background.lone_muon import OUTLIER_SIGMAS, p00_estimate
from na64reco.background.lone_muon_truth import (
    CORRECT_SIGMAS,
    classify,
    kick_gain,
    load_muons,
    set_reach,
    simulate_parts,
    view_geometry,
)
from na64reco.conditions import load_conditions
from na64reco.errors import NA64Error
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.selection.schema import load_selection
from na64reco.sim.generate import simulate

RUN = 10001  # 2023 period: 93 % of the muons tracked, N-1 planes, MM singles and two straw planes


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    work = tmp_path_factory.mktemp("lone")
    files = simulate_parts(RUN, 4000, 3, work, part_events=4000)
    setup = load_setup("na64mu", run=RUN)
    return load_muons(files), view_geometry(setup, load_conditions(setup, RUN))


def test_true_crossings_are_opt_in_and_draw_nothing(tmp_path):
    setup = load_setup("na64mu", run=RUN)
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    simulate(setup, 300, 5, RUN, a, process="beam", trigger="calibration")
    simulate(setup, 300, 5, RUN, b, process="beam", trigger="calibration", true_crossings=tmp_path / "b.npz")
    ea, eb = open_raw(a).events(), open_raw(b).events()
    for field in ("event", "apv", "straw", "calo"):
        assert ea[field].tolist() == eb[field].tolist(), field
    cross = np.load(tmp_path / "b.npz")
    # one crossing per plane and event for a beam muon that stays in the planes' acceptance
    per_event = np.bincount(cross["event"], minlength=int(np.max(ea["event"])) + 1)[np.asarray(ea["event"])]
    assert np.median(per_event) == len(setup.planes)
    assert set(np.unique(cross["event"])) <= set(np.asarray(ea["event"]).tolist())


def test_kick_gain_is_the_least_squares_fit_and_reach_its_chi2_bound():
    rng = np.random.default_rng(1)
    dz = np.array([-6.0, -4.0, -2.5, 3.0, 5.0, 6.5, 8.0])
    down = (dz > 0).astype(float)
    sig = np.array([0.07, 0.07, 0.07, 0.07, 0.15, 0.15, 0.07])
    used = np.array([True, False, True, True, True, True, True])
    u = rng.normal(size=7)
    a = np.stack([np.ones(7), dz, -dz * down], axis=1)[used]
    par = np.linalg.lstsq(a / sig[used, None], u[used] / sig[used], rcond=None)[0]
    sk, g = kick_gain(dz, down, sig[None, :], used[None, :])
    assert g[0] @ np.where(used, u, 0.0) == pytest.approx(par[2])
    cov = np.linalg.inv((a / sig[used, None] ** 2).T @ a)
    assert sk[0] == pytest.approx(math.sqrt(cov[2, 2]))
    geometry = {"dz": dz, "down": down, "sigma": sig, "chi2_ndf_max": 10.0}
    g2, reach = set_reach(geometry, used)
    assert g2 == pytest.approx(g[0])
    # a set on planes 4, 5 (two downstream): no direction d on it beats R_S per unit residual norm
    code = (1 << 4) | (1 << 5)
    h = a @ cov @ a.T / sig[used][None, :] ** 2
    v = (np.eye(used.sum()) - h) / sig[used][:, None]
    cols = [3, 4]  # planes 4, 5 among the used ones
    ratios = []
    for _ in range(2000):
        d = rng.normal(size=2)
        ratios.append(g2[[4, 5]] @ d / np.linalg.norm(v[:, cols] @ d))
    assert max(ratios) <= reach[code] * (1 + 1e-9)
    assert max(ratios) > 0.99 * reach[code]
    # every used plane but two: the other planes cannot fix the three parameters
    assert math.isinf(reach[sum(1 << j for j in (2, 3, 4, 5, 6))])


def test_right_hit_pulls_are_gaussian_and_outliers_explain_the_rest(sample):
    m, geometry = sample
    assert m["all_tracked"].mean() > 0.85 and len(m["p_true"]) > 3000
    pull = (m["kappa"] - m["kappa_true"]) / m["sigma_kappa"]
    # right hits: no wrong twin, every used hit within OUTLIER_SIGMAS resolutions of the truth
    off = np.abs(np.nan_to_num(m["dev"])) > OUTLIER_SIGMAS * geometry["sigma"][None, :]
    right = (m["wrong"] == 0) & ~off.any(axis=1)
    z = pull[right]
    # the fit's own sigma (hit resolutions) plus a few per cent of scattering inside MS2; the sample's
    # std scatters by 1/sqrt(2 N) (0.012 for ~3400 muons) around that
    assert abs(z.mean()) < 5 * z.std() / math.sqrt(z.size)
    assert 1.0 - 4 / math.sqrt(2 * z.size) < z.std() < 1.1
    assert stats.kstest((z - z.mean()) / z.std(), "norm").pvalue > 1e-3
    assert np.max(np.abs(z - z.mean())) < 5.5 * z.std()
    # every pull beyond 5 core widths belongs to a discrete class (wrong twin or far hit)
    big = np.abs(pull - z.mean()) > 5 * z.std()
    assert not np.any(big & right)
    # the search never tracks with more missing planes than it allows, unless an outlier fills one
    missing = np.array([bin(x).count("1") for x in (m["missing"] & ~m["far"])])
    assert np.all(missing <= int(m["max_missing"]))
    assert m["fake"].sum() == 0


def test_model_predicts_the_visible_tail(sample):
    """The Gaussian core at each muon's outlier shift predicts how many muons lie beyond 3 and
    4 core widths of the truth (the tail a small sample sees), within 4 sigma."""
    m, geometry = sample
    est = p00_estimate(m, geometry, bound_muons=500)
    core = est["core"]
    wrong, far = m["wrong"] > 0, m["far"] > 0
    bits = 1 << np.arange(m["gain"].shape[1])
    outl = ((m["wrong"] | m["far"])[:, None] & bits) > 0
    shift = np.sum(np.where(outl, m["gain"] * np.nan_to_num(m["dev"]), 0.0), axis=1)
    err = (m["kappa"] - m["kappa_true"]) / m["sigma_kappa"] - core["mean"]
    for k in (3.0, 4.0):
        model = np.sum(stats.norm.sf((k * core["width"] - shift / m["sigma_kappa"]) / core["width"])
                       + stats.norm.cdf((-k * core["width"] - shift / m["sigma_kappa"]) / core["width"]))
        observed = int(np.sum(np.abs(err) > k * core["width"]))
        assert abs(observed - model) < 4 * math.sqrt(model) + 1, (k, observed, model)
    assert (wrong | far).sum() > 0  # the sample has outliers to explain
    # the estimate: far below the bound, the bound far below what the count alone says
    assert est["log10_p_measured"] < -20
    assert est["log10_p_measured"] <= est["log10_p_bound"] < math.log10(2.3 / len(m["p_true"]))
    assert est["geometry_check_max_gain_diff"] < 1e-6


def test_box_probability_and_bound_against_closed_forms(sample):
    _, geometry = sample
    n, npl = 5000, 7
    rng = np.random.default_rng(4)
    c = 400.0  # GeV mrad
    sig = np.full(n, 0.5)  # mrad
    used_bits = (1 << npl) - 1
    g, _ = set_reach(geometry, np.ones(npl, bool))
    m = {"p_true": np.full(n, 160.0), "kappa_true": np.full(n, c / 160.0), "sigma_kappa": sig,
         "kappa": c / 160.0 + sig * rng.normal(size=n), "dk_wrong": np.zeros(n), "used": np.full(n, used_bits),
         "missing": np.zeros(n, np.int64), "wrong": np.zeros(n, np.int64), "far": np.zeros(n, np.int64),
         "fake": np.zeros(n, bool), "dev": np.zeros((n, npl)), "gain": np.tile(g, (n, 1)),
         "all_missing": np.zeros(n, np.int64), "all_tracked": np.ones(n, bool), "view_planes": np.array(
             [f"P{j}" for j in range(npl)]), "c_gev_mrad": np.array(c), "max_missing": np.array(1),
         "view_straw_pitch": np.zeros(npl), "beam_energy_gev": np.array(160.0)}
    m["p_reco"] = c / m["kappa"]
    est = p00_estimate(m, geometry, bound_muons=300)
    w = est["width_used"]
    dist = c / 80.0 - c / 160.0
    closed = stats.norm.logsf((dist - est["core"]["mean"] * 0.5) / (w * 0.5)) / math.log(10)
    assert est["log10_p_measured"] == pytest.approx(closed, abs=1e-6)
    # no outlier seen: each plane's rate is bounded by 2.3 / n; with no deviation seen the bound
    # is the rate limit times the Gaussian at no shift, i.e. the core itself plus tiny terms
    assert est["log10_p_bound"] >= est["log10_p_measured"]
    # an outlier plane whose deviations reach three times the distance to the box: without the
    # chi2 cut the bound is at least its rate limit; with it, what the chi2 lets that plane do
    m2 = dict(m, far=np.where(np.arange(n) < 50, 1, 0), dev=m["dev"].copy())
    m2["dev"][:50, 0] = np.sign(g[0]) * 1.5 * dist / abs(g[0])
    loose = p00_estimate(m2, dict(geometry, chi2_ndf_max=1e12), bound_muons=300)
    assert 10 ** loose["log10_p_bound"] >= 0.99 * loose["outlier_planes"]["rate_upper_90"][0]
    assert loose["outlier_planes"]["rate_upper_90"][0] == pytest.approx(stats.poisson.ppf(0.9, 50) / n, rel=0.1)
    tight = p00_estimate(m2, geometry, bound_muons=300)
    assert est["log10_p_bound"] <= tight["log10_p_bound"] <= loose["log10_p_bound"]


def test_misreco_row_with_the_lone_muon(tmp_path):
    from na64reco.background.estimates import misreco_from_json

    path = tmp_path / "misreco_2022.json"
    strata = [{"count": 0, "pileup": 0, "fake": 0, "per_tracked": 0.0, "upper_90_per_tracked": 3e-6},
              {"count": 2, "pileup": 0, "fake": 3, "per_tracked": 1e-8, "upper_90_per_tracked": 2e-8},
              {"count": 1, "pileup": 0, "fake": 0, "per_tracked": 0.0, "upper_90_per_tracked": 1e-6}]
    data = {"mot": 1e7, "box_count": 0, "per_mot": 0.0, "per_mot_err": 0.0, "extrapolated_per_mot": 1e-17,
            "extrapolated_err": 1e-10, "period": "2022", "after_cuts_but_box": 10000,
            "forced_noise_per_mot": 1e-11, "forced_noise_err": 6e-12, "forced_noise_upper_90": 5e-9,
            "forced_noise_empty_upper_90": 4e-9, "forced_noise": {"strata": strata},
            "forced_noise_tail_00_per_mot": 1e-15, "forced_noise_tail_00_err": 5.8e-11,
            "lone_muon_00": {"per_mot": 1e-40, "per_mot_upper": 2e-13}}
    path.write_text(json.dumps(data))
    c = misreco_from_json(path)
    assert not c.upper_limit
    assert c.n == pytest.approx(1e-11) and c.error == pytest.approx(math.hypot(6e-12, 2e-13))
    assert "classified on truth: 1e-40 per MOT" in c.method and "tail fit, a cross-check: 1e-15 +- 5.8e-11" in c.method
    kept = 1e-3
    assert f"other strata without a fake < {4e-9 - 3e-6 * kept:.2g}" in c.method
    # no fake in the other strata: the other strata's bound plus the (0, 0) bound, as a limit
    none = [dict(s, fake=0, per_tracked=0.0) for s in strata]
    path.write_text(json.dumps({**data, "forced_noise_per_mot": 0.0, "forced_noise_err": 0.0,
                                "forced_noise": {"strata": none}}))
    c = misreco_from_json(path)
    assert c.upper_limit and c.n == pytest.approx(4e-9 - 3e-6 * kept + 2e-13)
    path.write_text(json.dumps({**data, "lone_muon_00": {"per_mot": 1e-40}}))
    with pytest.raises(NA64Error, match="misreco_2022.json: key 'lone_muon_00.per_mot_upper'"):
        misreco_from_json(path)


def test_classify_names_a_setup_without_an_outgoing_station(tmp_path):
    setup = load_setup("na64e", run=1)
    out = tmp_path / "e.root"
    simulate(setup, 50, 1, 1, out, process="beam", trigger="calibration", true_crossings=tmp_path / "e.npz")
    with pytest.raises(NA64Error, match="e.root: setup 'na64e' has no outgoing bend view"):
        classify(out, tmp_path / "e.npz", setup, load_conditions(setup, 1), load_selection("na64mu_invisible"))


# ----------------------------------------------------------------------------------------
# the strata with one extra hit source: (1, 0) one noise cluster in R, (0, 1) one beam muon in N

def test_foreign_hits_on_a_handmade_sample():
    from na64reco.background.lone_muon import foreign_hits

    # plane 2 far with the muon's own hit there (replaced), plane 4 far where it was missing
    m = {"far": np.array([0, 1 << 2, 1 << 4, (1 << 2) | (1 << 4)]),
         "missing": np.array([0, 0, 1 << 4, 1 << 4])}
    f = foreign_hits(m)
    assert f["n_foreign"].tolist() == [0, 1, 1, 2]
    assert f["replacing"].tolist() == [0, 1, 0, 1]
    assert f["on_missing"].tolist() == [0, 0, 1, 1]


def test_one_wrong_hit_within_the_chi2_cut_against_brute_force():
    from na64reco.background.lone_muon import single_hit_reach

    rng = np.random.default_rng(4)
    dz = np.array([-6.0, -4.0, -2.5, 3.0, 5.0, 6.5, 8.0])
    down = (dz > 0).astype(float)
    sig = np.array([0.07, 0.07, 0.07, 0.07, 0.15, 0.15, 0.07])
    used = np.array([True, True, True, True, True, False, True])
    geometry = {"dz": dz, "down": down, "sigma": sig, "chi2_ndf_max": 10.0}
    r = single_hit_reach(geometry, used)
    assert r[5] == 0.0 and np.all(r[used] > 0)
    a = np.stack([np.ones(7), dz, -dz * down], axis=1)[used]
    aw = a / sig[used, None]
    c = math.sqrt(10.0 * (used.sum() - 3))

    pinv = np.linalg.pinv(aw)

    def fit(u):  # kick and chi2 of the weighted least-squares fit of the used planes, batched over rows of u
        y = u[:, used] / sig[used]
        par = y @ pinv.T
        return par[:, 2], np.sum((par @ aw.T - y) ** 2, axis=1)

    for j in np.flatnonzero(used):
        for r0_scale in (0.0, 1.0):
            u0 = np.where(used, rng.normal(size=7) * sig * r0_scale, 0.0)  # the right hits' deviations
            k0 = fit(u0[None, :])[0][0]
            u = np.repeat(u0[None, :], 40001, axis=0)
            u[:, j] += np.linspace(-40, 40, 40001) * sig[j]  # one wrong hit at any deviation
            k, chi2 = fit(u)
            best = float(np.max(np.abs(k - k0)[chi2 <= c * c]))
            # the right hits' residual along the wrong hit's residual direction: the 1-D z of the bound
            h = aw @ np.linalg.pinv(aw)
            v = (np.eye(used.sum()) - h)[:, list(np.flatnonzero(used)).index(j)]
            res0 = (np.eye(used.sum()) - h) @ (u0[used] / sig[used])
            z = abs(res0 @ v) / np.linalg.norm(v)
            assert best <= (c + z) * r[j] * (1 + 1e-6)
            if r0_scale == 0.0:  # right hits on the fit: the closed form is reached
                assert best >= c * r[j] * (1 - 1e-3)


@pytest.fixture(scope="module")
def sample10(tmp_path_factory):
    work = tmp_path_factory.mktemp("s10")
    files = simulate_parts(RUN, 3000, 3, work, part_events=3000, stratum=(1, 0))
    assert all("_s10_" in f for f in files)
    return load_muons(files)


def test_stratum_10_noise_cluster_used_and_bounded(sample, sample10):
    from na64reco.background.lone_muon import foreign_hits, stratum_estimate

    m00, geometry = sample
    f00, f10 = foreign_hits(m00), foreign_hits(sample10)
    # the noise cluster is used: more foreign hits than the muon's own far clusters of (0, 0)
    assert np.mean(f10["n_foreign"] > 0) > np.mean(f00["n_foreign"] > 0)
    period = {"forced_noise": {"strata": [
        {"count": 0, "pileup": 0, "weight": 0.85, "hard": 100, "tracked": 93, "upper_90_per_tracked": 4e-6},
        {"count": 1, "pileup": 0, "weight": 0.06, "hard": 100, "tracked": 91, "upper_90_per_tracked": 1.5e-6}]},
        "after_cuts_but_box": 6000, "mot": 1e6}
    est = stratum_estimate(sample10, geometry, period, (1, 0), bound_muons=300)
    h = est["single_hit"]
    # with the right hits on the fit, one wrong hit within the chi2 cut cannot reach the box here
    assert h["muons_one_hit_can_reach_box"] == 0 and 0 < h["reach_over_room_max"] < 1
    assert h["measured_one_foreign"] > 0 and h["measured_shift_over_room_max"] < 1
    assert est["log10_p_bound"] <= est["log10_p_bound_outlier_sets"]
    assert est["fakes"] == 0 and est["stratum"] == [1, 0] and est["weight"] == 0.06
    assert est["per_mot_upper"] <= est["per_mot_count_upper_90"]
    assert est["sample_size_upper_per_mot"] == pytest.approx(1.5e-6 * 6000 / 1e6)


def test_misreco_row_with_truth_strata(tmp_path):
    from na64reco.background.estimates import misreco_from_json

    path = tmp_path / "misreco_2023.json"
    strata = [{"count": 0, "pileup": 0, "fake": 0, "per_tracked": 0.0, "upper_90_per_tracked": 3e-6},
              {"count": 1, "pileup": 0, "fake": 0, "per_tracked": 0.0, "upper_90_per_tracked": 1e-6},
              {"count": 0, "pileup": 1, "fake": 0, "per_tracked": 0.0, "upper_90_per_tracked": 2e-7},
              {"count": 2, "pileup": 0, "fake": 0, "per_tracked": 0.0, "upper_90_per_tracked": 5e-9}]
    kept = 1e-3
    empty = sum(s["upper_90_per_tracked"] for s in strata) * kept
    data = {"mot": 1e7, "box_count": 0, "per_mot": 0.0, "per_mot_err": 0.0, "extrapolated_per_mot": 1e-17,
            "extrapolated_err": 1e-10, "period": "2023", "after_cuts_but_box": 10000,
            "forced_noise_per_mot": 0.0, "forced_noise_err": 0.0, "forced_noise_upper_90": empty,
            "forced_noise_empty_upper_90": empty, "forced_noise": {"strata": strata},
            "lone_muon_00": {"per_mot": 1e-30, "per_mot_upper": 2e-12}}
    path.write_text(json.dumps(data))
    before = misreco_from_json(path)
    assert before.upper_limit and before.n == pytest.approx(empty - 3e-6 * kept + 2e-12)
    data["truth_strata"] = {"1,0": {"stratum": [1, 0], "per_mot": 1e-29, "per_mot_upper": 3e-11},
                            "0,1": {"stratum": [0, 1], "per_mot": 1e-29, "per_mot_upper": 4e-12}}
    path.write_text(json.dumps(data))
    c = misreco_from_json(path)
    # (1, 0) and (0, 1): their sample-size bounds out, their truth bounds in
    assert c.upper_limit and c.n == pytest.approx(5e-9 * kept + 2e-12 + 3e-11 + 4e-12)
    assert "(1, 0) classified on truth: 1e-29, bounded at 3e-11" in c.method
    assert "(0, 1) classified on truth" in c.method
    # a truth bound not below the stratum's own sample-size bound: the stratum stays with those
    data["truth_strata"]["0,1"]["per_mot_upper"] = 3e-10
    path.write_text(json.dumps(data))
    c = misreco_from_json(path)
    assert c.n == pytest.approx((5e-9 + 2e-7) * kept + 2e-12 + 3e-11)
    assert "(0, 1) classified on truth: 1e-29, its bound 3e-10 not below its sample size's 2e-10" in c.method
    data["truth_strata"]["0,1"]["per_mot_upper"] = 4e-12
    # a truth stratum with a counted part (its Poisson error given): an estimate, the bound beside
    data["truth_strata"]["0,1"].update(per_mot=3e-12, per_mot_err=1e-12)
    path.write_text(json.dumps(data))
    c = misreco_from_json(path)
    upper = 5e-9 * kept + 2e-12 + 3e-11 + 4e-12
    assert not c.upper_limit and c.n == pytest.approx(3e-12 + 1e-29 + 1e-30) and c.error == pytest.approx(1e-12)
    assert c.details["upper_90_per_mot"] == pytest.approx(upper) and f"upper value {upper:.2g} per MOT" in c.method
    data["truth_strata"]["0,1"]["per_mot_err"] = "1e-12"
    path.write_text(json.dumps(data))
    with pytest.raises(NA64Error, match=r"misreco_2023.json: key 'truth_strata.\*.per_mot_err'"):
        misreco_from_json(path)
    data["truth_strata"]["0,1"].update(per_mot=1e-29)
    del data["truth_strata"]["0,1"]["per_mot_err"]
    # a stratum with a fake keeps its count in the sum and its bound out of the empty strata's
    strata[3].update(fake=1, per_tracked=1e-8)
    data["forced_noise_per_mot"], data["forced_noise_err"] = 1e-8 * kept, 5e-12
    path.write_text(json.dumps(data))
    c = misreco_from_json(path)
    assert not c.upper_limit and c.n == pytest.approx(1e-8 * kept + 3e-29)
    assert c.error == pytest.approx(math.hypot(5e-12, 2e-12 + 3e-11 + 4e-12))
    data["truth_strata"]["1,0"]["stratum"] = "1,0"
    path.write_text(json.dumps(data))
    with pytest.raises(NA64Error, match=r"misreco_2023.json: key 'truth_strata.1,0.stratum': expected \[m, k\]"):
        misreco_from_json(path)
    data["truth_strata"]["1,0"] = {"stratum": [1, 0], "per_mot": 1e-29}
    path.write_text(json.dumps(data))
    with pytest.raises(NA64Error, match="misreco_2023.json: key 'truth_strata.1,0.per_mot_upper'"):
        misreco_from_json(path)


@pytest.mark.parametrize(("n_own", "n_foreign", "sigma"), [(2, 2, 2.0), (3, 1, 3.0), (2, 3, 2.5), (1, 3, 1.0)])
def test_time_pass_bound_against_the_track_time_check(n_own, n_foreign, sigma):
    """The closed form of a track mixing a pile-up muon's APV hits 15 ns away with the muon's own
    (time_pass_log10) bounds the pass rate of stage.time_consistent itself on simulated hit times
    (the union over the hit left out is an upper bound, within a factor ~n of it), and is 1 when
    the outlier allowed leaves one time alone."""
    from na64reco.background.lone_muon import time_pass_log10
    from na64reco.reco.tracking.stage import time_chi2_cuts, time_consistent

    rng = np.random.default_rng(5)
    n_tracks, n = 40_000, n_own + n_foreign
    t = rng.normal(0.0, sigma, (n_tracks, n)) + np.r_[np.zeros(n_own), np.full(n_foreign, 15.0)][None, :]
    hits = np.arange(n_tracks * n).reshape(n_tracks, 1, n)
    ok = time_consistent(hits, np.full((n_tracks, 1), n), t.ravel(), np.full(t.size, sigma),
                         time_chi2_cuts(1e-4, 8), 1)[:, 0]
    bound = 10.0 ** time_pass_log10(n_own, n_foreign, 15.0, sigma)
    measured = ok.mean()
    assert measured <= bound + 3.0 * math.sqrt(bound * (1 - bound) / n_tracks) + 1e-4
    if min(n_own, n_foreign) <= 1:
        assert bound > 0.999 and measured > 0.99
    else:
        assert measured > bound / (2.0 * n) - 3.0 * math.sqrt(bound / n_tracks)


def test_two_pileup_apv_hits_fail_the_track_time_at_one_ns():
    from na64reco.background.lone_muon import time_pass_log10

    # (2/3) (15 ns / 1 ns)^2 = 150 of noncentrality left after the outlier, 18.4 the cut: < 1e-14
    assert time_pass_log10(2, 2, 15.0, 1.0) < -14.0
    assert time_pass_log10(3, 2, 15.0, 1.0) < time_pass_log10(2, 2, 15.0, 1.0)
    assert time_pass_log10(2, 2, 15.0, 0.1) < -100.0
    with pytest.raises(ValueError, match="sigma=0"):
        time_pass_log10(2, 2, 15.0, 0.0)


def test_track_time_block_counts_foreign_apv_and_straw_hits():
    from na64reco.background.lone_muon import _track_time_block

    # planes GEM1X MM5X MM6X ST1X GEM2X (ST1X: straw, out of the track time), all used
    geometry = {"planes": ["GEM1X", "MM5X", "MM6X", "ST1X", "GEM2X"], "timed": np.array([1, 1, 1, 0, 1], bool)}
    bits = 1 << np.arange(5)
    t0 = [0.0, 0.1, -0.1, 50.0, 0.0]
    m = {"far": np.array([0, 0b00001, 0b00011, 0b01001, 0b10011, 0b01000]),
         "htime": np.array([t0, t0, [20.0, 0.0, 0.0, 50.0, 0.0], t0, [0.2, 16.0, 0.0, 50.0, 0.0], t0], np.float32),
         "htime_err": np.array([[0.5, 0.5, 0.5, np.nan, 0.5]] * 6, np.float32),
         "view_planes": np.array(geometry["planes"])}
    used = np.ones((6, 5), bool)
    blk = _track_time_block(m, geometry, used, bits, 15.0, 1.0)
    assert blk["muons_by_foreign_apv_hits"] == [2, 2, 1, 1]
    assert blk["two_plus_foreign_apv"] == 2
    assert blk["two_plus_foreign_apv_own_apv_two_plus"] == 1  # 2 + 2; the 3-foreign one has 1 own APV hit
    assert blk["two_plus_foreign_apv_own_apv_le1"] == 1
    assert blk["one_foreign_apv_plus_straw"] == 1 and blk["straw_only"] == 1
    assert blk["mixed_2plus_foreign_hits"] == 2 and blk["mixed_2plus_dt_ge_half_dt_min"] == 1
    assert blk["timed_planes"] == ["GEM1X", "MM5X", "MM6X", "GEM2X"]
    assert blk["log10_pass_mixed_by_pattern"].keys() == {"2+2"} and blk["log10_pass_mixed_max"] < -14.0


def test_box_edge_comes_from_the_selection():
    """The estimates' box edge is the selection's signal box, not a copied number; a box that is
    not ``p_out < max`` is refused with the selection's name."""
    import dataclasses

    from na64reco.background.lone_muon_truth import box_p_out
    from na64reco.errors import ConfigError
    from na64reco.selection.schema import Region

    sel = load_selection("na64mu_invisible")
    assert box_p_out(sel) == pytest.approx(sel.signal_box.max) and box_p_out() == box_p_out(sel)
    moved = dataclasses.replace(sel, signal_box=dataclasses.replace(sel.signal_box, max=70.0))
    assert box_p_out(moved) == 70.0
    bad = dataclasses.replace(sel, signal_box=Region("signal_box", "e_ecal", None, 1.0))
    with pytest.raises(ConfigError, match="na64mu_invisible.*p_out < max"):
        box_p_out(bad)


def test_integrated_outliers_replace_the_adversarial_bound():
    """p00_estimate on handmade muons with far hits of a known exponential tail on two planes:
    the integrated estimate is there, the row's per_mot_upper is its 90 % upper value (the
    adversarial bound kept beside it), and the count check agrees with the counts where the
    moved box has them."""
    setup = load_setup("na64mu", run=RUN)
    geometry = view_geometry(setup, load_conditions(setup, RUN))
    rng = np.random.default_rng(9)
    n, npl, c = 40000, geometry["dz"].size, 400.0
    g, _ = set_reach(geometry, np.ones(npl, bool))
    sig = np.full(n, 0.02)  # mrad: the fit's own sigma
    dev = geometry["sigma"][None, :] * rng.normal(size=(n, npl))
    far = np.zeros((n, npl), bool)
    for j in (0, npl - 1):
        far[:, j] = rng.random(n) < 0.01
        u = OUTLIER_SIGMAS + rng.exponential(1.0, far[:, j].sum())
        dev[far[:, j], j] = geometry["sigma"][j] * u * rng.choice([-1.0, 1.0], u.size)
    core = sig * rng.normal(size=n)
    kappa_true = np.full(n, c / 160.0)
    kappa = kappa_true + core + np.sum(np.where(far, g[None, :] * dev, 0.0), axis=1)
    bits = 1 << np.arange(npl)
    m = {"p_true": np.full(n, 160.0), "kappa_true": kappa_true, "sigma_kappa": sig, "kappa": kappa,
         "dk_wrong": np.zeros(n), "used": np.full(n, bits.sum()), "missing": np.zeros(n, np.int64),
         "wrong": np.zeros(n, np.int64), "far": (far * bits).sum(1), "fake": np.zeros(n, bool),
         "dev": np.where(far, dev, 0.0), "gain": np.tile(g, (n, 1)), "all_missing": np.zeros(n, np.int64),
         "all_tracked": np.ones(n, bool), "view_planes": np.array(geometry["planes"]), "c_gev_mrad": np.array(c),
         "max_missing": np.array(1), "view_straw_pitch": np.zeros(npl), "beam_energy_gev": np.array(160.0)}
    m["p_reco"] = c / m["kappa"]
    period = {"kept_per_mot": 1e-3, "forced_noise": {"strata": [
        {"count": 0, "pileup": 0, "weight": 0.9, "tracked": 90, "hard": 100, "upper_90_per_tracked": 1e-4},
        {"count": 1, "pileup": 0, "weight": 0.1, "tracked": 90, "hard": 100}]}}
    est = p00_estimate(m, geometry, period, bound_muons=300)
    i = est["integrated"]
    assert i["chosen_shape"] == "exponential"
    assert [t["n_outliers"] for t in i["tails"]][0] == int(far[:, 0].sum())
    assert est["per_mot_upper"] == pytest.approx(min(est["per_mot_integrated_upper_90"], est["per_mot_count_upper_90"]))
    # the adversarial bound stays beside it (not an upper bound of it: it stops at twice the largest deviation)
    assert est["per_mot_outlier_bound_adversarial"] > 0 and est["per_mot_upper_from"].startswith("outliers integrated")
    assert "per_mot_outlier_bound" not in est and est["per_mot"] <= est["per_mot_integrated_upper_90"]
    rows = {r["box"]: r for r in est["count_check"]}
    assert set(rows) >= {"4 core widths", "5 core widths"}
    for r in rows.values():
        if r["counted"] >= 5:
            assert r["p_ge"] > 1e-3 and r["p_le"] > 1e-3, r
    assert sum(r["counted"] >= 5 for r in rows.values()) >= 2
# ----------------------------------------------------------------------------------------
# the pile-up muon on truth: the strata with an out-of-time beam muon in N (na64reco.background.pileup_truth)

def _near_pileup(setup, run, count=1):
    from na64reco.background.fake_kicks import near_times
    from na64reco.sim.occupancy import ForcedPileup

    return ForcedPileup.of(near_times(setup, load_conditions(setup, run)), count)


def test_pileup_crossings_draw_nothing_and_match_the_digitized_hits(tmp_path):
    """The pile-up muons' true crossings: the raw content is the same with and without them
    (no random number drawn), and a near pile-up muon's crossing lies within 5 resolutions of a
    cluster of its event on > 90 % of the APV planes' crossings, as the plane efficiency allows."""
    from na64reco.reco.tracking import reconstruct_tracks

    setup = load_setup("na64mu", run=RUN)
    forced = _near_pileup(setup, RUN)
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    simulate(setup, 400, 9, RUN, a, process="beam", trigger="calibration", forced_pileup=forced)
    simulate(setup, 400, 9, RUN, b, process="beam", trigger="calibration", forced_pileup=forced,
             true_crossings=tmp_path / "b.npz")
    ra, rb = open_raw(a), open_raw(b)
    ea, eb = ra.events(), rb.events()
    for field in ea.fields:
        assert np.array_equal(np.asarray(ak_flat(ea[field])), np.asarray(ak_flat(eb[field]))), field
    sa, sb = ra.spills(), rb.spills()
    for field in sa:
        assert np.array_equal(np.asarray(sa[field]), np.asarray(sb[field])), field
    cross = dict(np.load(tmp_path / "b.npz"))
    for key in ("pileup_event", "pileup_muon", "pileup_plane", "pileup_u", "pileup_t", "pileup_muon_event",
                "pileup_muon_time"):
        assert key in cross, key
    # exactly one muon per event in N (forced), its crossings carry its time and event
    t_mu = cross["pileup_muon_time"]
    in_n = np.zeros(t_mu.size, bool)
    for lo, hi in forced.near:
        in_n |= (t_mu >= lo) & (t_mu <= hi) & (np.abs(t_mu) > setup.beam.pileup_window / 2)
    ev_n = cross["pileup_muon_event"][in_n]
    assert np.array_equal(np.sort(ev_n), np.sort(np.asarray(ea["event"])))
    assert np.array_equal(cross["pileup_t"], t_mu[cross["pileup_muon"]])
    assert np.array_equal(cross["pileup_event"], cross["pileup_muon_event"][cross["pileup_muon"]])
    # the crossings against the clusters of the event: APV planes, muons within +-45 ns (in the APV window)
    r = reconstruct_tracks(eb, setup, load_conditions(setup, RUN), return_internals=True)
    hits = r["_hits"]
    n_setup = len(setup.planes)
    off = np.asarray(hits["plane_offsets"], np.int64)
    ev_numbers = np.asarray(eb["event"], np.int64)
    row = np.searchsorted(ev_numbers, cross["pileup_event"])
    cond = load_conditions(setup, RUN)
    pos, sig = np.asarray(hits["pos"]), np.asarray(hits["sigma"])
    matched, tried, eff = 0, 0, []
    for i in np.flatnonzero((np.abs(cross["pileup_t"]) < 40) & (np.abs(cross["pileup_t"]) > 15)):
        p = int(cross["pileup_plane"][i])
        if setup.planes[p].type == "straw":
            continue
        lo, hi = off[row[i] * n_setup + p], off[row[i] * n_setup + p + 1]
        tried += 1
        eff.append(cond.plane_efficiency(setup.planes[p]))
        matched += bool(np.any(np.abs(pos[lo:hi] - cross["pileup_u"][i]) < CORRECT_SIGMAS * sig[lo:hi]))
    assert tried > 1000
    assert matched / tried > 0.9 * float(np.mean(eff)), (matched, tried, float(np.mean(eff)))


def ak_flat(x):
    import awkward as ak

    return ak.flatten(x, axis=None) if isinstance(x, ak.Array) else x


def test_a_handmade_pileup_hit_is_classified_as_the_pileup_muons(tmp_path):
    """A used hit that sits on a pile-up muon's crossing (hand-made: the crossing file edited so that a
    kept pile-up muon crosses plane j exactly at the used hit and the muon's own crossing lies 20 mm
    away) is classified as the pile-up muon's; with the crossing file as written, it is the muon's own."""
    from na64reco.background.lone_muon_truth import SRC_PILEUP, SRC_RIGHT
    from na64reco.background.pileup_truth import PILEUP_KEPT

    setup = load_setup("na64mu", run=RUN)
    cond = load_conditions(setup, RUN)
    sel = load_selection("na64mu_invisible")
    out, cpath = tmp_path / "p.root", tmp_path / "p.npz"
    simulate(setup, 400, 12, RUN, out, process="beam", trigger="calibration", forced_pileup=_near_pileup(setup, RUN),
             true_crossings=cpath)
    m = classify(out, cpath, setup, cond, sel)
    assert m["src"].shape == m["dev"].shape and m["pu_sep"].shape[1:] == (PILEUP_KEPT, m["dev"].shape[1])
    i = int(np.flatnonzero(np.all(m["src"] == SRC_RIGHT, axis=1))[0])
    j = 1  # a micromegas plane of the view (no straw twin)
    plane = setup.plane_index(str(m["view_planes"][j])) if hasattr(setup, "plane_index") else \
        [p.name for p in setup.planes].index(str(m["view_planes"][j]))
    cross = dict(np.load(cpath))
    ev = int(np.asarray(open_raw(out).events()["event"])[np.flatnonzero(m["all_tracked"])[i]])
    own = (cross["event"] == ev) & (cross["plane"] == plane)
    u_true = float(cross["u"][own][0])
    u_hit = u_true + float(m["dev"][i, j])
    cross["u"] = np.where(own, u_true + 20.0, cross["u"])  # the muon's own crossing moved away
    mu = int(np.flatnonzero(cross["pileup_muon_event"] == ev)[0])
    cross["pileup_muon_time"] = cross["pileup_muon_time"].copy()
    cross["pileup_muon_time"][mu] = 20.0  # nearest in time: the first kept muon
    mine = (cross["pileup_muon"] == mu) & (cross["pileup_plane"] == plane)
    assert mine.any()
    cross["pileup_u"] = np.where(mine, u_hit, cross["pileup_u"])
    edited = tmp_path / "edited.npz"
    np.savez(edited, **cross)
    m2 = classify(out, edited, setup, cond, sel)
    assert m2["src"][i, j] == SRC_PILEUP and m2["src_muon"][i, j] == 0
    assert m2["dev"][i, j] == pytest.approx(-20.0 + float(m["dev"][i, j]), abs=1e-3)
    assert m2["pu_sep"][np.flatnonzero(m2["all_tracked"])[i], 0, j] == pytest.approx(u_hit - u_true - 20.0, abs=1e-3)
    others = np.ones_like(m2["src"], bool)
    others[i, j] = False
    assert np.array_equal(m2["src"][others], m["src"][others])


def _toy_geometry():
    dz = np.array([-3.5, -2.0, 2.0, 3.0, 4.0])  # the 2022 view
    return {"dz": dz, "down": (dz > 0).astype(float), "sigma": np.array([0.07, 0.07, 0.07, 0.15, 0.07]),
            "chi2_ndf_max": 10.0, "planes": ["A1", "A2", "B1", "S1", "B2"],
            "timed": np.array([True, True, True, False, True]), "track_time_prob_min": 1e-4,
            "track_time_outliers": 1}


def test_pileup_set_term_against_toys_of_the_fit():
    """The bound's term of one set S (a pile-up muon's hits on S, the muon's own right hits elsewhere):
    P(chi2 cut and kappa in the box) = Phi(-(room - g.d_S) / sigma) x P(ncx2 <= cut), the two
    independent (least squares), against toys of the weighted fit with Gaussian hits."""
    from scipy import stats

    from na64reco.background.pileup_truth import _fit_matrices

    geo = _toy_geometry()
    used = np.ones(5, bool)
    g, sig_k, v = _fit_matrices(geo, used)
    rng = np.random.default_rng(7)
    n = 400_000
    a = np.stack([np.ones(5), geo["dz"], -geo["dz"] * geo["down"]], axis=1)
    w = 1.0 / geo["sigma"] ** 2
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    proj = cov @ (a * w[:, None]).T  # parameters per hit vector
    for on, d_mm, room_sig in (([2, 4], [0.3, 0.5], 2.0), ([0, 1], [0.2, 0.1], 1.0), ([2, 3, 4], [0.4, 0.4, 0.4], 3.0)):
        d = np.zeros(5)
        d[on] = d_mm
        u = rng.normal(size=(n, 5)) * geo["sigma"] + d
        par = u @ proj.T
        chi2 = np.sum(((u - par @ a.T) / geo["sigma"]) ** 2, axis=1)
        room = float(g @ d) + room_sig * sig_k
        toy = np.mean((chi2 <= geo["chi2_ndf_max"] * 2) & (par[:, 2] >= room))
        r2 = float(np.sum((v @ d) ** 2))
        closed = stats.norm.sf((room - g @ d) / sig_k) * stats.ncx2.cdf(geo["chi2_ndf_max"] * 2, 2, r2)
        assert toy == pytest.approx(closed, rel=5 * math.sqrt(closed * (1 - closed) / n) / closed + 1e-3), on
        assert np.allclose(par[:, 2], u @ g)


def test_pileup_set_bound_and_measured_tail_on_a_toy_with_known_shifts():
    """On hand-made muons with known pile-up separations: the set bound equals the sum over the sets
    computed by hand (one pattern, 31 sets, the time factor of each), a far pile-up muon adds nothing;
    the measured tail is each muon's Gaussian at its shift; time_pass_log10_many equals the scalar."""
    from scipy import stats
    from scipy.special import log_ndtr

    from na64reco.background.lone_muon import time_pass_log10
    from na64reco.background.pileup_truth import _fit_matrices, measured_tail, pileup_set_bound, time_pass_log10_many

    geo = _toy_geometry()
    c = 500.0  # GeV mrad: kappa_true = c / p
    p = np.array([100.0, 105.0, 150.0])
    sep = np.full((3, 2, 5), np.nan, np.float32)
    sep[0, 0] = [0.0, 0.0, 1.0, 1.2, 1.4]  # downstream kinked away from the muon
    sep[1, 0] = [50.0, 50.0, 50.0, 50.0, 50.0]  # far: nothing
    sep[2, 0] = [0.1, 0.1, 0.4, 0.5, 0.6]
    tpu = np.array([[20.0, np.nan], [30.0, np.nan], [-18.0, np.nan]], np.float32)
    m = {"pu_sep": sep, "pu_time": tpu, "hard_p_true": p, "all_tracked": np.array([True, True, False]),
         "src": np.ones((2, 5), np.int8),
         "c_gev_mrad": np.array(c), "max_missing": np.array(0)}
    box, width, mean = 80.0, 1.05, 0.0
    b = pileup_set_bound(m, geo, width, mean, box, negligible=-300.0)
    g, sig_k, v = _fit_matrices(geo, np.ones(5, bool))
    total = np.zeros(3)
    for i in range(3):
        for code in range(1, 32):
            on = ((code >> np.arange(5)) & 1).astype(bool)
            d = np.where(on, sep[i, 0], 0.0).astype(float)
            lb = float(log_ndtr(-(c / box - c / p[i] - g @ d) / (width * sig_k)))
            r = math.sqrt(float(np.sum((v @ d) ** 2))) / width
            lc = float(log_ndtr(math.sqrt(20.0) / width - r))  # bounds the noncentral chi2 probability:
            assert lc >= stats.ncx2.logcdf(20.0 / width ** 2, 2, r ** 2) - 1e-12
            a_t, b_t = int((~on & geo["timed"]).sum()), int((on & geo["timed"]).sum())
            lt = float(time_pass_log10_many(a_t, b_t, np.array([abs(float(tpu[i, 0]))]), 1.0)[0]) * math.log(10.0)
            assert lt >= time_pass_log10(a_t, b_t, abs(float(tpu[i, 0])), 1.0) * math.log(10.0) - 1e-9
            total[i] += math.exp(lb + lc + lt)
    expect = math.log10(total.mean()) - math.log10(2 / 3)
    assert b["log10_union_per_tracked"] == pytest.approx(expect, abs=1e-6)
    assert total[1] < 1e-40 < total[0]  # B parallel 50 mm away: only its own track, 15 sigma from the box
    # the choice bound: no tracked muon used B's hits (no src given: all right) -> the 90 % limits of 0
    # in 2 tracked muons times the largest mean set term of each size
    assert b["choice_by_planes"][5]["set_of_max_q"] == "BBBBB"
    for a_t, b_t in ((2, 2), (1, 3), (3, 1), (0, 4), (2, 1)):
        many = time_pass_log10_many(a_t, b_t, np.array([5.0, 15.0, 40.0]), 1.0)
        exact = np.array([time_pass_log10(a_t, b_t, x, 1.0) for x in (5.0, 15.0, 40.0)])
        assert np.all(many >= exact - 1e-9) and np.all(many <= 0.0)
        assert (many[2] < -10) == (exact[2] < -10) or min(a_t, b_t) <= 1
    # the measured tail: each muon's Gaussian at its exact shift (only hits not the muon's own right ones)
    mm = {"src": np.array([[1, 1, 4, 1, 4], [1, 1, 1, 1, 1]]), "dev": np.array([[0.1, 0.0, 0.5, 0.0, 0.8]] * 2),
          "gain": np.array([g, g]), "sigma_kappa": np.array([sig_k, sig_k]), "kappa_true": c / p[:2],
          "c_gev_mrad": np.array(c)}
    shift = g[2] * 0.5 + g[4] * 0.8
    lg = measured_tail(mm, width, mean, box)
    assert lg[0] == pytest.approx(stats.norm.logsf((c / box - c / p[0] - shift) / (width * sig_k)) / math.log(10))
    assert lg[1] == pytest.approx(stats.norm.logsf((c / box - c / p[1]) / (width * sig_k)) / math.log(10))


def test_pileup_estimate_refuses_parts_without_the_pileup_truth(sample):
    from na64reco.background.pileup_truth import pileup_estimate

    m, geometry = sample
    old = {k: v for k, v in m.items() if k not in ("src", "src_muon", "pu_sep", "pu_time", "hard_p_true")}
    with pytest.raises(NA64Error, match="lack src, pu_sep.*re-simulate"):
        pileup_estimate(old, geometry, None, (0, 1))


def test_pileup_estimate_adds_the_pileup_sets_to_the_integrated_upper(monkeypatch):
    """With A's own outliers integrated (outlier_tail), the row's upper value of a pile-up stratum is
    the integrated upper PLUS B's sets x the search's choice: the pile-up muon's unseen
    configurations are not dropped (the two branches of stop 19 met here)."""
    from na64reco.background import pileup_truth as pt

    own_up, choice = -12.0, -11.0  # log10 per tracked muon
    n = 1000

    def fake_stratum(m, geometry, period, stratum, box, **kw):
        return {"log10_p_bound": -10.0, "bound_from": "x", "width_used": 1.0, "core": {"mean": 0.0},
                "log10_p_measured": -40.0, "log10_p_integrated": -15.0, "log10_p_integrated_upper": own_up,
                "tracked": n, "hard": 2 * n, "tail_shapes": {}}

    monkeypatch.setattr(pt, "own_only", lambda m, g: {"_separate": np.zeros((n, 5), bool)})
    monkeypatch.setattr(pt, "stratum_estimate", fake_stratum)
    monkeypatch.setattr(pt, "measured_tail", lambda *a, **k: np.full(n, -40.0))
    monkeypatch.setattr(pt, "pileup_set_bound", lambda *a, **k: {
        "log10_choice_per_tracked_without_time": choice, "log10_choice_per_tracked": choice - 1})
    monkeypatch.setattr(pt, "validate_edges", lambda *a, **k: [])
    m = {"src": np.ones((n, 5), np.int8), "fake": np.zeros(n, bool), "kappa": np.ones(n), "kappa_true": np.ones(n),
         "sigma_kappa": np.ones(n), "c_gev_mrad": np.array(400.0)}
    period = {"kept_per_mot": 1e-3, "forced_noise": {"strata": [
        {"count": 0, "pileup": 0, "weight": 0.9, "tracked": 90, "hard": 100},
        {"count": 0, "pileup": 1, "weight": 0.1, "tracked": 50, "hard": 100, "upper_90_per_tracked": 1.0}]}}
    est = pt.pileup_estimate(m, {"sigma": np.ones(5)}, period, (0, 1), 80.0)
    assert est["log10_p_integrated_upper_own_only"] == own_up
    assert est["log10_p_integrated_upper"] == pytest.approx(math.log10(10 ** own_up + 10 ** choice))
    scale = 0.1 * (n / (2 * n)) / (0.9 * 0.9 + 0.1 * 0.5) * 1e-3
    assert est["per_mot_integrated_upper_90"] == pytest.approx((10 ** own_up + 10 ** choice) * scale)
    assert est["per_mot_upper"] == est["per_mot_integrated_upper_90"]
    assert "pile-up muon's sets" in est["per_mot_upper_from"]


def test_the_pileup_time_of_the_track_time_bound_comes_from_the_near_times():
    """view_geometry's near_dt_min_ns is the smallest |time| of the near times N of the period
    (fake_kicks.near_times), not a copied number: 15 ns for both periods' hit-time windows."""
    from na64reco.background.fake_kicks import PERIOD_RUNS, near_times

    for run in PERIOD_RUNS.values():
        setup = load_setup("na64mu", run=run)
        cond = load_conditions(setup, run)
        near = near_times(setup, cond)
        edge = view_geometry(setup, cond)["near_dt_min_ns"]
        assert edge == min(min(abs(a), abs(b)) for a, b in near) == pytest.approx(15.0)
        assert all(not (a < 0.5 * edge and b > -0.5 * edge) for a, b in near)  # no near time inside (-edge, edge)


def test_2023_stratum_21_parts_force_two_noise_clusters_and_one_near_muon(tmp_path):
    """The 2023 m = 2 strata split in k (benchmarks/lone_muon_tail.py --strata 2,0 2,1 ...): a part of
    (2, 1) is written with exactly 2 noise clusters in the 2023 region R (7 bend planes of MS2) and
    exactly 1 beam muon in the near times N, and every hard muon of its classification carries that
    one pile-up muon's truth (its time in N, its crossings)."""
    from na64reco.background.fake_kicks import bend_region, near_times
    from na64reco.sim.forced_noise import ForcedNoise

    setup = load_setup("na64mu", run=RUN)
    cond = load_conditions(setup, RUN)
    region = bend_region(setup, cond)
    assert len(region) == 7
    simulate(setup, 100, 4, RUN, tmp_path / "a.root", process="beam", trigger="calibration",
             forced_noise=ForcedNoise.of(region, 2), forced_pileup=_near_pileup(setup, RUN, 1))
    meta = open_raw(tmp_path / "a.root").meta["simulation"]
    assert meta["forced_noise"]["count"] == 2 and meta["forced_pileup"]["count"] == 1
    m = load_muons(simulate_parts(RUN, 300, 4, tmp_path, part_events=300, stratum=(2, 1)))
    t = np.asarray(m["pu_time"], float)
    assert t.shape[0] == m["all_tracked"].size > 250
    in_n = np.zeros(t.shape, bool)
    for lo, hi in near_times(setup, cond):
        in_n |= (t >= lo) & (t <= hi)
    assert np.all(in_n.sum(axis=1) == 1)
    sep = np.asarray(m["pu_sep"], float)
    assert np.mean(np.isfinite(sep[in_n]).any(axis=1)) > 0.95  # the pile-up muon's crossings of the view
    assert 0 < int(np.sum(m["all_tracked"])) < t.shape[0]  # the pile-up veto takes some (2023 (2, 1): ~26 % tracked)


def test_lone_muon_tail_refuses_a_stratum_without_its_weight(tmp_path):
    """benchmarks/lone_muon_tail.py: a stratum whose m has only the nominal pile-up ('m,n') in the
    period's forced strata is refused before any simulation, naming the file, key and stratum."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lone_muon_tail.py"
    spec = importlib.util.spec_from_file_location("lone_muon_tail", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"count": 0, "pileup": 0}, {"count": 0, "pileup": 1}, {"count": 2, "pileup": None}]
    data = {"forced_noise": {"strata": rows}}
    mod.check_weights(tmp_path / "m.json", data, [(0, 0), (0, 1)])
    with pytest.raises(SystemExit, match=r"m.json: key 'forced_noise.strata': no stratum \(2, 0\).*k \['n'\]"):
        mod.check_weights(tmp_path / "m.json", data, [(0, 0), (2, 0)])
    with pytest.raises(SystemExit, match=r"\(3, 1\).*m = 3 has k none"):
        mod.check_weights(tmp_path / "m.json", data, [(3, 1)])
    mod.check_weights(tmp_path / "m.json", {}, [(3, 1)])  # no forced strata (no --campaign file): nothing to check
    with pytest.raises(SystemExit, match="nominal-pile-up stratum 'm,n' is not classified"):
        mod.main(["--strata", "3,n", "--campaign", str(tmp_path)])


def test_per_mot_falls_back_to_the_count_when_the_sample_has_fakes():
    """A stratum whose classified sample has counted fakes: its upper value is the count's 90 % CL
    limit (model-free) and its central value at least the counted rate, not a model bound below
    them; without fakes the smaller of the two bounds stands."""
    from na64reco.background.lone_muon import _per_mot
    from na64reco.stats.limits import poisson_upper_limit

    strata = [{"count": 0, "pileup": 0, "weight": 0.9, "hard": 1000, "tracked": 900, "upper_90_per_tracked": 1e-3},
              {"count": 2, "pileup": 3, "weight": 1e-6, "hard": 1000, "tracked": 10, "upper_90_per_tracked": 1e-7}]
    period = {"forced_noise": {"strata": strata}, "kept_per_mot": 1e-3}
    est = {"tracked": 20, "hard": 1000, "fakes": 1, "log10_p_measured": -3.0, "log10_p_bound": -9.0,
           "log10_p_integrated": -12.0, "log10_p_integrated_upper": -10.0, "tail_shapes": {}}
    den = 0.9 * 0.9 + 1e-6 * 0.01
    out = _per_mot(est, period, (2, 3))
    assert out["per_mot_counted"] == pytest.approx(1e-6 * 1 / 1000 / den * 1e-3)
    assert out["per_mot"] == out["per_mot_counted"] and out["per_mot_err"] == pytest.approx(out["per_mot_counted"])
    assert out["per_mot_upper"] == pytest.approx(1e-6 * poisson_upper_limit(1, cl=0.9, method="classical") / 1000
                                                 / den * 1e-3)
    assert out["per_mot_model_upper"] < out["per_mot_upper"] and out["per_mot_upper_from"].startswith("count (1 ")
    quiet = _per_mot({**est, "fakes": 0}, period, (2, 3))
    assert "per_mot_counted" not in quiet and quiet["per_mot_upper"] == pytest.approx(10.0 ** -10 * 20 / 1000 * 1e-6
                                                                                     / den * 1e-3)
