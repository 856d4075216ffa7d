"""Forced tracker noise: exact biased sampling of rare noise configurations (fake kicks).

A fake momentum kick needs in-time noise clusters on the bend-plane trackers of a
spectrometer, lined up with the true hits that are left.  At the nominal noise density such
configurations are far too rare to count, and multiplying the noise (the scan of
``benchmarks/tracking_fakes_scan.py``) changes the detector (channel sharing, efficiency)
and needs an extrapolation in the multiplier.  Forcing the noise instead keeps the detector
nominal and the estimate exact.

The tracker noise of the simulation is a Poisson process over (plane, position, time) with
intensity ``noise_hits`` per plane and event, uniform over the plane's width and its readout
window.  Take a region R of it: chosen planes, each with a time window inside its noise
window.  The process restricted to R is independent of the rest, Poisson with mean
``Lambda_R = sum_p noise_hits_p (t_last - t_first)_p / (noise window)_p`` per event, and
given its number m the m points are independent draws from R's intensity.  So for any event
quantity g (e.g. "a fake kick survives the cuts")::

    E[g] = sum_m Poisson(m; Lambda_R) G_m,    G_m = E[g | exactly m noise points in R]

A sample with ``ForcedNoise(windows, count=m)`` draws every event with the noise outside R
as usual and exactly m points in R: its mean of g estimates G_m.  The sum over m = 0..M is
exact up to ``sum_{m > M} Poisson(m; Lambda_R) max|g|``
(:func:`na64reco.background.estimates.forced_noise_ratio`); with R the
in-time windows of the few planes that make a fake, Lambda_R ~ 0.1-0.5 and a few m suffice.

The nominal simulation is unchanged (no forced noise: no extra random numbers are drawn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na64reco.config import integer_at_least
from na64reco.errors import ConfigError


@dataclass(frozen=True)
class ForcedNoise:
    """Exactly ``count`` noise clusters per event in a region R of the tracker noise.

    ``windows`` maps plane names to the (first, last) simulated time (ns, relative to the
    trigger, the frame of ``readout.apv_noise_window`` / ``straw_noise_window``) of R on that
    plane; R covers the whole width of each plane.
    """

    windows: tuple[tuple[str, float, float], ...]
    count: int

    @staticmethod
    def of(windows: dict[str, tuple[float, float]], count: int) -> ForcedNoise:
        integer_at_least(count, 0, "forced noise: count")
        if not windows:
            raise ConfigError("forced noise: no plane in the region")
        return ForcedNoise(tuple((str(k), float(a), float(b)) for k, (a, b) in sorted(windows.items())), int(count))

    def to_dict(self) -> dict:
        return {"count": self.count, "windows": {k: [a, b] for k, a, b in self.windows}}


@dataclass(frozen=True)
class ForcedRegion:
    """A :class:`ForcedNoise` resolved on a setup's plane tables (what the digitisation uses)."""

    count: int
    plane: np.ndarray  # plane indices of R
    t_first: np.ndarray  # per plane of the setup: R's window (NaN outside R)
    t_last: np.ndarray
    rate: np.ndarray  # per plane of R: mean noise clusters per event inside R

    @property
    def expected(self) -> float:
        """Lambda_R: mean number of nominal noise clusters per event in R."""
        return float(self.rate.sum())


def resolve(forced: ForcedNoise, setup, noise_hits: np.ndarray, t_first: np.ndarray,
            t_last: np.ndarray) -> ForcedRegion:
    """Check ``forced`` against the setup's planes and noise windows and resolve it."""
    by_name = {p.name: p.index for p in setup.planes}
    n = len(setup.planes)
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    idx = []
    for name, a, b in forced.windows:
        if name not in by_name:
            raise ConfigError(f"forced noise: unknown plane {name!r} in setup {setup.name!r} "
                              f"(period {setup.period!r}); planes: {', '.join(sorted(by_name))}")
        i = by_name[name]
        if not t_last[i] > t_first[i]:
            raise ConfigError(f"forced noise: plane {name} has no noise time window (its noise comes at the "
                              f"trigger time), so a time region cannot be forced")
        if not (t_first[i] <= a < b <= t_last[i]):
            raise ConfigError(f"forced noise: window [{a:g}, {b:g}] ns of plane {name} is not inside its noise "
                              f"window [{t_first[i]:g}, {t_last[i]:g}] ns")
        lo[i], hi[i] = a, b
        idx.append(i)
    plane = np.array(sorted(idx), np.int64)
    rate = noise_hits[plane] * (hi[plane] - lo[plane]) / (t_last[plane] - t_first[plane])
    if forced.count and not rate.sum() > 0:
        raise ConfigError("forced noise: the planes of the region have no noise (noise_hits = 0)")
    return ForcedRegion(forced.count, plane, lo, hi, rate)


def apply(rng: np.random.Generator, region: ForcedRegion, n_events: int, width: np.ndarray,
          plane: np.ndarray, u: np.ndarray, ev: np.ndarray, t: np.ndarray):
    """Nominal noise clusters ``(plane, u, ev, t)`` with those inside R removed and exactly
    ``region.count`` clusters per event drawn inside R (plane with probability proportional
    to its rate in R, position uniform over the plane's width, time uniform in its window)."""
    inside = np.isfinite(region.t_first[plane]) & (t >= region.t_first[plane]) & (t <= region.t_last[plane])
    keep = ~inside
    m = region.count * int(n_events)
    if m == 0:
        return plane[keep], u[keep], ev[keep], t[keep]
    cdf = np.cumsum(region.rate) / region.rate.sum()
    f_plane = region.plane[np.minimum(np.searchsorted(cdf, rng.random(m), side="right"), region.plane.size - 1)]
    f_u = (rng.random(m) - 0.5) * width[f_plane]
    f_ev = np.repeat(np.arange(n_events, dtype=np.int64), region.count)
    lo, hi = region.t_first[f_plane], region.t_last[f_plane]
    f_t = lo + (hi - lo) * rng.random(m)
    return (np.concatenate([plane[keep], f_plane]), np.concatenate([u[keep], f_u]),
            np.concatenate([ev[keep], f_ev]), np.concatenate([t[keep], f_t]))
