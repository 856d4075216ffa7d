"""The pile-up veto of MS2: ``n_extra_planes_out`` (planes of the tracked views with an in-time
hit that no track uses, twins of used hits excepted)."""

from __future__ import annotations

import numpy as np
import pytest

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.stage import extra_planes
from na64reco.sim.generate import simulate


def extra_hit_planes(hits: dict, usable: np.ndarray, used: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Slow reference of :func:`na64reco.reco.tracking.stage.extra_planes`: per event, the
    ``planes`` (bool, events x setup planes: those of the views with a track) holding a
    ``usable`` hit that is neither one of the tracks' hits (``used``: indices into ``hits``,
    -1 for none) nor a twin of one (same ``origin``), by (event, plane, origin) keys."""
    n_events, n_planes = planes.shape
    ev = np.asarray(hits["event"], np.int64)
    pl = np.asarray(hits["plane"], np.int64)
    org = np.asarray(hits["origin"], np.int64)
    u = used[used >= 0].ravel()
    used_key = ((ev[u] * n_planes + pl[u]) << 32) | org[u]
    idx = np.flatnonzero(usable & planes[ev, pl])
    key = ((ev[idx] * n_planes + pl[idx]) << 32) | org[idx]
    extra = idx[~np.isin(key, used_key)]
    busy = np.unique(ev[extra] * n_planes + pl[extra])
    return np.bincount(busy // n_planes, minlength=n_events).astype(np.int64)


def _kernel_on(hits, usable, used, planes):
    """The stage's kernel on the reference's inputs: plane offsets from the sorted hits, one
    station view per plane, a track in a view where ``planes`` says so."""
    n, n_planes = planes.shape
    key = hits["event"] * n_planes + hits["plane"]
    offsets = np.searchsorted(key, np.arange(n * n_planes + 1))
    return extra_planes(offsets, hits["origin"], usable, used, planes, np.arange(n_planes))


def test_extra_planes_count_untracked_hits_but_not_twins():
    # 3 events, 4 planes; event 0: plane 1 has the track hit and its mirror (same origin),
    # plane 2 a track hit and a second cluster; event 1: two extra clusters on plane 3, one
    # out of time; event 2: plane 0 is not a tracked plane of the event
    hits = {"event": np.array([0, 0, 0, 0, 1, 1, 1, 2, 2]),
            "plane": np.array([1, 1, 2, 2, 3, 3, 3, 0, 1]),
            "origin": np.array([5, 5, 6, 7, 8, 9, 10, 11, 12])}
    usable = np.array([True, True, True, True, True, True, False, True, True])
    used = np.array([[0, 2, -1], [4, -1, -1], [8, -1, -1]])
    planes = np.ones((3, 4), bool)
    planes[2, 0] = False
    for f in (extra_hit_planes, _kernel_on):
        assert f(hits, usable, used, planes).tolist() == [1, 1, 0], f
    # event 1's second extra cluster usable too: still one plane; moved to plane 2: two planes
    # (plane 2 then holds hits 5 and 6 of event 1, sorted by plane)
    usable[6] = True
    for f in (extra_hit_planes, _kernel_on):
        assert f(hits, usable, used, planes).tolist() == [1, 1, 0], f
    hits["plane"] = np.array([1, 1, 2, 2, 2, 3, 3, 0, 1])
    used = np.array([[0, 2, -1], [6, -1, -1], [8, -1, -1]])  # event 1's track hit is now index 6 (plane 3)
    hits["origin"] = np.array([5, 5, 6, 7, 9, 10, 8, 11, 12])
    usable = np.ones(9, bool)
    for f in (extra_hit_planes, _kernel_on):
        assert f(hits, usable, used, planes).tolist() == [1, 2, 0], f


@pytest.mark.parametrize("run", [1, 10001])
def test_a_second_in_time_muon_fills_the_planes_and_single_muons_do_not(tmp_path, run):
    setup = load_setup("na64mu", run=run)
    cond = load_conditions(setup, run)
    frac = {}
    for process in ("beam", "pileup"):  # pileup: a second beam muon within +-15 ns in every event
        path = tmp_path / f"{process}.root"
        simulate(setup, 3000, 3, run, path, process=process, trigger="calibration")
        out = reconstruct_tracks(open_raw(path).events(), setup, cond)
        ok = np.isfinite(out["p_out"])
        # vetoed by the selection's no_pileup_out (max: 2, a half-open range: 2 or more planes fail)
        frac[process] = float(np.mean(out["n_extra_planes_out"][ok] >= 2))
    assert frac["beam"] < 0.06, frac  # nominal noise and out-of-time pile-up: a few %
    assert frac["pileup"] > 0.8, frac  # an in-time second muon: vetoed


def test_stage_kernel_equals_the_reference(tmp_path):
    """The stage's n_extra_planes_out (compiled, event by event) against extra_hit_planes
    (the numpy reference above) on simulated pile-up events, hit tables and tracks from the stage's internals."""
    run = 1
    setup = load_setup("na64mu", run=run)
    cond = load_conditions(setup, run)
    path = tmp_path / "pile.root"
    simulate(setup, 1500, 5, run, path, process="pileup", trigger="calibration")
    out = reconstruct_tracks(open_raw(path).events(), setup, cond, return_internals=True)
    hits, res, views = out["_hits"], out["_tracks"], out["_views"]
    n = len(out["p_out"])
    from na64reco.reco.tracking.config import load_tracking_config
    from na64reco.reco.tracking.tracks import hit_time_windows, in_time, mm_singles

    cfg = load_tracking_config(setup)
    lo, hi = hit_time_windows(setup, cond, cfg.hit_time_sigma)
    usable = in_time(hits, lo, hi)
    if not cfg.use_mm_singles:
        usable &= ~mm_singles(hits, np.array([p.type == "MM" for p in setup.planes]))
    iv = [i for i, v in enumerate(views) if v.station == "MS2"]
    planes = np.zeros((n, len(setup.planes)), bool)
    for i in iv:
        planes[:, list(views[i].planes)] |= (res["nh"][:, i] > 0)[:, None]
    ref = extra_hit_planes(hits, usable, res["hits"][:, iv], planes)
    assert np.array_equal(out["n_extra_planes_out"], ref)
    assert (ref > 2).mean() > 0.3  # the sample exercises the veto


def test_no_events_give_empty_counts(tmp_path):
    setup = load_setup("na64mu", run=1)
    simulate(setup, 50, 2, 1, tmp_path / "few.root", process="beam", trigger="calibration")
    out = reconstruct_tracks(open_raw(tmp_path / "few.root").events()[:0], setup, load_conditions(setup, 1))
    assert out["n_extra_planes_out"].shape == (0,) and out["n_extra_planes_in"].shape == (0,)
