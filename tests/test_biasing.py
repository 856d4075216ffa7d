"""Biased sampling of rare processes: exact weights, agreement with direct counting, physics."""

from __future__ import annotations

import json

import hepunits as u
import numpy as np
import pytest
import uproot
from scipy import stats

from na64reco import background as bg
from na64reco.errors import ConfigError, NA64Error
from na64reco.geometry import load_setup
from na64reco.sim.biasing import (
    forced_exponential,
    forced_log_uniform,
    log_uniform_fraction,
    survival,
    weighted_rate,
)
from na64reco.sim.generate import simulate
from na64reco.sim.params import load_sim_params
from na64reco.sim.punchthrough import PunchThroughModel, punch_through, punch_through_probability
from na64reco.sim.tridents import rates as trident_rates


def test_forced_exponential_weight_and_shape_are_the_truncated_exponential():
    rng = np.random.default_rng(3)
    lam, lo, hi = 2.0, 1.0, 4.0
    d, w = forced_exponential(rng, lam, lo, hi, n=50_000)
    assert np.all(w == pytest.approx(np.exp(-lo / lam) - np.exp(-hi / lam), rel=1e-14))
    assert d.min() >= lo and d.max() <= hi
    trunc = stats.truncexpon(b=(hi - lo) / lam, loc=lo, scale=lam)
    assert stats.kstest(d, trunc.cdf).pvalue > 1e-3


def test_forced_exponential_estimate_agrees_with_direct_counting():
    """P(1 < d < 1.5) for d ~ Exp(2): direct count of unbiased depths vs forced depths in [1, 4]."""
    rng = np.random.default_rng(4)
    direct = rng.exponential(2.0, 200_000)
    p_direct = np.mean((direct > 1.0) & (direct < 1.5))
    d, w = forced_exponential(rng, 2.0, 1.0, 4.0, n=20_000)
    p_biased, err = weighted_rate(w, d < 1.5)
    exact = np.exp(-0.5) - np.exp(-0.75)
    sigma_direct = np.sqrt(p_direct * (1 - p_direct) / direct.size)
    assert abs(p_biased - p_direct) < 4 * np.hypot(err, sigma_direct)
    assert p_biased == pytest.approx(exact, abs=4 * err)


def test_log_uniform_forcing():
    rng = np.random.default_rng(6)
    assert log_uniform_fraction(0.02, 0.6, 0.45, 0.6) == pytest.approx(np.log(0.6 / 0.45) / np.log(30))
    v, w = forced_log_uniform(rng, 10_000, 0.02, 0.6, 0.45, 0.9)
    assert v.min() >= 0.45 and v.max() <= 0.6
    assert stats.kstest(np.log(v), stats.uniform(np.log(0.45), np.log(0.6 / 0.45)).cdf).pvalue > 1e-3
    with pytest.raises(ConfigError, match="does not overlap"):
        forced_log_uniform(rng, 3, 0.02, 0.6, 0.7, 0.9)


def _model(**kw):
    """The model of calib/setups/na64mu.yaml's numbers, ``kw`` replacing some."""
    return PunchThroughModel(**{"module_lambda": 7.5, "lambda_ratio": {"pion": 1.22, "proton": 1.0, "neutron": 1.0},
                                "visible_fraction": 0.75, "cut_charged": 2500.0, "cut_neutral": 100.0, **kw})


def test_punch_through_weights_are_exact_without_soft_interactions():
    """Cut 0: only no interaction at all passes, probability exp(-T) for every hadron."""
    m = _model(cut_charged=0.0, cut_neutral=0.0)
    for species, k in (("pion", 1), ("proton", 4)):
        w = punch_through(np.random.default_rng(1), m, species, 100 * u.GeV, k, n=50)
        assert np.all(w == pytest.approx(np.exp(-k * 7.5 / m.lambda_ratio[species]), rel=1e-12))
    assert survival(7.5, 1.0) == pytest.approx(np.exp(-7.5))


def test_biased_punch_through_agrees_with_direct_counting():
    m = _model()
    rng = np.random.default_rng(7)
    direct = punch_through(rng, m, "pion", 100 * u.GeV, 1, n=100_000, biased=False)
    p_direct, e_direct = direct.mean(), direct.std() / np.sqrt(direct.size)
    p_biased, e_biased = punch_through_probability(rng, m, "pion", 100 * u.GeV, 1, n=2000)
    assert direct.sum() > 100  # enough to count directly
    assert abs(p_biased - p_direct) < 4 * np.hypot(e_direct, e_biased)
    assert p_biased > np.exp(-7.5 / 1.22)  # soft interactions add to the no-interaction term


def test_punch_through_of_the_setup_within_a_factor_3_of_the_design_study():
    model = load_sim_params(load_setup("na64mu")).punch
    rng = np.random.default_rng(8)
    for species, ref in bg.DESIGN_PUNCHTHROUGH_100GEV.items():
        for k, r in zip((1, 2, 4), ref, strict=True):
            p, err = punch_through_probability(rng, model, species, 100 * u.GeV, k, n=300)
            assert err < 0.2 * p
            assert r / 3 < p < 3 * r, (species, k, p, r)


def test_forced_tridents_and_leading_hadrons_are_weighted(tmp_path):
    prm = load_sim_params(load_setup("na64mu"))
    out = tmp_path / "d.root"
    simulate("na64mu", 300, seed=3, run=1001, output=out, process="dimuon")
    w = uproot.open(out)["truth"]["weight"].array(library="np")
    # the spacelike and the timelike parts above bias_v_min (na64reco.sim.tridents)
    r = trident_rates(prm, load_setup("na64mu").beam.energy)
    np.testing.assert_allclose(w, r.spacelike_forced + r.timelike_forced, rtol=1e-12)
    out = tmp_path / "p.root"
    simulate("na64mu", 300, seed=3, run=1001, output=out, process="punchthrough")
    t = uproot.open(out)["truth"].arrays(["weight", "p_out"], library="np")
    # rate x v-share x neutral share x soft share (< 0.05) x ECAL survival (< 1) x 4-module punch-through
    upper = prm.leading_rate * log_uniform_fraction(prm.leading_v_min, 1.0, prm.bias_v_min, 1.0) \
        * prm.leading_neutral_fraction * 0.05 * 1e-12
    assert np.all(t["weight"] > 0) and np.all(t["weight"] < upper)
    assert np.nanmedian(t["p_out"]) < 90  # the forced energy transfer puts the muon near the box


def test_mixture_events_keep_unit_weights(tmp_path):
    out = tmp_path / "m.root"
    simulate("na64mu", 2000, seed=4, run=1001, output=out, mixture={"kdecay": 0.5})
    t = uproot.open(out)["truth"].arrays(["weight", "process"], library="np")
    assert np.any(t["process"] == 2)
    assert np.all(t["weight"] == 1.0)


def test_misreco_summary_and_sums(tmp_path):
    path = tmp_path / "misreco_2022.json"
    data = {"mot": 5e7, "box_count": 23, "per_mot": 4.6e-7, "per_mot_err": 1e-7, "extrapolated_per_mot": 2.4e-7,
            "extrapolated_err": 2.4e-7, "period": "2022"}
    path.write_text(json.dumps(data))
    c = bg.misreco_from_json(path)
    assert (c.n, c.error, c.upper_limit) == (4.6e-7, 1e-7, False)
    path.write_text(json.dumps({**data, "box_count": 0}))
    assert bg.misreco_from_json(path).n == 2.4e-7
    path.write_text(json.dumps({**data, "box_count": 0, "noise_scaled_per_mot": 1e-9,
                                "noise_scaled_1sigma": [2e-10, 7e-9]}))
    c = bg.misreco_from_json(path)
    assert (c.n, c.error) == (1e-9, 6e-9) and "noise-scaled" in c.method
    forced = {"forced_noise_per_mot": 3e-12, "forced_noise_err": 2e-12, "forced_noise_upper_90": 4e-11}
    path.write_text(json.dumps({**data, "box_count": 0, "noise_scaled_per_mot": 1e-9,
                                "noise_scaled_1sigma": [2e-10, 7e-9], **forced}))
    c = bg.misreco_from_json(path)  # the forced-noise estimate is preferred
    assert (c.n, c.error, c.upper_limit) == (3e-12, 2e-12, False) and "forced tracker noise" in c.method
    path.write_text(json.dumps({**data, "box_count": 0, **forced, "forced_noise_per_mot": 0.0}))
    c = bg.misreco_from_json(path)  # no fake in the forced samples: the tail fit
    assert (c.n, c.upper_limit) == (2.4e-7, False) and "no fake kick" in c.method
    path.write_text(json.dumps({**data, "box_count": 0, **forced, "forced_noise_err": None}))
    with pytest.raises(NA64Error, match="key 'forced_noise_err': expected a number >= 0"):
        bg.misreco_from_json(path)
    path.write_text(json.dumps({**data, "box_count": 0, "noise_scaled_per_mot": 1e-9}))
    with pytest.raises(NA64Error, match="key 'noise_scaled_1sigma': expected"):
        bg.misreco_from_json(path)
    path.write_text(json.dumps({"mot": 1}))
    with pytest.raises(NA64Error, match="misreco_2022.json: key 'box_count': missing"):
        bg.misreco_from_json(path)
    s = bg.sum_components("decays", [bg.BackgroundComponent("k", 3.0, 4.0), bg.BackgroundComponent("pi", 0.0, 0.0,
                                                                                                   True)])
    assert (s.n, s.error) == (3.0, 4.0)
    lim = bg.sum_components("x", [bg.BackgroundComponent("a", 1.0, 0, True), bg.BackgroundComponent("b", 2.0, 0,
                                                                                                     True)])
    assert lim.upper_limit and lim.n == 3.0


def test_forced_tridents_agree_with_the_unforced_rate_in_the_simulator(tmp_path):
    """Tridents with the muon in the box (true p_out < 80 GeV), per trident: weighted forced run vs direct count."""
    prm = load_sim_params(load_setup("na64mu"))
    direct_file, forced_file = tmp_path / "direct.root", tmp_path / "forced.root"
    n = 12_000
    res = simulate("na64mu", n, seed=11, run=1001, output=direct_file,
                   mixture={"dimuon": 0.99, "halo": 0.0, "pileup": 0.0}, trigger="calibration")
    n_tridents = res.process_counts["dimuon"]
    simulate("na64mu", 3000, seed=12, run=1001, output=forced_file, process="dimuon", trigger="calibration")
    d = uproot.open(direct_file)["truth"].arrays(["p_out", "process"], library="np")
    f = uproot.open(forced_file)["truth"].arrays(["p_out", "weight"], library="np")
    k = np.sum((d["p_out"] < 80) & (d["process"] == 6))
    p_direct, e_direct = k / n_tridents, np.sqrt(k) / n_tridents
    per_trident = trident_rates(prm, load_setup("na64mu").beam.energy).total
    p_forced, e_forced = weighted_rate(f["weight"] / per_trident, f["p_out"] < 80, n_sampled=3000)
    assert k > 100
    assert abs(p_forced - p_direct) < 4 * np.hypot(e_direct, e_forced)


def test_weights_flow_through_the_cutflow(tmp_path):
    from na64reco.runner import RunOptions, run_files

    path = tmp_path / "k.root"
    simulate("na64mu", 400, seed=13, run=1001, output=path, process="kdecay")
    w = uproot.open(path)["truth"]["weight"].array(library="np")
    out = run_files({"k": [str(path)]}, RunOptions("na64mu_invisible", executor="iterative"))
    first = out["k"]["cutflow"].rows()[0]
    assert first["events"] == len(w)
    assert first["sumw"] == pytest.approx(w.sum(), rel=1e-9)
    assert first["sumw_err"] == pytest.approx(np.sqrt(np.sum(w * w)), rel=1e-9)


def test_species_per_mot():
    from na64reco.sim.biasing import species_per_mot

    setup = load_setup("na64mu")
    assert species_per_mot(setup, "kdecay") == pytest.approx(1e-6 * 0.03)  # seed 004 admixture x K/pi
    assert species_per_mot(setup, "pidecay") == pytest.approx(1e-6)
    assert species_per_mot(setup, "dimuon") == 1.0
    with pytest.raises(ConfigError, match="'beam' is not a forced process"):
        species_per_mot(setup, "beam")
