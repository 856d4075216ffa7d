"""Scattering in the ECAL of a muon whose momentum drops at a vertex inside it (a signal or trident
vertex, na64reco.sim.tracks.scatter_thick_across_vertex): the exit angle and position spreads against
their closed forms, the whole-scatterer limit, and the signal's exit angle against the old
whole-ECAL-at-the-exit-momentum model (1.29x too wide at a vertex half way with x = 0.5)."""

from __future__ import annotations

import hepunits as u
import numpy as np
import pytest

from na64reco import constants
from na64reco.sim.tracks import KIND_MUON, ROLE_PRIMARY, Tracks, highland, scatter_thick, scatter_thick_across_vertex

N = 400_000


def _tracks(n: int, p: float) -> Tracks:
    z = np.zeros(n)
    return Tracks(ev=np.arange(n), x=z.copy(), y=z.copy(), tx=z.copy(), ty=z.copy(), p=np.full(n, p),
                  q=np.ones(n, np.int8), kind=np.full(n, KIND_MUON, np.int8), role=np.full(n, ROLE_PRIMARY, np.int8),
                  flag=np.zeros(n, np.int8), t=z.copy(), alive=np.ones(n, bool))


def _var_tol(n: int) -> float:
    return 5 * np.sqrt(2.0 / n)  # relative error of a Gaussian sample variance, 5 sigma


def test_spreads_against_the_closed_form():
    """Var(tx) = th1^2 + th2^2, Var(x) = th1^2 (l1^2/3 + l1 l2 + l2^2) + th2^2 l2^2 / 3 (both projections)."""
    l1, l2, x1, x2 = 100.0, 125.0, 18.0, 22.0
    p1, p2 = 160 * u.GeV, 50 * u.GeV
    tr = _tracks(N, p2)
    scatter_thick_across_vertex(np.random.default_rng(1), tr, np.arange(N), np.full(N, x1), np.full(N, l1),
                                np.full(N, p1), np.full(N, x2), np.full(N, l2))
    th1, th2 = highland(p1, constants.MUON_MASS, x1), highland(p2, constants.MUON_MASS, x2)
    var_t = th1**2 + th2**2
    var_x = th1**2 * (l1**2 / 3 + l1 * l2 + l2**2) + th2**2 * l2**2 / 3
    cov = th1**2 * (l1 / 2 + l2) + th2**2 * l2 / 2
    for pos, slope in ((tr.x, tr.tx), (tr.y, tr.ty)):
        assert np.var(slope) == pytest.approx(var_t, rel=_var_tol(N))
        assert np.var(pos) == pytest.approx(var_x, rel=_var_tol(N))
        assert np.cov(pos, slope)[0, 1] == pytest.approx(cov, rel=3 * _var_tol(N))
    assert abs(np.corrcoef(tr.x, tr.y)[0, 1]) < 5 / np.sqrt(N)


def test_one_momentum_is_the_whole_scatterer():
    """At one momentum the two parts make the whole scatterer, up to Highland's log term (< 5 %)."""
    p, x, length = 160 * u.GeV, 40.0, 225.0
    split, whole = _tracks(N, p), _tracks(N, p)
    scatter_thick_across_vertex(np.random.default_rng(2), split, np.arange(N), np.full(N, x * 0.3),
                                np.full(N, length * 0.3), np.full(N, p), np.full(N, x * 0.7), np.full(N, length * 0.7))
    scatter_thick(np.random.default_rng(3), whole, x, length)
    assert np.std(split.tx) / np.std(whole.tx) == pytest.approx(1.0, abs=0.05)
    assert np.std(split.x) / np.std(whole.x) == pytest.approx(1.0, abs=0.05)


def test_the_old_model_overestimated_the_signal_angle():
    """x = 0.5, vertex half way: the old model (all 40 X0 at the exit momentum) is sqrt(40 / 25) = 1.26x
    too wide, times Highland's log term of 40 X0 over that of 20 X0 (1.023)."""
    p_in = 160 * u.GeV
    split, old = _tracks(N, p_in / 2), _tracks(N, p_in / 2)
    scatter_thick_across_vertex(np.random.default_rng(4), split, np.arange(N), np.full(N, 20.0), np.full(N, 112.5),
                                np.full(N, p_in), np.full(N, 20.0), np.full(N, 112.5))
    scatter_thick(np.random.default_rng(5), old, 40.0, 225.0)
    log_term = (1 + 0.038 * np.log(40.0)) / (1 + 0.038 * np.log(20.0))
    assert np.std(old.tx) / np.std(split.tx) == pytest.approx(np.sqrt(40 / 25) * log_term, abs=0.01)
