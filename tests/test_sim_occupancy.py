"""Out-of-time beam muons in the trackers (na64reco.sim.occupancy) against closed forms."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from na64reco.geometry import load_setup
from na64reco.sim.occupancy import beam_pileup_hits, expected_per_event, pileup_times
from na64reco.sim.params import load_sim_params


def test_expected_number_is_rate_times_the_window_without_the_in_time_part():
    setup = load_setup("na64mu", run=1)
    lo, hi = setup.readout.beam_pileup_window
    w = setup.beam.pileup_window
    rate = setup.beam.particles_per_spill / setup.beam.spill_duration
    assert expected_per_event(setup) == rate * ((hi - lo) - w)  # the +-w/2 window lies inside
    assert math.isclose(expected_per_event(setup), 5e6 / 4.8e9 * 420, rel_tol=1e-12)  # 0.4375
    assert expected_per_event(load_setup("na64e")) == 0.0  # no window: none simulated
    off = dataclasses.replace(setup, readout=dataclasses.replace(setup.readout, beam_pileup_window=(0.0, 0.0)))
    assert expected_per_event(off) == 0.0
    assert all(a.size == 0 for a in beam_pileup_hits(np.random.default_rng(1), off, load_sim_params(off, None), 100))


def test_times_are_uniform_outside_the_in_time_window():
    t = pileup_times(np.random.default_rng(2), 200000, (-150.0, 300.0), 30.0)
    assert t.min() >= -150 and t.max() <= 300 and not np.any((t > -15) & (t < 15))
    n_before = np.mean(t < -15)  # 135 of the 420 ns
    assert abs(n_before - 135 / 420) < 5 * math.sqrt(135 / 420 * 285 / 420 / t.size)


def test_muons_cross_every_plane_near_the_beam_at_the_expected_rate():
    setup = load_setup("na64mu", run=1)
    n = 20000
    ev, plane, coord, t = beam_pileup_hits(np.random.default_rng(3), setup, load_sim_params(setup, None), n)
    mean = expected_per_event(setup)
    mm6 = next(p for p in setup.planes if p.name == "MM6X")
    on = plane == mm6.index
    k = int(on.sum())  # every beam muon crosses MM6X (before its acceptance cut in digitisation)
    assert abs(k - mean * n) < 5 * math.sqrt(mean * n)
    assert np.all((t[on] >= -150) & (t[on] <= 300)) and not np.any(np.abs(t[on]) < 15)
    assert np.std(coord[on]) < 30.0  # beam muons: near the axis, not spread over the plane
