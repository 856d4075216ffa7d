"""Time windows of the tracker readout (na64reco.calibration.readout_times) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from na64reco.calibration import readout_times as rt
from na64reco.geometry import load_setup


def test_segment_algebra():
    assert rt.union([(5.0, 7.0), (0.0, 2.0), (1.0, 3.0), (3.0, 4.0)]) == [(0.0, 4.0), (5.0, 7.0)]
    assert rt.intersect([(0.0, 4.0), (5.0, 7.0)], (3.0, 6.0)) == [(3.0, 4.0), (5.0, 6.0)]
    assert rt.intersect([(0.0, 1.0)], (2.0, 3.0)) == []
    assert rt.segments_length([(0.0, 4.0), (5.0, 7.0), (3.0, 2.0)]) == 6.0


def test_pileup_time_segments_exclude_the_in_time_window():
    setup = load_setup("na64mu", run=1)
    lo, hi = setup.readout.beam_pileup_window
    half = setup.beam.pileup_window / 2
    segs = rt.pileup_time_segments(setup)
    assert segs == [(lo, -half), (half, hi)]
    assert rt.segments_length(segs) == pytest.approx(hi - lo - 2 * half)


def test_uniform_sum_cdf_closed_form():
    # t uniform in [0, 10], u uniform in [0, 2]: P(t + u <= x) is a trapezoid's integral
    def exact(x):
        if x <= 0:
            return 0.0
        if x <= 2:
            return x * x / 40.0
        if x <= 10:
            return (x - 1.0) / 10.0
        if x <= 12:
            return 1.0 - (12.0 - x) ** 2 / 40.0
        return 1.0
    for x in (-1.0, 1.0, 2.0, 5.5, 10.0, 11.0, 13.0):
        assert rt._uniform_sum_cdf(x, 0.0, 10.0, 2.0) == pytest.approx(exact(x), abs=1e-6)


def test_straw_fractions_against_monte_carlo():
    setup = load_setup("na64mu", run=1)
    straw = next(p for p in setup.planes if p.type == "straw")
    tau = 0.5 * straw.pitch / setup.readout.straw_drift_velocity
    rng = np.random.default_rng(5)
    lo, hi = setup.readout.straw_noise_window
    t = rng.uniform(lo, hi, 400_000) + rng.uniform(0.0, tau, 400_000)
    frac = np.mean((t >= 0.0) & (t <= rt.STRAW_SLICE_NS))
    err = np.sqrt(frac * (1 - frac) / t.size)
    assert rt.straw_slice_fraction(setup, straw) == pytest.approx(frac, abs=5 * err + 1e-4)
    # pile-up muons at uniform times of the pile-up segments, seen when time + drift is in [0, end + tau]
    segs = rt.pileup_time_segments(setup)
    lengths = np.array([b - a for a, b in segs])
    k = rng.choice(len(segs), 400_000, p=lengths / lengths.sum())
    tp = np.array([a for a, _ in segs])[k] + rng.random(k.size) * lengths[k] + rng.uniform(0.0, tau, k.size)
    seen = np.mean((tp >= 0.0) & (tp <= setup.readout.straw_noise_window[1] + tau))
    err = np.sqrt(seen * (1 - seen) / k.size)
    assert rt.straw_visible_time(setup, straw) / lengths.sum() == pytest.approx(seen, abs=5 * err + 1e-4)
