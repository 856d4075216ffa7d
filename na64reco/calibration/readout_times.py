"""Time windows of the tracker readout that the calibration of beam runs counts in.

A beam pile-up muon is uniform in time over ``trackers.beam_pileup_window`` without the
in-time window; a plane sees it when its digit falls in the plane's readout window (the APV
noise window, or the straw TDC range, where the muon's time adds a drift time uniform in
[0, pitch / 2 / v]).  Time sets are lists of disjoint ``(start, end)`` segments in ns.
"""

from __future__ import annotations

import numpy as np

#: straw digits counted: TDC times 0 .. this (ns), i.e. muons within [-max drift, this] of the
#: trigger, well inside the APV window: the APV segments measure their pairing (the straw's
#: noise is then scaled from this slice to its whole TDC window)
STRAW_SLICE_NS = 60.0
#: points of the midpoint rule in the time integrals below
_GRID = 4000


def segments_length(segs) -> float:
    """Total length of a list of segments (empty ones count 0)."""
    return float(sum(max(b - a, 0.0) for a, b in segs))


def intersect(segs, window):
    """The non-empty parts of ``segs`` inside ``window``."""
    return [(max(a, window[0]), min(b, window[1])) for a, b in segs if min(b, window[1]) > max(a, window[0])]


def union(segs):
    """Overlapping or touching segments merged, sorted by start."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(segs):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def pileup_time_segments(setup) -> list[tuple[float, float]]:
    """The out-of-time pile-up times: ``trackers.beam_pileup_window`` without the in-time window."""
    lo, hi = setup.readout.beam_pileup_window
    half = setup.beam.pileup_window / 2
    return [(a, b) for a, b in ((lo, min(hi, -half)), (max(lo, half), hi)) if b > a]


def readout_window(setup, plane) -> tuple[float, float]:
    """The times (ns) at which a muon leaves a digit on ``plane``: straw TDC or APV noise window."""
    return setup.readout.straw_noise_window if plane.type == "straw" else setup.readout.apv_noise_window


def _uniform_sum_cdf(x: float, lo: float, hi: float, tau: float) -> float:
    """P(t + u <= x) for t uniform in [lo, hi] and u uniform in [0, tau] (both > 0 wide)."""
    grid = lo + (np.arange(_GRID) + 0.5) / _GRID * (hi - lo)
    return float(np.clip((x - grid) / tau, 0.0, 1.0).mean())


def straw_slice_fraction(setup, plane) -> float:
    """Fraction of a straw plane's noise digits with a TDC time in [0, STRAW_SLICE_NS]: noise at
    times uniform in ``straw_noise_window`` plus a drift time uniform in [0, pitch / 2 / v]."""
    lo, hi = setup.readout.straw_noise_window
    tau = 0.5 * plane.pitch / setup.readout.straw_drift_velocity
    return _uniform_sum_cdf(STRAW_SLICE_NS, lo, hi, tau) - _uniform_sum_cdf(0.0, lo, hi, tau)


def straw_visible_time(setup, plane) -> float:
    """Length (ns) of pile-up times a straw plane reads: muon time plus drift time inside the
    TDC range [0, window end + max drift] (the digitisation's), integrated over the pile-up times."""
    tau = 0.5 * plane.pitch / setup.readout.straw_drift_velocity
    last = setup.readout.straw_noise_window[1] + tau
    total = 0.0
    for a, b in pileup_time_segments(setup):
        t = a + (np.arange(_GRID) + 0.5) / _GRID * (b - a)
        seen = np.clip((last - t) / tau, 0.0, 1.0) - np.clip((0.0 - t) / tau, 0.0, 1.0)
        total += float(seen.mean()) * (b - a)
    return total
