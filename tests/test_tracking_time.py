"""Hit-time consistency of the track search and the per-period tracker model, against truth.

* noise hits come at random times in the readout window (sim/digitize.py); the search drops
  hits off the plane's in-time window (tracks.hit_time_windows): with noise only out of time,
  no used hit is out of time and the tracking efficiency is the noise-free closed form;
* the tracking efficiency of each run period (2022: every plane required, 0.85 planes; 2023:
  N-1 rule, 0.97/0.95 planes) is the closed form from its plane efficiencies and the beam-spot
  acceptance, within binomial errors: the four-fold gain of seed 003.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.config import CONFIG_PATH, load_tracking_config
from na64reco.reco.tracking.expectation import closed_form_efficiency
from na64reco.reco.tracking.tracks import drop_mm_singles, hit_time_windows, select_in_time
from na64reco.sim.generate import simulate


def test_hit_time_windows_follow_the_conditions():
    s = load_setup("na64mu", run=1)
    cond = load_conditions(s, 1)
    lo, hi = hit_time_windows(s, cond, 3.0)
    for p in s.planes:
        t0, sig = cond.plane_time(p)
        assert sig > 0, p.name
        drift = 0.5 * p.pitch / s.readout.straw_drift_velocity if p.type == "straw" else 0.0
        assert lo[p.index] == pytest.approx(t0 - 3 * sig) and hi[p.index] == pytest.approx(t0 + drift + 3 * sig)
    lo0, hi0 = hit_time_windows(s, cond, 0.0)
    assert np.all(np.isinf(lo0)) and np.all(np.isinf(hi0))
    # a conditions entry overrides the setup's resolution
    c2 = dataclasses.replace(cond, planes={**cond.planes, "MM5X": dataclasses.replace(
        cond.planes["MM5X"], time_offset=5.0, time_resolution=2.0)})
    i = next(p.index for p in s.planes if p.name == "MM5X")
    lo2, hi2 = hit_time_windows(s, c2, 3.0)
    assert (lo2[i], hi2[i]) == pytest.approx((-1.0, 11.0))


def test_select_in_time_drops_late_early_and_unknown_times():
    hits = {"event": np.array([0, 0, 0, 1, 1]), "plane": np.array([0, 0, 1, 0, 1]),
            "time": np.array([0.0, 50.0, np.nan, -1.0, -40.0]), "pos": np.arange(5.0),
            "offsets": np.array([0, 3, 5]), "plane_offsets": np.array([0, 2, 3, 4, 5])}
    out = select_in_time(hits, np.array([-10.0, -10.0]), np.array([10.0, 10.0]))
    assert out["pos"].tolist() == [0.0, 3.0]
    assert out["offsets"].tolist() == [0, 1, 2] and "plane_offsets" not in out


def test_mm_singles_are_dropped_only_where_the_period_says_and_straw_mirrors_stay():
    hits = {"event": np.array([0, 0, 0, 0]), "plane": np.array([0, 0, 1, 1]),
            "ambiguous": np.array([True, False, True, True]), "pos": np.arange(4.0), "time": np.zeros(4)}
    out = drop_mm_singles(hits, np.array([True, False]))  # plane 0 MM, plane 1 straw
    assert out["pos"].tolist() == [1.0, 2.0, 3.0]
    cfg22 = load_tracking_config(load_setup("na64mu", run=1))
    cfg23 = load_tracking_config(load_setup("na64mu", run=10001))
    assert (cfg22.use_mm_singles, cfg22.max_missing_planes) == (False, 0)
    assert (cfg23.use_mm_singles, cfg23.max_missing_planes) == (True, 1)


def _efficiency(raw, setup, run, **kw):
    out = reconstruct_tracks(raw.events(), setup, load_conditions(setup, run), return_internals=True, **kw)
    hard = np.asarray(raw.truth()["p_out"]) > 100
    found = np.isfinite(out["p_in"]) & np.isfinite(out["p_out"])
    return float(found[hard].mean()), int(hard.sum()), out


@pytest.mark.parametrize("run", [1, 10001])
def test_tracking_efficiency_per_period_is_the_closed_form(tmp_path, run):
    setup = load_setup("na64mu", run=run)
    path = tmp_path / f"beam_{run}.root"
    simulate(setup, 3000, 17, run, path, process="beam", trigger="calibration")
    eff, n, _ = _efficiency(open_raw(path), setup, run)
    expected = closed_form_efficiency(setup)
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert abs(eff - expected) < 4 * sigma + 0.005, (eff, expected, sigma)


def test_period_efficiencies_differ_four_fold():
    """Seed 003: the 2023-24 set-up raised the tracking efficiency four-fold (closed forms)."""
    ratio = closed_form_efficiency(load_setup("na64mu", run=10001)) / closed_form_efficiency(
        load_setup("na64mu", run=1))
    assert 3.0 < ratio < 5.0, ratio


def test_out_of_time_noise_is_never_used(tmp_path):
    """Three times the noise, all of it out of time (APV clusters 60-150 ns before the trigger,
    straw hits after the maximum drift time): the search uses none of it and finds the
    noise-free efficiency; without the time cut the same file's tracks do use noise hits.
    (2023 period: its search keeps MM singles; the 2022 one drops them, and out-of-time noise
    sharing a multiplexed channel with a true cluster makes a few true hits singles.)"""
    run = 10001
    setup = load_setup("na64mu", run=run)
    ro = dataclasses.replace(setup.readout, apv_noise_window=(-150.0, -60.0), straw_noise_window=(150.0, 250.0))
    noisy = dataclasses.replace(setup, readout=ro, planes=tuple(
        dataclasses.replace(p, noise_hits=3 * p.noise_hits) for p in setup.planes))
    path = tmp_path / "oot.root"
    simulate(noisy, 1500, 23, run, path, process="beam", trigger="calibration")
    raw = open_raw(path)
    lo, hi = hit_time_windows(setup, load_conditions(setup, run), load_tracking_config(setup).hit_time_sigma)

    eff, n, out = _efficiency(raw, setup, run)
    h, t = out["_hits"], out["_tracks"]["hits"]
    used = t[t >= 0]
    assert used.size > 0
    assert np.all((h["time"][used] >= lo[h["plane"][used]]) & (h["time"][used] <= hi[h["plane"][used]]))
    expected = closed_form_efficiency(setup)
    assert abs(eff - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 0.005, (eff, expected)

    cfg = tmp_path / "tracking.yaml"
    cfg.write_text(CONFIG_PATH.read_text().replace("hit_time_sigma: 3.0", "hit_time_sigma: 0"))
    _, _, out0 = _efficiency(raw, setup, run, config_path=cfg)
    h0, t0 = out0["_hits"], out0["_tracks"]["hits"]
    used0 = t0[t0 >= 0]
    late = (h0["time"][used0] < lo[h0["plane"][used0]]) | (h0["time"][used0] > hi[h0["plane"][used0]])
    assert late.any()  # the noise does reach tracks when time is ignored


@pytest.mark.parametrize("old, new, message", [
    ('"2023": {required_planes: [MM6X]}', '"2023": {required_planes: [MM9X]}', "'MM9X' is not a tracker plane"),
    ('"2023": {required_planes: [MM6X]}', '"2023": {required_planes: MM6X}', "expected a list of tracker plane"),
    ("view_max_missing_planes: {MS2 y: 1}", "view_max_missing_planes: {MS3 y: 1}", "'MS3 y' is not"),
    ("view_max_missing_planes: {MS2 y: 1}", "view_max_missing_planes: {MS2 y: 5}", "expected an integer 0..2"),
    ("view_max_missing_planes: {MS2 y: 1}", "view_max_missing_planes: [MS2 y]", "expected a mapping"),
])
def test_bad_view_rules_name_the_key_and_the_value(tmp_path, old, new, message):
    text = CONFIG_PATH.read_text()
    assert old in text
    cfg = tmp_path / "tracking.yaml"
    cfg.write_text(text.replace(old, new))
    run = 10001 if "2023" in old else 1
    with pytest.raises(ConfigError, match=message) as err:
        load_tracking_config(load_setup("na64mu", run=run), cfg)
    assert str(cfg) in str(err.value)


def test_period_view_rules():
    """2022: every plane in the bend views, N-1 in the MS2 y view; 2023: N-1 and MM6X required."""
    from na64reco.reco.tracking.tracks import make_views

    for run, rules in ((1, {("MS1", "y"): 0, ("MS1", "x"): 0, ("MS2", "x"): 0, ("MS2", "y"): 1}),
                       (10001, {("MS1", "y"): 1, ("MS1", "x"): 1, ("MS2", "x"): 1, ("MS2", "y"): 1})):
        setup = load_setup("na64mu", run=run)
        views = make_views(setup, load_tracking_config(setup))
        assert {(v.station, v.coord): v.max_missing for v in views} == rules
        required = {setup.planes[i].name for v in views for i, r in zip(v.planes, v.required, strict=True) if r}
        assert required == (set() if run == 1 else {"MM6X"})
