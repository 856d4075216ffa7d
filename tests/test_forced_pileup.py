"""Forced beam pile-up muons (na64reco.sim.occupancy.ForcedPileup): exact biased sampling.

E[g] = sum_k Poisson(k; lambda_N) E[g | k out-of-time muons in N] must hold for any event
quantity g: checked against direct simulation at a raised beam rate (where both sides are
countable), on the muon times and after reconstruction; exactly k muons land in N; the
stratified combination over (m, k) (na64reco.background.forced_noise_ratio) against a closed
form.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from forced_checks import assert_combination_matches_direct

from na64reco.background.estimates import forced_noise_ratio
from na64reco.background.fake_kicks import count, near_times
from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError, NA64Error
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.selection.schema import load_selection
from na64reco.sim.generate import simulate
from na64reco.sim.occupancy import (
    ForcedPileup,
    expected_near,
    expected_per_event,
    far_segments,
    pileup_muons,
    pileup_times,
)

RUN = 1  # 2022 period


@pytest.fixture(scope="module")
def setup_cond():
    setup = load_setup("na64mu", run=RUN)
    return setup, load_conditions(setup, RUN)


def _raised(setup, factor):
    beam = dataclasses.replace(setup.beam, particles_per_spill=setup.beam.particles_per_spill * factor)
    return dataclasses.replace(setup, beam=beam)


def _in(t, segs):
    return np.any([(t >= a) & (t < b) for a, b in segs], axis=0)


def test_near_times_cover_every_plane_and_skip_the_in_time_window(setup_cond):
    setup, cond = setup_cond
    near = near_times(setup, cond)
    assert near == [(-45.0, -15.0), (15.0, 79.0)]  # APV [-45, 45], straws [-19, 79] ns, minus +-15 ns
    lam = expected_near(setup, ForcedPileup.of(near, 0))
    rate = setup.beam.particles_per_spill / setup.beam.spill_duration
    assert lam == pytest.approx(rate * 94.0)
    far = far_segments(setup, near)
    assert sum(b - a for a, b in far) + 94.0 == pytest.approx(450.0 - 30.0)
    assert rate * sum(b - a for a, b in far) + lam == pytest.approx(expected_per_event(setup))


def test_exactly_k_muons_in_the_near_times(setup_cond):
    setup, cond = setup_cond
    near = near_times(setup, cond)
    n, k = 50000, 2
    ev, t = pileup_muons(np.random.default_rng(1), setup, n, ForcedPileup.of(near, k))
    assert np.all(np.diff(ev) >= 0)
    lo, hi = setup.readout.beam_pileup_window
    assert np.all((t >= lo) & (t <= hi)) and not np.any(np.abs(t) < setup.beam.pileup_window / 2)
    inside = _in(t, near)
    assert np.all(np.bincount(ev[inside], minlength=n) == k)
    # near times uniform: the two intervals in proportion to their lengths (30 and 64 ns), 5 sigma
    first = np.count_nonzero(t[inside] < 0)
    assert abs(first - n * k * 30 / 94) < 5 * math.sqrt(n * k * 30 / 94)
    # outside N: the nominal Poisson number, uniform (mean per event, 5 sigma)
    far_mean = expected_per_event(setup) - expected_near(setup, ForcedPileup.of(near, 0))
    n_far = np.count_nonzero(~inside)
    assert abs(n_far - far_mean * n) < 5 * math.sqrt(far_mean * n)
    counts = np.bincount(ev[~inside], minlength=n)
    assert np.var(counts) == pytest.approx(far_mean, rel=0.1)  # Poisson: variance = mean


def test_nominal_draws_unchanged(setup_cond):
    """Without forcing, the draws are those of the nominal model (no extra random number)."""
    setup, _ = setup_cond
    ev, t = pileup_muons(np.random.default_rng(4), setup, 1000)
    rng = np.random.default_rng(4)
    n = int(rng.poisson(expected_per_event(setup) * 1000))
    ev0 = np.sort(rng.integers(0, 1000, n))
    t0 = pileup_times(rng, n, setup.readout.beam_pileup_window, setup.beam.pileup_window)
    assert np.array_equal(ev, ev0) and np.array_equal(t, t0)


def test_decomposition_equals_direct_simulation_of_the_times(setup_cond):
    """g = two muons within 10 ns of each other in N, at a raised rate: direct vs sum_k P(k) G_k."""
    setup, cond = setup_cond
    near = near_times(setup, cond)
    fast = _raised(setup, 2.0 / expected_near(setup, ForcedPileup.of(near, 0)))
    lam = expected_near(fast, ForcedPileup.of(near, 0))
    n = 20000

    def g(ev, t):
        m = _in(t, near)
        ev, t = ev[m], t[m]
        close = (ev[1:] == ev[:-1]) & (np.abs(np.diff(t)) < 10.0)
        out = np.zeros(n, bool)
        out[ev[1:][close]] = True
        return out

    def sorted_times(ev, t):
        o = np.lexsort((t, ev))
        return ev[o], t[o]

    direct = g(*sorted_times(*pileup_muons(np.random.default_rng(2), fast, n))).mean()
    est = var = 0.0
    for k in range(int(lam + 6 * math.sqrt(lam)) + 2):
        p = math.exp(-lam) * lam**k / math.factorial(k)
        gk = g(*sorted_times(*pileup_muons(np.random.default_rng(10 + k), fast, n, ForcedPileup.of(near, k)))).mean()
        est += p * gk
        var += p * p * gk * (1 - gk) / n
    sigma = math.sqrt(direct * (1 - direct) / n + var)
    assert direct > 0.05
    assert abs(est - direct) < 4 * sigma, (est, direct, sigma)


def test_decomposition_equals_direct_simulation_after_reconstruction(setup_cond, tmp_path):
    """The tracked fraction of beam muons (2022: the pile-up veto and the search see the near
    muons) at a raised beam rate: direct vs the forced-pile-up combination, within 4 sigma."""
    setup, cond = setup_cond
    sel = load_selection("na64mu_invisible")
    near = near_times(setup, cond)
    fast = _raised(setup, 1.0 / expected_near(setup, ForcedPileup.of(near, 0)))
    lam = expected_near(fast, ForcedPileup.of(near, 0))
    n = 2500
    simulate(fast, n, 11, RUN, tmp_path / "direct.root", process="beam", trigger="calibration")
    d = count(tmp_path / "direct.root", fast, cond, sel)
    rows = []
    for k in range(int(lam + 5 * math.sqrt(lam)) + 1):
        f = tmp_path / f"k{k}.root"
        simulate(fast, n, 20 + k, RUN, f, process="beam", trigger="calibration",
                 forced_pileup=ForcedPileup.of(near, k))
        c = count(f, fast, cond, sel)
        rows.append({"count": 0, "pileup": k, "events": c["hard"], "numerator": c["tracked"], "denominator": c["hard"]})
    # the noise is not forced: m = 0 with Lambda -> 0 stands for "nominal noise" (weight 1)
    res = forced_noise_ratio(rows, 1e-300, expected_pileup=lam)
    assert rows[0]["numerator"] / rows[0]["events"] > rows[-1]["numerator"] / rows[-1]["events"] + 0.03  # it matters
    assert_combination_matches_direct(res, d)


def test_forced_pileup_is_recorded(setup_cond, tmp_path):
    setup, cond = setup_cond
    near = near_times(setup, cond)
    simulate(setup, 200, 5, RUN, tmp_path / "a.root", process="beam", trigger="calibration")
    simulate(setup, 200, 5, RUN, tmp_path / "b.root", process="beam", trigger="calibration",
             forced_pileup=ForcedPileup.of(near, 1))
    meta = open_raw(tmp_path / "b.root").meta["simulation"]["forced_pileup"]
    assert meta["count"] == 1 and meta["near"] == [list(x) for x in near] and 0.05 < meta["expected"] < 0.2
    assert "forced_pileup" not in open_raw(tmp_path / "a.root").meta["simulation"]


def test_bad_near_times_are_named(setup_cond, tmp_path):
    setup, _ = setup_cond
    with pytest.raises(ConfigError, match=r"near interval \[-500, 10\] ns is not inside"):
        simulate(setup, 10, 1, RUN, tmp_path / "x.root", forced_pileup=ForcedPileup.of([(-500, 10)], 1))
    with pytest.raises(ConfigError, match="lie inside the in-time window"):
        simulate(setup, 10, 1, RUN, tmp_path / "x.root", forced_pileup=ForcedPileup.of([(-10, 10)], 1))
    with pytest.raises(ConfigError, match="count must be an integer >= 0"):
        ForcedPileup.of([(20, 40)], -1)
    with pytest.raises(ConfigError, match="first < last"):
        ForcedPileup.of([(40, 20)], 1)


def test_stratified_ratio_closed_form_and_checks():
    """G_{m,k} = c m k (a fake needs a noise cluster and a pile-up muon) -> E[g] = c Lambda lambda;
    m >= 2 as nominal-pile-up rows (G_m = c m lambda)."""
    lam, mu, c, n, den = 0.05, 0.1, 1e-3, 10**9, 0.2
    rows = []
    for m in range(2):
        rows += [{"count": m, "pileup": k, "events": n, "numerator": round(c * m * k * n),
                  "denominator": round(den * n)} for k in range(10)]
    rows += [{"count": m, "events": n, "numerator": round(c * m * mu * n), "denominator": round(den * n)}
             for m in range(2, 10)]
    res = forced_noise_ratio(rows, lam, expected_pileup=mu)
    assert res["ratio"] == pytest.approx(c * lam * mu / den, rel=1e-6)
    assert res["truncation"] < 1e-12
    assert res["empty_upper"] == pytest.approx(sum(t["upper_contribution"] for t in res["terms"]
                                                   if t["numerator_per_event"] == 0))
    assert res["empty_upper"] > 0 and res["upper"] > res["ratio"]
    # a missing (m, k) stratum counts in the truncation with its weight
    res2 = forced_noise_ratio([r for r in rows if not (r["count"] == 0 and r.get("pileup", 0) >= 3)], lam,
                              expected_pileup=mu)
    p_k3 = 1 - sum(math.exp(-mu) * mu**k / math.factorial(k) for k in range(3))
    assert res2["truncation"] == pytest.approx(math.exp(-lam) * p_k3 / res2["denominator_per_event"], rel=1e-6)
    with pytest.raises(NA64Error, match="pile-up counts 0..K without gaps"):
        forced_noise_ratio([r for r in rows if not (r["count"] == 0 and r.get("pileup") == 1)], lam,
                           expected_pileup=mu)
    with pytest.raises(NA64Error, match="need expected_pileup > 0"):
        forced_noise_ratio(rows, lam)


def test_misreco_row_from_the_strata(tmp_path):
    from na64reco.background.estimates import misreco_from_json

    path = tmp_path / "misreco_2023.json"
    strata = [{"count": 0, "pileup": 0, "fake": 0, "per_tracked": 0.0},
              {"count": 0, "pileup": 1, "fake": 1, "per_tracked": 1e-9},
              {"count": 2, "pileup": None, "fake": 0, "per_tracked": 0.0}]
    data = {"mot": 1e7, "box_count": 0, "per_mot": 0.0, "per_mot_err": 0.0, "extrapolated_per_mot": 1e-17,
            "extrapolated_err": 1e-10, "period": "2023", "after_cuts_but_box": 10000,
            "forced_noise_per_mot": 1e-12, "forced_noise_err": 1e-12, "forced_noise_upper_90": 5e-9,
            "forced_noise_empty_upper_90": 4e-9, "forced_noise": {"strata": strata}}
    path.write_text(json.dumps(data))
    c = misreco_from_json(path)
    assert (c.n, c.error, c.upper_limit) == (1e-12, 1e-12, False)
    assert "3 strata (m, k), 1 fake(s)" in c.method and "without a fake < 4e-09 per MOT" in c.method
    # the (0, 0) stratum by its tail fit: replaces that stratum's count
    path.write_text(json.dumps({**data, "forced_noise_tail_00_per_mot": 3e-13, "forced_noise_tail_00_err": 4e-13}))
    c = misreco_from_json(path)
    assert c.n == pytest.approx(1.3e-12) and c.error == pytest.approx(math.hypot(1e-12, 4e-13))
    assert "tail fit 3e-13" in c.method
    # no fake anywhere and no tail fit: the sample-size bound, as a limit
    path.write_text(json.dumps({**data, "forced_noise_per_mot": 0.0, "forced_noise_err": 0.0,
                                "forced_noise": {"strata": [dict(s, fake=0, per_tracked=0.0) for s in strata]}}))
    c = misreco_from_json(path)
    assert (c.n, c.upper_limit) == (5e-9, True)
    path.write_text(json.dumps({**data, "forced_noise": {"strata": [{"count": 0, "fake": 0}]}}))
    with pytest.raises(NA64Error, match="misreco_2023.json: key 'forced_noise.strata': a stratum lacks 'pileup'"):
        misreco_from_json(path)
