"""Tracker occupancy from the beam itself: other beam muons within the trackers' readout windows.

At a muon beam of ~1e6 particles per second the APV trackers (a readout window of a few
hundred ns) and the straw TDCs see, besides the triggering muon, the beam muons that cross
them shortly before or after it: ~0.2-0.5 per event at 5e6 muons per 4.8 s spill.  They are
*tracks*, i.e. correlated hits on every plane they cross, mostly out of time; an uncorrelated
noise model at the same occupancy lines up hits that real pile-up never provides (the fake
kicks of ``docs/periods.md``).  This module simulates them as what they are:

* times uniform in ``trackers.beam_pileup_window`` (setup) minus the in-time window
  ``beam.pileup_window`` around the trigger, whose muons the ``pileup`` process of the
  mixture already transports through the whole detector;
* number Poisson with mean ``rate x duration`` per written event, the rate being
  ``beam.particles_per_spill / beam.spill_duration``;
* beam kinematics (spot, divergence, momentum spread) and the full transport (multiple
  scattering, magnets), recording only their tracker crossings: their calorimeter and
  counter signals are outside the coincidence and integration windows (an approximation for
  the few within a couple of MSADC samples of the window's edge).

The uncorrelated noise clusters of the setup (``noise_hits``) are then the remaining
sources (delta rays, conversions, electronics) at a much lower rate.
"""

from __future__ import annotations

import numpy as np

from na64reco.io.raw import PROCESSES
from na64reco.sim.beam import sample_beam
from na64reco.sim.tracks import ROLE_PILEUP, Recorder
from na64reco.sim.transport import Context, Truth, follow


def _gap(window: tuple[float, float], in_time: float) -> tuple[float, float]:
    """The part ``[a, a + gap)`` of ``window`` inside ``[-in_time / 2, in_time / 2]``."""
    a = max(window[0], -in_time / 2)
    return a, max(min(window[1], in_time / 2) - a, 0.0)


def pileup_times(rng: np.random.Generator, n: int, window: tuple[float, float], in_time: float) -> np.ndarray:
    """``n`` times uniform over ``window`` without ``[-in_time / 2, in_time / 2]``."""
    a, gap = _gap(window, in_time)
    x = window[0] + rng.random(n) * (window[1] - window[0] - gap)
    return np.where(x < a, x, x + gap) if gap > 0 else x


def expected_per_event(setup) -> float:
    """Mean number of out-of-time beam muons per event crossing the trackers."""
    lo, hi = setup.readout.beam_pileup_window
    if not hi > lo:
        return 0.0
    rate = setup.beam.particles_per_spill / setup.beam.spill_duration  # per ns (hepunits time: ns)
    return float(rate * (hi - lo - _gap((lo, hi), setup.beam.pileup_window)[1]))


def beam_pileup_hits(rng: np.random.Generator, setup, params, n_events: int):
    """Tracker crossings ``(ev, plane, coord, t)`` of the out-of-time beam muons of
    ``n_events`` events (event indices 0..n_events-1); empty if the setup has no window."""
    mean = expected_per_event(setup)
    if mean <= 0 or n_events == 0:
        return Recorder(n_events).hits()
    n = int(rng.poisson(mean * n_events))
    ev = np.sort(rng.integers(0, n_events, n))
    t = pileup_times(rng, n, setup.readout.beam_pileup_window, setup.beam.pileup_window)
    tracks = sample_beam(rng, setup, ev, np.full(n, PROCESSES["beam"], np.int8), role=ROLE_PILEUP, t=t)
    rec = Recorder(n_events)
    follow(Context(rng, setup, params, rec, Truth.new(n_events)), tracks)
    return rec.hits()
