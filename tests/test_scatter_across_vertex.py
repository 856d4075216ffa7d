"""Scattering in the ECAL of a muon whose momentum drops at a vertex inside it (a signal or trident
vertex, na64reco.sim.tracks.scatter_thick_across_vertex): the exit angle and position spreads against
their closed forms, the whole-scatterer limit, and the signal's exit angle against the old
whole-ECAL-at-the-exit-momentum model (1.26x too wide at a vertex half way with x = 0.5), and the
ECAL's use of it and of the losses in front of and behind a vertex (transport._ecal_scattering,
transport._discrete_losses)."""

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
    # Highland's log term of the whole scatterer for both parts
    th1 = highland(p1, constants.MUON_MASS, x1 + x2) * np.sqrt(x1 / (x1 + x2))
    th2 = highland(p2, constants.MUON_MASS, x1 + x2) * np.sqrt(x2 / (x1 + x2))
    var_t = th1**2 + th2**2
    var_x = th1**2 * (l1**2 / 3 + l1 * l2 + l2**2) + th2**2 * l2**2 / 3
    cov = th1**2 * (l1 / 2 + l2) + th2**2 * l2 / 2
    for pos, slope in ((tr.x, tr.tx), (tr.y, tr.ty)):
        assert np.var(slope) == pytest.approx(var_t, rel=_var_tol(N))
        assert np.var(pos) == pytest.approx(var_x, rel=_var_tol(N))
        assert np.cov(pos, slope)[0, 1] == pytest.approx(cov, rel=3 * _var_tol(N))
    assert abs(np.corrcoef(tr.x, tr.y)[0, 1]) < 5 / np.sqrt(N)


def test_one_momentum_is_the_whole_scatterer():
    """At one momentum the two parts make the whole scatterer (the same log term): spreads equal
    to the statistics of two samples."""
    p, x, length = 160 * u.GeV, 40.0, 225.0
    split, whole = _tracks(N, p), _tracks(N, p)
    scatter_thick_across_vertex(np.random.default_rng(2), split, np.arange(N), np.full(N, x * 0.3),
                                np.full(N, length * 0.3), np.full(N, p), np.full(N, x * 0.7), np.full(N, length * 0.7))
    scatter_thick(np.random.default_rng(3), whole, x, length)
    tol = 5 * np.sqrt(1.0 / N)  # the ratio of two sample standard deviations, 5 sigma
    assert np.std(split.tx) / np.std(whole.tx) == pytest.approx(1.0, abs=tol)
    assert np.std(split.x) / np.std(whole.x) == pytest.approx(1.0, abs=tol)


def test_the_old_model_overestimated_the_signal_angle():
    """x = 0.5, vertex half way: the old model (all 40 X0 at the exit momentum) is sqrt(40 / 25) = 1.26x
    too wide."""
    p_in = 160 * u.GeV
    split, old = _tracks(N, p_in / 2), _tracks(N, p_in / 2)
    scatter_thick_across_vertex(np.random.default_rng(4), split, np.arange(N), np.full(N, 20.0), np.full(N, 112.5),
                                np.full(N, p_in), np.full(N, 20.0), np.full(N, 112.5))
    scatter_thick(np.random.default_rng(5), old, 40.0, 225.0)
    assert np.std(old.tx) / np.std(split.tx) == pytest.approx(np.sqrt(40 / 25), abs=0.01)


def test_the_ecal_scatters_a_vertex_muon_once_split_and_the_others_whole():
    """transport._ecal_scattering: the tracks with a vertex get the split spreads (front part at the
    momentum before), once; the others the whole scatterer; the dead ones nothing."""
    from na64reco.sim.transport import _ecal_scattering

    x0, length, p_in, p_out = 40.0, 225.0, 160 * u.GeV, 40 * u.GeV
    tr = _tracks(N, p_out)
    live = np.ones(N, bool)
    live[-1000:] = False
    j = np.arange(N // 2)
    across = (j, np.full(j.size, 0.3), np.full(j.size, 0.3 * length), np.full(j.size, p_in))  # vertex at 30 %
    _ecal_scattering(np.random.default_rng(6), tr, x0, length, live, across)
    m = constants.MUON_MASS
    split_var = 0.3 * highland(p_in, m, x0) ** 2 + 0.7 * highland(p_out, m, x0) ** 2  # 5.5x the swapped parts
    whole_var = highland(p_out, m, x0) ** 2
    n = j.size
    assert np.var(tr.tx[j]) == pytest.approx(split_var, rel=_var_tol(n))
    rest = np.arange(N // 2, N - 1000)
    assert np.var(tr.tx[rest]) == pytest.approx(whole_var, rel=_var_tol(rest.size))
    assert not np.any(tr.tx[-1000:]) and not np.any(tr.x[-1000:])


def test_losses_in_front_of_and_behind_a_vertex():
    """transport._discrete_losses: a vertex muon's losses in front of its vertex are drawn at and
    counted in its energy before it, those behind at its energy after; a muon without a vertex (here
    one whose energy a leading hadron lowered: p_front != p_back) all at its energy now, whatever
    else is in the batch."""
    from types import SimpleNamespace

    from na64reco.sim.interactions import MuonLosses
    from na64reco.sim.transport import _discrete_losses

    losses = MuonLosses("lead", 254.8, 5e-3, 160 * u.GeV)
    ctx = SimpleNamespace(params=SimpleNamespace(ecal_losses=losses), rng=np.random.default_rng(7))
    n = 200_000
    p_front = np.full(n, 160 * u.GeV)
    p_back = np.full(n, 40 * u.GeV)
    f_vertex = np.ones(n)
    f_vertex[: n // 2] = 0.3  # the first half has a vertex at 30 % of the depth
    k, v, depth, e_at = _discrete_losses(ctx, n, p_front, p_back, f_vertex)
    vtx = k < n // 2
    front = vtx & (depth < 0.3)
    assert np.all(e_at[front] == 160 * u.GeV) and np.all(e_at[~front] == 40 * u.GeV)
    assert np.all(depth[vtx & ~front] >= 0.3) and np.all((depth >= 0) & (depth <= 1))
    for sel, expected in ((front, 0.3 * losses.table(160 * u.GeV).mean_number(5e-3)),
                          (vtx & ~front, 0.7 * losses.table(40 * u.GeV).mean_number(5e-3)),
                          (~vtx, losses.table(40 * u.GeV).mean_number(5e-3))):
        mean = expected * n / 2
        assert int(sel.sum()) == pytest.approx(mean, abs=5 * np.sqrt(mean))


def test_a_trident_pair_loses_energy_behind_its_vertex():
    """transport._pair_losses: a trident's muons draw the ECAL's discrete losses over the depth behind
    their vertex at their own energy (Poisson mean: the X0 fraction behind x the table's number, 5 sigma),
    and the ECAL records their showers (the energy lost, to the calorimeter's resolution and containment)."""
    from na64reco.geometry import load_setup
    from na64reco.sim.params import load_sim_params
    from na64reco.sim.tracks import Recorder
    from na64reco.sim.transport import Context, Truth, _pair_losses

    setup = load_setup("na64mu")
    params = load_sim_params(setup)
    det = setup.detector("ECAL")
    n = 100_000
    ctx = Context(np.random.default_rng(8), setup, params, Recorder(n), Truth.new(n))
    zeros = np.zeros(n)
    p = np.full(n, 50 * u.GeV)
    f = np.full(n, 0.25)
    lost = _pair_losses(ctx, det, np.arange(n), zeros, zeros, zeros, zeros, zeros, np.full(n, 0.25 * det.depth), f, p)
    table = params.ecal_losses.table(50 * u.GeV)
    expected = 0.75 * n * table.mean_number(params.radiative_v_min)
    n_lossy = np.count_nonzero(lost)
    mean_per_lossy = expected / n / (1 - np.exp(-expected / n))  # losses per muon with >= 1 (Poisson)
    assert n_lossy * mean_per_lossy == pytest.approx(expected, abs=5 * np.sqrt(expected))
    assert np.all(lost[lost > 0] >= params.radiative_v_min * 50 * u.GeV)
    deposited = ctx.rec.deposits()[3].sum()
    assert deposited == pytest.approx(lost.sum(), rel=0.05)


def test_a_trident_pair_is_scattered_behind_its_vertex(monkeypatch):
    """The pair's slopes at the ECAL's exit, relative to the primary's, in units of the pair's opening
    angle m / p: variance 1 from the opening alone, plus (13.6 MeV sqrt(x) (1 + 0.038 ln x) / m)^2 from the
    scattering over the x radiation lengths behind the vertex (independent of p).  The trident kinematics
    are a stand-in here (the transport's wiring is under test, not the trident model of
    ``test_tridents.py``): v from 1/v on [0.02, 0.6], the pair's share uniform in 0.1-0.9, each muon at a
    Gaussian angle of sigma m / p from the primary, no recoil (the toy the simulator had until stop 43)."""
    from na64reco.sim import tridents

    def stand_in(rng, p, e0, params, biased):
        k = p.size
        v = np.exp(rng.uniform(np.log(0.02), np.log(0.6), k))
        share = rng.uniform(0.1, 0.9, k)
        legs = []
        for frac in (share, 1.0 - share):
            e = v * p * frac
            th = constants.MUON_MASS / e * rng.standard_normal((2, k))
            legs.append((e, th[0], th[1]))
        return v, legs, (np.zeros(k), np.zeros(k)), np.ones(k)

    monkeypatch.setattr(tridents, "draw", stand_in)
    from na64reco.geometry import load_setup
    from na64reco.io.raw import PROCESSES
    from na64reco.sim.beam import sample_beam
    from na64reco.sim.params import load_sim_params
    from na64reco.sim.tracks import ROLE_SECONDARY, Recorder
    from na64reco.sim.transport import Context, Truth, _ecal_sections, _x0_of_mm, follow

    setup = load_setup("na64mu")
    params = load_sim_params(setup)
    det = setup.detector("ECAL")
    n = 40_000
    rng = np.random.default_rng(9)
    tracks = sample_beam(rng, setup, np.arange(n), np.full(n, PROCESSES["dimuon"], np.int8))
    truth = Truth.new(n)
    out = follow(Context(rng, setup, params, Recorder(n), truth), tracks, last_z=det.z)
    prim = np.full(n, np.nan)
    is_prim = (out.role == ROLE_PRIMARY) & (out.kind == KIND_MUON)
    prim[out.ev[is_prim]] = out.tx[is_prim]
    sec = np.flatnonzero((out.role == ROLE_SECONDARY) & np.isfinite(prim[out.ev]) & out.alive)
    r = (out.tx[sec] - prim[out.ev[sec]]) * out.p[sec] / constants.MUON_MASS
    total_x0 = float(_ecal_sections(det)[1].sum())
    x_rest = total_x0 - _x0_of_mm(det, truth.vertex_z[out.ev[sec]] - det.z)
    s2 = np.where(x_rest > 0, (13.6 * np.sqrt(x_rest) * (1 + 0.038 * np.log(np.maximum(x_rest, 1e-9)))
                               / constants.MUON_MASS) ** 2, 0.0)
    assert float(np.mean(s2)) > 0.2  # the scattering is a visible part of the spread
    # per muon N(0, 1 + s2): the robust width (MAD; the primary's rare large-angle kinks make tails) of
    # r / sqrt(1 + s2) is 1, 0.97 as the pair's losses lower p a little (0.79 without the scattering)
    z = r / np.sqrt(1.0 + s2)
    width = 1.4826 * float(np.median(np.abs(z - np.median(z))))
    assert width == pytest.approx(0.97, abs=0.02)
