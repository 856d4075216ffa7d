"""Natural single large-angle scattering of the primary muon (na64reco.sim.hard_scatter)."""

from __future__ import annotations

import numpy as np
import pytest

from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES
from na64reco.physics import single_scatter as xs
from na64reco.sim import hard_scatter as hs
from na64reco.sim import material_path as mp
from na64reco.sim import transport as tp
from na64reco.sim.beam import sample_beam
from na64reco.sim.params import load_sim_params
from na64reco.sim.tracks import Recorder

SETUP = load_setup("na64mu", run=1)
PARAMS = load_sim_params(SETUP)


def test_plan_rates_are_the_cross_section_above_each_cut():
    pl = hs.plan(SETUP, PARAMS)
    assert pl is not None and 1e-3 < pl.total < 1e-2
    # thin pieces at the floor, the ECAL above 4 Highland widths of its 40 X0 (~0.39 GeV)
    ecal = [i for i, n in enumerate(pl.names) if n.startswith("ECAL")]
    assert pl.q_cut[ecal].min() == pytest.approx(4 * 13.6 * np.sqrt(40) * (1 + 0.038 * np.log(40)), rel=1e-3)
    thin = [i for i, n in enumerate(pl.names) if not n.startswith("ECAL")]
    assert np.all(pl.q_cut[thin] == PARAMS.hard_scatter_q_floor)
    for i in (ecal[0], thin[0], thin[-1]):
        slab = next(s for s in mp.path_elements(SETUP) if s.name == pl.names[i])
        want = xs.probability_above_q(slab.material, slab.x_over_x0, [pl.q_cut[i]])[0]
        assert pl.prob[i] == pytest.approx(want, rel=1e-9)
    # a setup without the entry (or without an outgoing station) has none
    assert hs.plan(load_setup("na64e"), load_sim_params(load_setup("na64e"))) is None


def test_draws_follow_the_plan():
    """Poisson count per muon with mean W, pieces in proportion to their rates, q from the
    piece's distribution: P(q > 2 q_cut | q > q_cut) against the cross section."""
    pl = hs.plan(SETUP, PARAMS)
    n = 2_000_000
    k = hs.draw(np.random.default_rng(3), pl, n)
    expected = pl.total * n
    assert abs(k.ev.size - expected) < 5 * np.sqrt(expected)
    gas = np.array(["air" in pl.names[i] or "helium" in pl.names[i] for i in range(pl.prob.size)])
    in_gas = gas[k.piece]
    assert np.all((k.z >= pl.z0[k.piece]) & (k.z <= pl.z1[k.piece]))
    p_gas = pl.prob[gas].sum() / pl.total
    assert abs(in_gas.mean() - p_gas) < 5 * np.sqrt(p_gas * (1 - p_gas) / k.ev.size)
    floor = PARAMS.hard_scatter_q_floor
    thin = k.q < 300  # below every thick cut: the floor's pieces
    frac = np.mean(k.q[thin] > 2 * floor)
    air = xs.probability_above_q("air", 1.0, [floor, 2 * floor])
    assert frac == pytest.approx(air[1] / air[0], abs=0.03)  # mixture of materials: ~air


def _transport(kinks, n=3000, seed=21):
    rng = np.random.default_rng(seed)
    proc = np.full(n, PROCESSES["beam"], np.int8)
    rec = Recorder(n)
    ctx = tp.Context(rng, SETUP, PARAMS, rec, tp.Truth.new(n), hard_kinks=kinks)
    out = tp.follow(ctx, sample_beam(rng, SETUP, np.arange(n, dtype=np.int64), proc))
    return rec.hits(), out, rng.random()


@pytest.mark.parametrize("in_ecal", [False, True])
def test_a_kink_moves_only_its_muon_by_theta_times_the_lever_arm(in_ecal):
    """Kinks in the MS2 gap (before and after the magnet) or in the ECAL: the tracker crossings
    of every other muon are unchanged bit for bit (the kinks draw from their own stream, and no
    counter or cell is crossed differently before the last plane), and the kinked muons'
    crossings downstream of a gap kink move by exactly theta (z - z_k), one theta = q / p with p
    the muon's momentum there."""
    if in_ecal:
        ev, z, q, phi = np.array([40]), np.array([18700.0]), np.array([800.0]), np.array([np.pi])
    else:
        ev, z, q, phi = np.array([5, 17]), np.array([23000.0, 24700.0]), np.array([400.0, 300.0]), np.array([0, 1.0])
    kinks = hs.Kinks(ev, z, q, phi)
    (e0, p0, c0, _), out0, _ = _transport(None)
    (e1, p1, c1, _), out1, _ = _transport(kinks)
    assert np.array_equal(e0, e1) and np.array_equal(p0, p1)
    moved = np.isin(e0, ev)
    assert np.array_equal(c0[~moved], c1[~moved])
    z_plane = np.array([pl.z for pl in SETUP.planes])[p0]
    x_plane = np.array([pl.measures == "x" for pl in SETUP.planes])[p0]
    mu = {int(e): i for i, e in enumerate(out0.ev) if e in ev and out0.role[i] == 0}
    for j, e in enumerate(ev):
        sel = e0 == e
        shift = c1[sel] - c0[sel]
        up = z_plane[sel] < z[j]
        lever = z_plane[sel][~up] - z[j]
        proj = np.where(x_plane[sel][~up], np.cos(phi[j]), np.sin(phi[j]))
        ok = np.abs(proj) > 0.1
        assert np.all(np.abs(shift[up]) < 1e-9) and np.all(np.abs(shift[~up][ok]) > 0)  # taken back: rounding
        if z[j] > 20000:  # in the gap: theta x the lever arm exactly, one theta for all planes
            theta = shift[~up][ok] / (proj[ok] * lever[ok])
            np.testing.assert_allclose(theta, theta[0], rtol=1e-6)
            # q / theta is the muon's momentum there: below the beam's, above its final one
            assert out1.p[mu[int(e)]] <= q[j] / theta[0] < 1.1 * SETUP.beam.energy
        else:  # in the ECAL: the offset grows with the lever arm from the ECAL's back face
            xs = shift[~up][x_plane[sel][~up]]
            assert np.all(np.sign(xs) == np.sign(np.cos(phi[j])))


def test_a_spill_without_a_kink_is_unchanged(tmp_path):
    """A whole simulation with and without the natural scatters, in spills of 500 beam particles
    (~1.5 scatters each): the spills that drew none are the same bit for bit (the scatters have
    their own random stream); the others may differ from the first kinked muon on."""
    import uproot

    from na64reco.sim.generate import simulate

    per, n = 500, 12000
    rows = {}
    for flag in (True, False):
        path = tmp_path / f"k{flag}.root"
        simulate("na64mu", n, 7, 1001, path, process="beam", trigger="calibration", hard_scatter=flag,
                 spill_particles=per)
        rows[flag] = uproot.open(path)["events"].arrays(library="ak").to_list()
    setup = load_setup("na64mu", run=1001)
    clean = {s + 1 for s in range(n // per) if hs.spill_kinks(7, s, setup, PARAMS, per).ev.size == 0}
    assert 0 < len(clean) < n // per
    by_spill = {flag: {} for flag in rows}
    for flag, events in rows.items():
        for e in events:
            by_spill[flag].setdefault(e["spill"], []).append(e)
    for s in clean:
        assert by_spill[True][s] == by_spill[False][s], s
    assert any(by_spill[True][s] != by_spill[False][s] for s in by_spill[True] if s not in clean)


@pytest.mark.parametrize("entry, message", [
    ("single_scatter: {q_floor: 20, core_sigmas: 4}", "q_floor"),
    ("single_scatter: {q_floor: 20 MeV, core_sigmas: 1}", "core_sigmas"),
    ("single_scatter: {core_sigmas: 4}", "q_floor"),
])
def test_a_bad_single_scatter_entry_names_the_key(tmp_path, entry, message):
    from na64reco.errors import ConfigError
    from na64reco.geometry import setup_path

    text = setup_path("na64mu").read_text()
    good = "single_scatter: {q_floor: 20 MeV, core_sigmas: 4}"
    assert good in text
    path = tmp_path / "na64mu.yaml"
    path.write_text(text.replace(good, entry))
    with pytest.raises(ConfigError, match=message) as err:
        load_sim_params(load_setup(str(path), run=1))
    assert "single_scatter" in str(err.value)
