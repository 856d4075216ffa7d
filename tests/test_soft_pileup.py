"""Forced soft pile-up muons (na64reco.sim.forced_soft) and the direct count of the (0, 1)
pile-up-set term (na64reco.background.soft_pileup): the forcing's weight against its closed form and the
natural transport's losses, the forced losses' spectrum and the untouched ones, nothing drawn
without forcing, the metadata and truth of a forced run, B's momentum from its crossings, and
the combination of the direct count with the hard-B set bound on synthetic figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.sim.forced_soft import ForcedSoft, SoftLosses, chosen_near
from na64reco.sim.params import load_sim_params

RUN = 1  # 2022


@pytest.fixture(scope="module")
def params():
    return load_sim_params(load_setup("na64mu", run=RUN))


def _natural(rng, n, params):
    """The natural ECAL losses ``(k, v, depth)`` of ``n`` beam-energy muons."""
    return params.ecal_losses.sample(rng, np.full(n, params.beam_energy), 0.0, 1.0)


def _mean_number(params, v_lo, v_hi=1.0):
    return params.ecal_losses.table(params.beam_energy).mean_number(v_lo, v_hi)


def test_weight_closed_form_against_the_natural_losses(params):
    """P_R = 1 - exp(-n_R) with n_R = N(v_min) - N(v_max) (closed form) against the fraction of
    muons of the natural loss process with a loss in [v_min, v_max) (binomial, 5 sigma)."""
    soft = ForcedSoft.of(0.25)
    n_r = _mean_number(params, 0.25)
    assert soft.expected_losses(params) == pytest.approx(n_r)
    assert soft.probability(params) == pytest.approx(1 - math.exp(-n_r))
    assert 1e-3 < soft.probability(params) < 1e-2  # "~1e-3 of the beam muons" (docs/periods.md)
    n = 3_000_000
    k, v, _ = _natural(np.random.default_rng(1), n, params)
    frac = np.unique(k[v >= 0.25]).size / n
    p = soft.probability(params)
    assert frac == pytest.approx(p, abs=5 * math.sqrt(p / n))
    band = ForcedSoft.of(0.25, 0.5)
    frac_band = np.unique(k[(v >= 0.25) & (v < 0.5)]).size / n
    assert frac_band == pytest.approx(band.probability(params), abs=5 * math.sqrt(band.probability(params) / n))
    mom = ForcedSoft.from_momenta(40.0, 120.0, 160.0)
    assert (mom.v_min, mom.v_max) == pytest.approx((0.25, 0.75))


def test_forced_losses_follow_the_natural_spectrum_and_keep_the_others(params):
    """Every chosen muon gets >= 1 loss in the range, their v distributed as the natural losses in
    the range (quantiles, KS); the losses outside the range keep their natural mean number; the
    muons not chosen keep exactly their natural losses."""
    from scipy import stats

    rng = np.random.default_rng(2)
    n = 200_000
    k, v, d = _natural(rng, n, params)
    chosen = np.zeros(n, bool)
    chosen[: n // 2] = True
    hook = SoftLosses(ForcedSoft.of(0.25), params, chosen)
    p = np.full(n, params.beam_energy)
    k2, v2, d2, e2 = hook.losses(rng, np.arange(n), k, v, d, p[k], p)
    assert k2.size == v2.size == d2.size == e2.size and np.all((d2 >= 0) & (d2 <= 1)) and np.all(e2 == p[0])
    inside = (v2 >= 0.25) & (v2 < 1.0)
    per_muon = np.bincount(k2[inside], minlength=n)
    assert np.all(per_muon[: n // 2] >= 1)
    # the not-chosen muons: exactly their natural losses
    mine = k2 >= n // 2
    orig = k >= n // 2
    assert np.array_equal(np.sort(v2[mine]), np.sort(v[orig]))
    # outside the range: the natural mean number per muon (Poisson, 5 sigma)
    expect_out = _mean_number(params, params.radiative_v_min, 0.25)
    n_out = int(np.sum(~inside & (k2 < n // 2)))
    assert n_out == pytest.approx(expect_out * n / 2, abs=5 * math.sqrt(expect_out * n / 2))
    # the forced v against the natural v in the range
    nat = _natural(np.random.default_rng(3), 3_000_000, params)[1]
    nat = nat[nat >= 0.25]
    forced = v2[inside & (k2 < n // 2)]
    assert stats.ks_2samp(forced, nat).pvalue > 1e-3
    # more than one loss in the range: zero-truncated Poisson, P(>= 2 | >= 1) ~ n_R / 2
    n_r = hook.n_r
    two = np.mean(per_muon[: n // 2] >= 2)
    assert two == pytest.approx(n_r / 2, abs=5 * math.sqrt(n_r / 2 / (n // 2)) + 1e-4)
    assert np.allclose(hook.v_forced[: n // 2] > 0, True) and not np.any(hook.v_forced[n // 2:])


def test_no_random_number_without_a_chosen_muon(params):
    """The hook draws only for chosen muons: with none chosen the losses and the stream are the same."""
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    k, v, d = _natural(rng_a, 1000, params)
    k_b, v_b, d_b = _natural(rng_b, 1000, params)
    p = np.full(1000, params.beam_energy)
    k2, v2, d2, _ = SoftLosses(ForcedSoft.of(0.3), params, np.zeros(1000, bool)).losses(
        rng_b, np.arange(1000), k_b, v_b, d_b, p[k_b], p)
    assert np.array_equal(k, k2) and np.array_equal(v, v2) and np.array_equal(d, d2)
    assert rng_a.random() == rng_b.random()


def test_bad_forcing_is_named(params, tmp_path):
    from na64reco.sim.generate import simulate

    with pytest.raises(ConfigError, match="0 < v_min < v_max <= 1"):
        ForcedSoft.of(0.5, 0.4)
    with pytest.raises(ConfigError, match="radiative_v_min"):
        ForcedSoft.of(1e-4).probability(params)
    with pytest.raises(ConfigError, match="p_low < p_high < beam energy 160"):
        ForcedSoft.from_momenta(40.0, 170.0, 160.0)
    with pytest.raises(ConfigError, match="needs forced pile-up muons"):
        simulate("na64mu", 10, 1, RUN, tmp_path / "x.root", process="beam", forced_soft=ForcedSoft.of(0.25))


def test_a_forced_run_records_its_weight_and_its_soft_muons(tmp_path, params):
    """The metadata carries the range and P_R; every near muon was forced (it crosses the ECAL),
    its momentum behind the trackers below (1 - v_min) of the beam's largest, the far ones not
    forced and hard but for their own rare losses."""
    from na64reco.background.fake_kicks import near_times
    from na64reco.conditions import load_conditions
    from na64reco.io.raw import open_raw
    from na64reco.sim.forced_soft import soft_weight
    from na64reco.sim.generate import simulate
    from na64reco.sim.occupancy import ForcedPileup, near_segments

    setup = load_setup("na64mu", run=RUN)
    forced = ForcedPileup.of(near_times(setup, load_conditions(setup, RUN)), 1)
    soft = ForcedSoft.of(0.25)
    simulate(setup, 400, 3, RUN, tmp_path / "s.root", process="beam", trigger="calibration", forced_pileup=forced,
             forced_soft=soft, true_crossings=tmp_path / "s.npz")
    meta = open_raw(tmp_path / "s.root").meta["simulation"]["forced_soft"]
    assert meta["probability"] == pytest.approx(soft.probability(params))
    assert (meta["v_min"], meta["v_max"]) == (0.25, 1.0)
    c = dict(np.load(tmp_path / "s.npz"))
    near = c["pileup_muon_near"]
    assert np.array_equal(near, chosen_near(c["pileup_muon_time"], near_segments(setup, forced)))
    assert near.sum() >= 390  # one per written event
    w = soft_weight(c, meta)
    assert w["forced"] == w["near_muons"] and w["soft_missed"] == 0
    assert np.all(c["pileup_muon_v_forced"][near] >= 0.25) and not np.any(c["pileup_muon_v_forced"][~near])
    p = c["pileup_muon_p"]
    assert np.all(np.nan_to_num(p[near], nan=0.0) < 0.75 * 175.0)
    assert np.nanmedian(p[~near]) > 150.0


def test_pileup_momentum_from_its_crossings():
    """B's momentum from its true crossings minus the muon's (the kick fit is linear): exact on
    straight-line tracks with a thin kick; fewer than 4 planes -> NaN."""
    from na64reco.background.soft_pileup import kick_momentum

    dz = np.array([-3.5, -2.0, 2.0, 3.0, 4.0])
    geo = {"dz": dz, "down": (dz > 0).astype(float), "sigma": np.array([0.07, 0.07, 0.07, 0.15, 0.07])}
    c = 500.0  # GeV mrad

    def track(x0, tx, p):  # mm, mrad; kappa in mrad bends downstream (rows [1, dz, -dz down])
        return x0 + tx * dz - c / p * dz * geo["down"]

    p_a = np.array([160.0, 158.0])
    u_a = np.stack([track(0.0, 0.1, p) for p in p_a])
    u_b = np.stack([track(3.0, -0.2, 80.0), track(-1.0, 0.05, 140.0)])
    sep = np.full((2, 3, 5), np.nan)
    sep[:, 0] = u_b - u_a
    sep[1, 1, :3] = 1.0  # three planes only
    m = {"pu_sep": sep.astype(np.float32), "hard_p_true": p_a, "c_gev_mrad": np.array(c)}
    p = kick_momentum(m, geo)
    assert p[:, 0] == pytest.approx([80.0, 140.0], rel=1e-4)
    assert np.isnan(p[1, 1]) and np.isnan(p[0, 2])


def test_choice_and_direct_count_on_a_synthetic_sample():
    """The choice table and the direct term on hand-made muons: per hard muon P_R x the 90 %
    upper of 0 fakes (2.30) / hard muons x the forced fraction, per tracked muon of the natural
    sample x its hard / tracked."""
    from na64reco.background.soft_pileup import b_planes, choice_table, soft_summary, soft_term
    from na64reco.stats.limits import poisson_upper_limit

    n_hard, n_tr = 10, 4
    tracked = np.zeros(n_hard, bool)
    tracked[:n_tr] = True
    src = np.ones((n_tr, 5), np.int8)
    src[0, 4] = 4  # B's hit on one plane, from kept muon 1 (the forced one)
    src[1, 2:] = 4  # a far pile-up muon (kept 0) on three planes
    src_muon = np.full((n_tr, 5), -1, np.int8)
    src_muon[0, 4] = 1
    src_muon[1, 2:] = 0
    near = np.zeros((n_hard, 3), bool)
    near[:, 1] = True
    pu_p = np.full((n_hard, 3), 150.0, np.float32)
    pu_p[:, 1] = [30.0, 90.0, 110.0, 50.0] + [60.0] * 6
    m = {"all_tracked": tracked, "src": src, "src_muon": src_muon, "pu_near": near, "pu_p": pu_p,
         "fake": np.zeros(n_tr, bool), "kappa": np.full(n_tr, 3.0), "c_gev_mrad": np.array(500.0),
         "p_reco": np.full(n_tr, 160.0), "p_region": 2e-3, "near_muons": 10, "near_forced": 9, "events": 10,
         "v_min": 0.25, "v_max": 1.0}
    nb = b_planes(m, np.full(n_hard, 1))
    assert nb.tolist() == [1, 0, 0, 0]
    assert b_planes(m).tolist() == [1, 3, 0, 0]
    s = soft_summary(m, p_bins=(0.0, 40.0, 100.0, 130.0))
    assert s["choice"]["p_B 0-40 GeV"]["using_any"] == 1 and s["choice"]["p_B 0-40 GeV"]["tracked"] == 1
    assert s["choice"]["p_B 40-100 GeV"]["tracked"] == 2 and s["choice"]["all soft"]["using_any"] == 1
    up = poisson_upper_limit(0, cl=0.9, method="classical")
    assert s["per_hard_natural_upper_90"] == pytest.approx(2e-3 * 0.9 * up / n_hard)
    assert soft_term(s, 50, 200) == pytest.approx(math.log10(2e-3 * 0.9 * up / n_hard * 200 / 50))
    t = choice_table(np.array([0, 2, 2, 5]), {"x": np.ones(4, bool)}, 5)["x"]
    assert t["by_planes"]["2"]["using"] == 2 and t["using_any"] == 3 and t["rate_any"] == 0.75
    # box edges: kappa 3 mrad = 167 GeV: below no edge up to 160
    assert all(e["count"] == 0 for e in s["edges"])


def test_pileup_estimate_takes_the_direct_soft_count(monkeypatch):
    """With a soft sample, B's set term = the direct soft count (per tracked muon) + the set bound
    over the natural muons whose B is hard; the old choice bound over all B stays a cross-check;
    the stratum's integrated upper = A's own + that term, per MOT with the stratum's scale."""
    from na64reco.background import pileup_truth as pt
    from na64reco.background import soft_pileup as sp

    own_up, choice_all, choice_hard = -12.0, -11.0, -13.0
    n = 1000

    def fake_stratum(m, geometry, period, stratum, box, **kw):
        return {"log10_p_bound": -10.0, "bound_from": "x", "width_used": 1.0, "core": {"mean": 0.0},
                "log10_p_measured": -40.0, "log10_p_integrated": -15.0, "log10_p_integrated_upper": own_up,
                "tracked": n, "hard": 2 * n, "tail_shapes": {}}

    def fake_bound(m, *a, **k):
        v = choice_hard if m.get("_hard_only") else choice_all
        return {"log10_choice_per_tracked_without_time": v, "log10_choice_per_tracked": v - 1, "tracked": n,
                "hard": 2 * n, "choice_by_planes": {}, "log10_mean_by_set_top": {}}

    monkeypatch.setattr(pt, "own_only", lambda m, g: {"_separate": np.zeros((n, 5), bool)})
    monkeypatch.setattr(pt, "stratum_estimate", fake_stratum)
    monkeypatch.setattr(pt, "measured_tail", lambda *a, **k: np.full(n, -40.0))
    monkeypatch.setattr(pt, "pileup_set_bound", fake_bound)
    monkeypatch.setattr(pt, "validate_edges", lambda *a, **k: [])
    monkeypatch.setattr(sp, "hard_b_only", lambda m, g: (m | {"_hard_only": True}, {"split_gev": 100.0}))
    m = {"src": np.ones((n, 5), np.int8), "fake": np.zeros(n, bool), "kappa": np.ones(n), "kappa_true": np.ones(n),
         "sigma_kappa": np.ones(n), "c_gev_mrad": np.array(400.0)}
    period = {"kept_per_mot": 1e-3, "forced_noise": {"strata": [
        {"count": 0, "pileup": 0, "weight": 0.9, "tracked": 90, "hard": 100},
        {"count": 0, "pileup": 1, "weight": 0.1, "tracked": 50, "hard": 100, "upper_90_per_tracked": 1.0}]}}
    # per hard muon of the soft sample x P_R: 2 fakes counted, their 90 % upper
    soft = {"per_hard_natural_upper_90": 1e-10, "per_hard_natural": 4e-11, "fakes": 2}
    est = pt.pileup_estimate(m, {"sigma": np.ones(5)}, period, (0, 1), 80.0, soft=soft)
    direct = 1e-10 * (2 * n) / n  # per tracked muon of the natural sample
    term = direct + 10 ** choice_hard
    assert est["log10_p_integrated_upper"] == pytest.approx(math.log10(10 ** own_up + term))
    blk = est["pileup_truth"]["soft"]
    assert blk["log10_choice_bound_per_tracked_all_b"] == choice_all
    scale = 0.1 * (n / (2 * n)) / (0.9 * 0.9 + 0.1 * 0.5) * 1e-3
    assert blk["per_mot"]["soft_b_direct_upper_90"] == pytest.approx(direct * scale)
    assert blk["per_mot"]["hard_b_sets_choice"] == pytest.approx(10 ** choice_hard * scale)
    assert blk["per_mot"]["old_choice_bound_all_b"] == pytest.approx(10 ** choice_all * scale)
    assert est["per_mot_integrated_upper_90"] == pytest.approx((10 ** own_up + term) * scale)
    central = 4e-11 * 2 * scale  # the counted soft fakes: the stratum's central value gets them
    assert blk["per_mot"]["soft_b_direct"] == pytest.approx(central)
    assert blk["per_mot"]["soft_b_direct_err"] == pytest.approx(central / math.sqrt(2))
    assert est["per_mot"] == pytest.approx(est["per_mot_without_soft_count"] + central)
    assert est["per_mot_without_soft_count"] == pytest.approx(1e-15 * scale)
    assert "forced soft" in est["bound_from"]



def test_pileup_estimate_reads_the_soft_figures_from_the_period(monkeypatch):
    """Without ``soft=``, the figures written into the period's JSON (``soft_pileup["0,1"]``) are
    used: the same estimate as with them given."""
    from na64reco.background import pileup_truth as pt

    n = 100
    monkeypatch.setattr(pt, "own_only", lambda m, g: {"_separate": np.zeros((n, 5), bool)})
    monkeypatch.setattr(pt, "stratum_estimate", lambda *a, **k: {
        "log10_p_bound": -10.0, "bound_from": "x", "width_used": 1.0, "core": {"mean": 0.0},
        "log10_p_measured": -40.0, "tracked": n, "hard": 2 * n, "tail_shapes": {}})
    monkeypatch.setattr(pt, "measured_tail", lambda *a, **k: np.full(n, -40.0))
    monkeypatch.setattr(pt, "pileup_set_bound", lambda *a, **k: {
        "log10_choice_per_tracked_without_time": -11.0, "log10_choice_per_tracked": -12.0, "tracked": n,
        "hard": 2 * n, "choice_by_planes": {}, "log10_mean_by_set_top": {}})
    monkeypatch.setattr(pt, "validate_edges", lambda *a, **k: [])
    from na64reco.background import soft_pileup as sp

    monkeypatch.setattr(sp, "hard_b_only", lambda m, g: (m, {"split_gev": 100.0}))
    m = {"src": np.ones((n, 5), np.int8), "fake": np.zeros(n, bool), "kappa": np.ones(n), "kappa_true": np.ones(n),
         "sigma_kappa": np.ones(n), "c_gev_mrad": np.array(400.0)}
    soft = {"per_hard_natural_upper_90": 1e-9}
    given = pt.pileup_estimate(m, {"sigma": np.ones(5)}, None, (0, 1), 80.0, soft=soft)
    read = pt.pileup_estimate(m, {"sigma": np.ones(5)}, {"soft_pileup": {"0,1": soft}}, (0, 1), 80.0)
    none = pt.pileup_estimate(m, {"sigma": np.ones(5)}, None, (0, 1), 80.0)
    assert read["log10_p_bound"] == given["log10_p_bound"] > none["log10_p_bound"]
    assert "soft" in read["pileup_truth"] and "soft" not in none["pileup_truth"]


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory):
    """A small forced-soft (0, 1) run of 2022 with the crossings (300 calibration-triggered muons)."""
    from na64reco.background.fake_kicks import near_times
    from na64reco.conditions import load_conditions
    from na64reco.sim.generate import simulate
    from na64reco.sim.occupancy import ForcedPileup

    d = tmp_path_factory.mktemp("softecal")
    setup = load_setup("na64mu", run=RUN)
    cond = load_conditions(setup, RUN)
    forced = ForcedPileup.of(near_times(setup, cond), 1)
    simulate(setup, 300, 4, RUN, d / "s.root", process="beam", trigger="calibration", forced_pileup=forced,
             forced_soft=ForcedSoft.of(0.25), true_crossings=d / "s.npz")
    return setup, cond, forced, d


def test_the_forced_soft_muon_deposits_its_loss_and_mip_in_the_ecal(monkeypatch, params):
    """Per forced muon (truth): its ECAL deposit (``muon_e_ecal``) is what it lost in the ECAL,
    p before minus p behind (its forced loss(es) v x p, any natural ones, and the MIP); without the
    energy resolution never more (the spread's cells below 50 MeV and the leakage out of the
    cells lost), for most within 3 %; with it, the mean ratio is 1 within the resolution."""
    from na64reco.background.fake_kicks import near_times
    from na64reco.conditions import load_conditions
    from na64reco.sim import interactions, occupancy
    from na64reco.sim.occupancy import ForcedPileup, beam_pileup_hits

    setup = load_setup("na64mu", run=RUN)
    forced = ForcedPileup.of(near_times(setup, load_conditions(setup, RUN)), 1)
    p0 = []
    sample = occupancy.sample_beam

    def keep_p0(*a, **k):
        tr = sample(*a, **k)
        p0.append(tr.p.copy())
        return tr

    monkeypatch.setattr(occupancy, "sample_beam", keep_p0)

    def ratios(seed):
        p0.clear()
        _, t = beam_pileup_hits(np.random.default_rng(seed), setup, params, 400, forced, muons=True,
                                soft=ForcedSoft.of(0.25))
        near = t["muon_near"] & np.isfinite(t["muon_p"])
        assert near.sum() > 350 and np.all(t["muon_v_forced"][near] >= 0.25)
        assert not np.any(t["muon_e_ecal"][~t["muon_near"]])  # the others' deposits are not kept
        loss = p0[0][near] / 1000.0 - t["muon_p"][near]  # MeV -> GeV
        assert np.all(loss > 0.25 * 140.0)
        ev, det, _, e, dt = t["deposits"]
        assert np.isin(ev, t["muon_event"][t["muon_near"]]).all()
        times = dict(zip(t["muon_event"][t["muon_near"]], t["muon_time"][t["muon_near"]], strict=True))
        assert np.allclose(dt, [times[x] for x in ev])  # at t_B
        assert e.sum() / 1000.0 >= t["muon_e_ecal"].sum()  # the counters, VETO, VHCAL beside the ECAL
        return t["muon_e_ecal"][near] / loss

    monkeypatch.setattr(interactions, "smear_energy", lambda rng, e, *a: np.asarray(e, float))
    r = ratios(8)
    assert np.all(r <= 1.0 + 1e-9)
    assert np.mean(r > 0.97) > 0.9
    monkeypatch.undo()
    monkeypatch.setattr(occupancy, "sample_beam", keep_p0)
    r = ratios(8)
    assert np.mean(r) == pytest.approx(1.0, abs=0.02)
    assert 0.005 < np.std(r) < 0.1  # the ECAL's resolution at 40-140 GeV and the leakage


def test_the_soft_muons_pulse_is_in_the_ecal_waveform_at_its_time(soft_run):
    """In the written events, the ECAL cell with the largest reconstructed pulse is B's shower's:
    its time is t_B after the nominal in-time pulse (within a few ns: the jitter and the fit) and
    the event's ECAL digits sum to B's true deposit plus the in-time muon's MIP; the ECAL energy
    of the reconstruction then fails the MIP cut of the selection (B in the timing window)."""
    from na64reco.io.raw import open_raw
    from na64reco.reco.calo import digits_of_events, reconstruct_calo
    from na64reco.reco.waveform import waveform_config

    setup, cond, _, d = soft_run
    events = open_raw(d / "s.root").events()
    c = dict(np.load(d / "s.npz"))
    near = c["pileup_muon_near"]
    number = np.asarray(events["event"], np.int64)
    row = np.searchsorted(number, c["pileup_muon_event"][near])
    t_b, e_b = c["pileup_muon_time"][near], c["pileup_muon_e_ecal"][near]
    assert np.array_equal(number[row], c["pileup_muon_event"][near]) and row.size > 250
    digits, ev, _ = digits_of_events(events, setup, cond)
    ecal = digits.det == setup.detector("ECAL").id
    above = ecal & np.isfinite(digits.energy)
    e_sum = np.bincount(ev[above], weights=digits.energy[above], minlength=number.size) / 1000.0
    assert np.median(e_sum[row] / (e_b + 0.4)) == pytest.approx(1.0, abs=0.05)
    big = np.full(number.size, -1)
    for i in np.flatnonzero(above):  # the largest ECAL digit of each event
        if big[ev[i]] < 0 or digits.energy[i] > digits.energy[big[ev[i]]]:
            big[ev[i]] = i
    dt = digits.time[big[row]] - waveform_config(setup).nominal_time - t_b
    assert np.median(np.abs(dt)) < 3.0
    calo = reconstruct_calo(events, setup, cond)
    in_window = np.abs(t_b) < 20.0
    assert np.all(np.asarray(calo["ecal_energy"])[row[in_window]] > 30.0)


def test_the_soft_deposits_change_the_calorimeters_only(soft_run, monkeypatch):
    """The same run with the forced muons' deposits dropped: the trackers, the crossings and the
    truth are the same bytes (the digitisation is redone from the generator state of the first),
    the ECAL digits differ."""
    import awkward as ak

    from na64reco.io.raw import TRUTH_BRANCHES, open_raw
    from na64reco.sim import occupancy
    from na64reco.sim.generate import simulate

    setup, _, forced, d = soft_run
    real = occupancy.soft_deposits

    def none(*a):
        out = real(*a)
        out["deposits"] = tuple(x[:0] for x in out["deposits"])
        return out

    monkeypatch.setattr(occupancy, "soft_deposits", none)
    simulate(setup, 300, 4, RUN, d / "n.root", process="beam", trigger="calibration", forced_pileup=forced,
             forced_soft=ForcedSoft.of(0.25), true_crossings=d / "n.npz")
    a, b = open_raw(d / "s.root"), open_raw(d / "n.root")
    ea, eb = a.events(), b.events()
    for group in ("apv", "straw"):
        for f in ea[group].fields:
            assert ak.all(ea[group][f] == eb[group][f])
    ca, cb = dict(np.load(d / "s.npz")), dict(np.load(d / "n.npz"))
    assert sorted(ca) == sorted(cb) and all(ca[k].tobytes() == cb[k].tobytes() for k in ca)
    ta, tb = a.truth(), b.truth()
    assert all(np.asarray(ta[k]).tobytes() == np.asarray(tb[k]).tobytes() for k in TRUTH_BRANCHES)
    assert ak.sum(ak.num(ea["calo"])) > 2 * ak.sum(ak.num(eb["calo"]))


def test_the_fakes_are_counted_with_the_calorimeter_cuts():
    """Synthetic: of 3 tracking fakes, one fails ecal_mip, one only S4/Smu (the trigger's, not
    counted), one passes all: 2 fakes counted, 3 with the tracking cuts only, the failing cuts
    named per fake; parts without the calorimeter fields count as before."""
    from na64reco.background.soft_pileup import CALO_CUTS, calo_passes, soft_summary

    n_hard, n_tr = 6, 4
    tracked = np.zeros(n_hard, bool)
    tracked[:n_tr] = True
    near = np.zeros((n_hard, 3), bool)
    near[:, 0] = True
    all_bits = (1 << len(CALO_CUTS)) - 1
    no_ecal = all_bits & ~(1 << CALO_CUTS.index("ecal_mip"))
    no_s4 = all_bits & ~(1 << CALO_CUTS.index("s4_fired")) & ~(1 << CALO_CUTS.index("smu_fired"))
    m = {"all_tracked": tracked, "src": np.ones((n_tr, 5), np.int8), "src_muon": np.full((n_tr, 5), -1, np.int8),
         "pu_near": near, "pu_p": np.full((n_hard, 3), 50.0, np.float32), "fake": np.array([1, 1, 1, 0], bool),
         "kappa": np.full(n_tr, 3.0), "c_gev_mrad": np.array(500.0), "p_reco": np.full(n_tr, 60.0),
         "p_region": 2e-3, "near_muons": 6, "near_forced": 6, "events": 6, "v_min": 0.25, "v_max": 1.0}
    before = soft_summary(m)
    assert before["fakes"] == 3 and not before["calo_cuts"] and "tracking_fakes" not in before
    m |= {"calo_pass": np.array([no_ecal, no_s4, all_bits, 0, 0, 0], np.uint8),
          "ecal_energy": np.array([80.0, 0.4, 0.4, 0, 0, 0], np.float32), "event_time": np.full(n_hard, 140.0),
          "b_time": np.full(n_hard, -10.0), "b_e_ecal": np.full(n_hard, 80.0)}
    assert calo_passes(m).tolist() == [False, True, True, False, False, False]
    s = soft_summary(m)
    assert s["fakes"] == 2 and s["fakes_tracking_cuts_only"] == 3 and s["calo_cuts"]
    t = s["tracking_fakes"]
    assert t["n"] == 3 and t["passing_counted"] == 2 and t["failing"]["ecal_mip"] == 1 and t["failing"]["s4_fired"] == 1
    assert [e["failed"] for e in t["events"]] == [["ecal_mip"], ["s4_fired", "smu_fired"], []]
    assert t["events"][0]["ecal_energy_gev"] == pytest.approx(80.0) and t["events"][0]["p_b_gev"] == 50.0
