"""The common track time (``stage.time_consistent``, ``apv.strip_time_error_r``): the APV
hit-time error against toys of the sample noise, handmade hit sets, and simulated 2022-like
beam muons on truth: their own outgoing tracks pass at the chosen probability, the same tracks
with two hits moved 19 ns late (the pile-up muon of the remaining counted fake, docs/periods.md)
do not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2 as chi2_dist

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.pulse import apv_shape
from na64reco.reco.tracking import reconstruct_tracks, stage
from na64reco.reco.tracking.apv import strip_time_error_r, strip_time_r
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.sim.generate import simulate

SPACING, PEAKING, NOISE = 25.0, 50.0, 4.0  # ns, ns, ADC (the na64mu readout)
R1, R2 = math.exp(-SPACING / PEAKING), math.exp(-2 * SPACING / PEAKING)
LATE = 19.0  # ns: the pile-up muon of the remaining counted fake


@pytest.mark.parametrize("start, amp", [(-20.0, 150.0), (-5.0, 300.0), (10.0, 150.0)])
def test_time_error_is_the_spread_of_noise_toys(start, amp):
    """Pulses starting ``start`` ns after sample 0 (a1 branch) or before it (a0 branch), with
    Gaussian noise on the samples: the spread of :func:`strip_time_r` is the propagated error."""
    rng = np.random.default_rng(5)
    t_s = np.array([0.0, SPACING, 2 * SPACING]) - start
    clean = amp * np.array([float(apv_shape(x, PEAKING)) for x in t_s])
    thr = 3 * NOISE
    err = strip_time_error_r(*clean, SPACING, R1, R2, thr) * NOISE
    assert strip_time_r(*clean, SPACING, R1, R2, thr) == pytest.approx(start, abs=1e-9)
    s = clean + NOISE * rng.standard_normal((4000, 3))
    if start < 0:  # keep the toys on the branch of the clean pulse
        s = s[s[:, 0] > thr]
    else:
        s[:, 0] = 0.0
    t = np.array([strip_time_r(*x, SPACING, R1, R2, thr) for x in s])
    assert np.std(t) == pytest.approx(err, rel=0.1)
    assert 0.05 < err < 3.0


def _table(times, errors):
    """One event, one view: hit indices 0..n-1 into ``times``."""
    n = len(times)
    hits = np.full((1, 1, 6), -1, np.int64)
    hits[0, 0, :n] = np.arange(n)
    return hits, np.array([[n]]), np.asarray(times, float), np.asarray(errors, float)


def test_chi2_quantiles_are_scipys():
    for dof in range(1, 8):
        for x in (0.1, 1.0, 7.0, 25.0, 60.0):
            assert stage.chi2_sf(x, dof) == pytest.approx(chi2_dist.sf(x, dof), rel=1e-9)
    cuts = stage.time_chi2_cuts(1e-4, 8)
    assert cuts[0] == cuts[1] == np.inf
    assert cuts[2:] == pytest.approx(chi2_dist.isf(1e-4, np.arange(1, 8)), rel=1e-9)


def test_handmade_hit_sets():
    cuts = stage.time_chi2_cuts(1e-4, 6)
    e = [0.3] * 4
    # one time within the errors: passes
    assert stage.time_consistent(*_table([-7.6, -7.8, -7.4, -7.7], e), cuts, 0).all()
    # the fake: two hits of the muon, two of a muon 19 ns later (and a straw: no APV error)
    fake = _table([-7.8, 9.9, 9.9, 20.0, -7.9], [0.3, 0.3, 0.3, np.nan, 0.3])
    assert not stage.time_consistent(*fake, cuts, 1).any()
    c, c1, m = stage.time_chi2(fake[0], fake[1], fake[2], fake[3])
    assert m[0, 0] == 4
    assert c[0, 0] == pytest.approx(4 * (17.7 / 2 / 0.3) ** 2, rel=0.01)
    # one hit off (a pulse summed with another): fails strictly, passes with one outlier allowed
    one = _table([-7.6, -7.8, -20.0, -7.7], e)
    assert not stage.time_consistent(*one, cuts, 0).any()
    assert stage.time_consistent(*one, cuts, 1).all()
    # three hits with one off: the two left must agree
    assert stage.time_consistent(*_table([0.0, 0.2, 15.0], e[:3]), cuts, 1).all()
    assert not stage.time_consistent(*_table([0.0, 5.0, 15.0], e[:3]), cuts, 1).any()
    # no track, or a single timed hit: nothing to compare
    hits, nh, t, s = _table([0.0, 30.0], [0.3, np.nan])
    assert stage.time_consistent(hits, nh, t, s, cuts, 0).all()
    assert stage.time_consistent(hits, np.array([[0]]), *_table([0.0, 30.0], e[:2])[2:], cuts, 0).all()
    with pytest.raises(ValueError, match="outliers"):
        stage.time_consistent(hits, nh, t, s, cuts, 2)


@pytest.fixture(scope="module")
def beam2022(tmp_path_factory):
    setup = load_setup("na64mu", run=1)
    cond = load_conditions(setup, 1)
    path = tmp_path_factory.mktemp("tracktime") / "beam.root"
    simulate(setup, 6000, seed=13, run=1, output=path, process="beam", trigger="calibration")
    raw = open_raw(path)
    out = reconstruct_tracks(raw.events(), setup, cond, return_internals=True,
                             config_overrides={"track_time_prob_min": 0.0})
    return setup, cond, raw, out


def _out_views(out):
    return [i for i, v in enumerate(out["_views"]) if v.station == "MS2"]


def test_beam_muon_tracks_pass_and_mixed_ones_fail(beam2022):
    setup, cond, raw, out = beam2022
    cfg = load_tracking_config(setup)
    assert cfg.track_time_roles == ("out",) and cfg.track_time_outliers == 1
    h, tr = out["_hits"], out["_tracks"]
    true_p = np.asarray(raw.truth()["p_out"])
    # the muon's own track: p_out within 5 % of truth
    good = np.abs(out["p_out"] / true_p - 1) < 0.05  # GeV both
    cuts = stage.time_chi2_cuts(cfg.track_time_prob_min, tr["hits"].shape[2])
    views = _out_views(out)
    hits = tr["hits"][good][:, views]
    nh = tr["nh"][good][:, views]
    ok = stage.time_consistent(hits, nh, h["time"], h["time_error"], cuts, cfg.track_time_outliers)
    has = nh > 0
    assert has.sum() > 1000
    assert ((~ok) & has).sum() / has.sum() < 3e-3  # 1e-4 for Gaussian errors; summed pulses add some
    # the same tracks with their first two APV hits 19 ns late (a parallel pile-up muon's)
    late = h["time"].copy()
    timed = np.isfinite(h["time_error"])
    for e, v in np.argwhere(has):
        row = [j for j in hits[e, v] if j >= 0 and timed[j]]
        if len(row) >= 4:
            late[row[:2]] += LATE
    c, c1, m = stage.time_chi2(hits, nh, late, h["time_error"])
    four = has & (m >= 4)
    assert four.sum() > 1000
    mixed = stage.time_consistent(hits, nh, late, h["time_error"], cuts, cfg.track_time_outliers)
    assert ((~mixed) & four).sum() / four.sum() > 0.99


def test_reconstruction_drops_time_inconsistent_tracks(beam2022):
    setup, cond, raw, old = beam2022
    new = reconstruct_tracks(raw.events(), setup, cond)
    dropped = (new["flags_out"] & stage.FLAG_TIME) > 0
    assert not ((old["flags_out"] & stage.FLAG_TIME) > 0).any()
    # a dropped outgoing bend view has no momentum (a dropped y view leaves it); nothing else changes
    assert np.all(np.isnan(new["p_out"][dropped]) | (new["p_out"][dropped] == old["p_out"][dropped]))
    assert np.isnan(new["p_out"][dropped]).any()
    same = ~dropped
    assert np.array_equal(new["p_out"][same], old["p_out"][same], equal_nan=True)
    assert np.array_equal(new["p_in"], old["p_in"], equal_nan=True)
    assert dropped.sum() < 0.01 * len(dropped)
