"""Candidate ranking and the vertex constraint of the outgoing station (tracks.py), on
hand-made hits of one view against closed forms (no simulation)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from na64reco.geometry import load_setup
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.reco.tracking.tracks import ViewTables, make_views, missing_plane_penalty, search_view_reference

# the 2022 MS2 layout (two upstream bend planes) with the default N-1 rule: the 2022 period's
# tracking requires every plane (tracking.yaml periods), which leaves no missing-plane ranking to test
SETUP = load_setup("na64mu")
CFG = load_tracking_config(SETUP)
VIEWS = make_views(SETUP, CFG)
VT = ViewTables(VIEWS, CFG)
OUT_X = next(v for v in VIEWS if v.role == "out" and v.bend)


def test_missing_plane_penalty_closed_form():
    p = next(q for q in SETUP.planes if q.name == "MM5X")
    rho = p.noise_hits / p.width
    expected = 2 * math.log(p.efficiency / ((1 - p.efficiency) * math.sqrt(2 * math.pi) * p.resolution * rho))
    assert missing_plane_penalty(p) == pytest.approx(expected, rel=1e-12)
    assert 15 < expected < 25  # a hit that fits is kept unless it costs > ~4 sigma


def _track_hits(kappa_mrad, a=0.0, b=None, skip=(), extra=None):
    """Hits (index, global pos, sigma, origin) of a kick track on the out x view (mm, mrad)."""
    b = OUT_X.ref_slope if b is None else b
    hits, k = [], 0
    for ip, (plane, dz, down) in enumerate(zip(OUT_X.planes, OUT_X.dz, OUT_X.down, strict=True)):
        u = a + OUT_X.ref_pos + b * dz - (kappa_mrad * dz if down else 0.0)
        row = []
        if ip not in skip:
            row.append((k, u, SETUP.planes[plane].resolution, k))
            k += 1
        if extra and ip in extra:
            row.append((k, u + extra[ip], SETUP.planes[plane].resolution, k))
            k += 1
        hits.append(row)
    return hits


def test_a_kick_fixed_by_one_noise_hit_is_rejected_by_the_vertex():
    """GEM1X missed and the true MM5X hit lost, a noise hit 7 mm off on MM5X: one missing plane,
    so the 4-hit fit (1 dof, from the downstream hits only) is a candidate whose kick is fixed
    by the noise hit: 3.5 mrad too large (p ~ 69 GeV for a 160 GeV muon).  With the incoming
    track at the ECAL front it points ~19 mm away (sigma ~0.5 mm): no candidate."""
    kappa160 = SETUP.magnets["MS2"].kick(160_000.0) * 1000.0
    up = [ip for ip, d in enumerate(OUT_X.down) if not d]
    hits = _track_hits(kappa160, skip=up, extra={up[1]: -7.0})
    anchor = OUT_X.ref_pos + OUT_X.ref_slope * OUT_X.anchor_dz  # the true line at the ECAL front
    # without any vertex information (no anchor view): the fake is the track
    free = dataclasses.replace(OUT_X, anchor_view=-1)
    nh, chi2, _, par, _ = search_view_reference(hits, free, VT)
    assert nh == 4 and chi2 < 1e-6
    p_fake = SETUP.magnets["MS2"].momentum(par[2] / 1000.0) / 1000.0
    assert p_fake < 80
    # with the incoming track: rejected
    assert search_view_reference(hits, OUT_X, VT, anchor)[0] == 0
    # without it the beam spot (sigma 9 mm) is the constraint: 19 mm is only 2 sigma, the fake
    # survives (a lost incoming projection is what leaves such fakes)
    assert search_view_reference(hits, OUT_X, VT, None)[0] == 4
    far = _track_hits(kappa160, skip=up, extra={up[1]: -20.0})  # 55 mm off at the ECAL: 6 sigma
    assert search_view_reference(far, OUT_X, VT, None)[0] == 0


def test_true_track_with_noise_keeps_its_hits_and_ties_are_deterministic():
    """A noise hit 3 mm away on one plane does not replace the true hit (penalty + chi2), the
    best candidate is the true track whatever the order of the hits in a plane."""
    kappa = SETUP.magnets["MS2"].kick(100_000.0) * 1000.0
    anchor = OUT_X.ref_pos + OUT_X.ref_slope * OUT_X.anchor_dz
    hits = _track_hits(kappa, extra={2: 3.0})
    nh, chi2, _, par, chosen = search_view_reference(hits, OUT_X, VT, anchor)
    assert nh == len(OUT_X.planes) and par[2] == pytest.approx(kappa, rel=1e-9)
    swapped = [list(reversed(h)) for h in hits]
    nh2, _, _, par2, chosen2 = search_view_reference(swapped, OUT_X, VT, anchor)
    assert nh2 == nh and np.allclose(par2, par) and chosen2 == chosen


def test_missing_plane_penalty_follows_the_measured_plane_efficiency():
    """The ranking uses the run's conditions: a less efficient plane costs less when missed."""
    p = SETUP.planes[0]
    nominal = missing_plane_penalty(p)
    assert missing_plane_penalty(p, p.efficiency, p.noise_hits) == nominal
    assert missing_plane_penalty(p, 0.80, p.noise_hits) < nominal < missing_plane_penalty(p, 0.99, p.noise_hits)
    assert missing_plane_penalty(p, p.efficiency, 10 * p.noise_hits) < nominal  # more noise: a hit proves less
