"""The track match of a projection without an incoming track (``stage._hit_match_terms``): the
outgoing track at the ECAL front against the incoming view's in-time hits carried along the
beam direction.  Closed forms, a handmade hit table, and simulated 2022-like beam muons on
truth: their own hits match, an outgoing track displaced like the counted fake kicks does not
(docs/periods.md, "The counted fakes of the mis-reconstruction row")."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2 as chi2_dist

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks, stage
from na64reco.reco.tracking.resolution import HitMatchResolution, hit_extrapolation_variance
from na64reco.reco.tracking.tracks import in_time
from na64reco.sim.generate import simulate

#: the counted fakes' outgoing tracks at the ECAL front were 20-45 mm from their incoming hits
FAKE_OFFSET = 20.0  # mm


def _view(setup, role, coord):
    cfg, _, vt, _ = stage._tables(setup, load_conditions(setup, 1))
    return next(v for v in vt.views if v.role == role and v.coord == coord)


def test_hit_extrapolation_variance_closed_form():
    setup = load_setup("na64mu", run=1)
    vi = _view(setup, "in", "x")  # MS1 bends in y: the x view is straight
    hm = HitMatchResolution(setup, vi)
    z_e = setup.detector("ECAL").z
    div = setup.beam.divergence_x
    assert list(hm.planes) == list(vi.planes)
    for k, i in enumerate(hm.planes):
        pl = setup.planes[i]
        # no scattering at infinite momentum: the point and the beam divergence over the lever arm
        assert hm.c0[k] == pytest.approx(pl.resolution**2 + (div * (z_e - pl.z)) ** 2, rel=1e-9)
        assert hm.c1[k] > 0
        # the scattering part scales as 1/p^2 (beta = 1 up to (m/p)^2)
        p = 50_000.0
        var = hit_extrapolation_variance(setup, pl, z_e, p, div)
        assert var == pytest.approx(hm.c0[k] + hm.c1[k] * (hm.P_REF / p) ** 2, rel=1e-5)
    assert np.allclose(hm.shift, 0.0)  # nothing bends x upstream of MS2
    # a bend view: only its planes downstream of the magnet (straight to the ECAL)
    vb = _view(setup, "in", "y")
    hb = HitMatchResolution(setup, vb)
    assert list(hb.planes) == [i for i, d in zip(vb.planes, vb.down, strict=True) if d]


def test_nearest_hit_chi2_picks_the_nearest_usable_hit():
    # 2 events x 3 planes; the incoming view is planes 0 and 2
    plane_offsets = np.array([0, 2, 3, 4, 4, 4, 4], np.int64)  # event 0: plane 0 two hits, 1 one, 2 one
    pos = np.array([1.0, 5.0, 0.0, 9.0])
    usable = np.array([True, False, True, True])
    planes = np.array([0, 2], np.int64)
    shift, c0, c1 = np.array([0.5, 0.0]), np.array([1.0, 3.0]), np.array([0.0, 1.0])
    u_out, var_out, fac = np.array([6.0, 0.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0])
    got = stage._nearest_hit_chi2(plane_offsets, pos, usable, 3, planes, shift, c0, c1, u_out, var_out, fac,
                                  np.array([True, True]))
    # event 0: plane 0 hit 1.0 (5.0 unusable): (6 - 1.5)^2 / 2; plane 2 hit 9.0: (6 - 9)^2 / 5
    assert got[0] == pytest.approx(min(4.5**2 / 2, 9 / 5))
    assert got[1] == np.inf  # no hit on the incoming planes
    none = stage._nearest_hit_chi2(plane_offsets, pos, usable, 3, planes, shift, c0, c1, u_out, var_out, fac,
                                   np.array([False, False]))
    assert np.isnan(none).all()


@pytest.fixture(scope="module")
def beam2022(tmp_path_factory):
    """2022-like beam muons (all planes required: ~1/3 of the tracked ones lack the incoming x
    track), reconstructed with the hit table, and the muons measured right (reco p_out within
    10 % of the truth) whose incoming track has no x projection."""
    setup = load_setup("na64mu", run=1)
    path = tmp_path_factory.mktemp("hitmatch") / "beam.root"
    simulate(setup, 12000, seed=3, run=1, output=path, process="beam", trigger="calibration")
    raw = open_raw(path)
    cond = load_conditions(setup, raw.run)
    out = reconstruct_tracks(raw.events(), setup, cond, return_internals=True)
    true_p = np.asarray(raw.truth()["p_out"])
    good = (true_p > 100) & (np.abs(out["p_out"] / true_p - 1) < 0.1) & np.isfinite(out["in_y"])
    cfg, pt, vt, (lo, hi) = stage._tables(setup, cond)
    h = out["_hits"]
    drop = (pt.type == 0) & (not cfg.use_mm_singles)
    usable = in_time(h, lo, hi) & ~(np.asarray(h["ambiguous"], bool) & drop[np.asarray(h["plane"])])
    hits = (h["plane_offsets"], h["pos"], usable)
    plain = reconstruct_tracks(raw.events(), setup, cond)  # the search's hits only (the fast path)
    return {"setup": setup, "out": out, "plain": plain, "vt": vt, "cfg": cfg, "hits": hits,
            "no_in_x": good & np.isnan(out["in_x"]) & np.isfinite(out["out_x"]),
            "sel": good & np.isnan(out["in_x"]) & np.isfinite(out["out_x"]) & np.isfinite(out["out_y"]),
            "both": good & np.isfinite(out["in_x"]) & np.isfinite(out["out_x"])}


def _match(b, out, hits):
    return stage._match_chi2(out, b["out"]["_tracks"], b["vt"], b["setup"], b["cfg"], hits=hits)


def test_muons_without_incoming_x_track_match_their_own_hits(beam2022):
    b = beam2022
    sel = b["sel"]
    assert sel.sum() > 100
    new = b["out"]["track_match_chi2"]
    assert np.array_equal(new, _match(b, b["out"], b["hits"]), equal_nan=True)
    assert np.array_equal(new, b["plain"]["track_match_chi2"], equal_nan=True)
    y_only = _match(b, b["out"], None)  # the match before: the y projection alone (NaN without MS2 y track)
    # still no match without a projection with both tracks (no MS2 y track): nothing admitted
    assert np.array_equal(np.isnan(new), np.isnan(y_only))
    assert (b["no_in_x"] & np.isnan(new)).sum() > 50
    x_term = new[sel] - y_only[sel]
    # inf: no usable incoming x hit at all (all four MS1 x planes missed or MM singles): ~1e-3
    fin = np.isfinite(x_term)
    assert fin.mean() > 0.99 and (x_term[fin] >= 0).all()
    x_term = x_term[fin]
    # the nearest of the muon's own hits: at most chi2(1 dof), so its median at most that of chi2(1)
    assert np.median(x_term) < 1.5 * chi2_dist.ppf(0.5, 1)
    assert np.mean(new[sel] > 20) < 0.02
    # projections with both tracks are as before
    both = b["both"]
    assert both.sum() > 150 and np.array_equal(new[both], y_only[both])


def test_outgoing_track_displaced_like_the_fakes_fails_the_match(beam2022):
    """A fake kick's upstream MS2 segment made of two noise hits points 20-45 mm away from the
    muon at the ECAL front; with no incoming x track the beam spot (9 mm) let it through and
    the match ignored x.  Moved by 20 mm, the muons' outgoing tracks now fail the match; the
    y-only match of the old code does not see it."""
    b = beam2022
    sel = b["sel"]
    moved = dict(b["out"])
    for s in (+1, -1):
        moved["out_x"] = np.where(sel, b["out"]["out_x"] + s * FAKE_OFFSET, b["out"]["out_x"])
        assert np.mean(_match(b, moved, b["hits"])[sel] > 20) > 0.97
        assert np.array_equal(_match(b, moved, None)[sel], _match(b, b["out"], None)[sel], equal_nan=True)


def test_used_codes_are_the_used_plane_masks():
    """_used_codes (one compiled pass, issue 11 sixth pass) equals the boolean masks it replaced:
    bit j set where the view track has a hit on its j-th plane; _bits inverts it."""
    rng = np.random.default_rng(5)
    hits = np.where(rng.random((300, 4, 8)) < 0.6, rng.integers(0, 1000, (300, 4, 8)), -1)
    hits[:20] = -1  # events without tracks
    c_in, c_out = stage._used_codes(hits, 1, 4, 2, 5)
    for code, v, n in ((c_in, 1, 4), (c_out, 2, 5)):
        used = hits[:, v, :n] >= 0
        assert code.dtype == np.int64
        np.testing.assert_array_equal(code, (used * (1 << np.arange(n))).sum(axis=1))
        for e in range(0, 300, 7):
            np.testing.assert_array_equal(stage._bits(code[e], n), used[e])
    assert (c_in[:20] == 0).all() and (c_out[:20] == 0).all()
