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
  scattering, magnets) up to the last tracker plane, recording only their tracker
  crossings: the calorimeter and counter signals of a MIP are left out (most are outside the
  coincidence and integration windows; one inside them adds a MIP, ~0.4 GeV to the ECAL: an
  approximation).  That does not hold for a muon *forced soft*
  (:mod:`na64reco.sim.forced_soft`): its radiative loss puts 40-130 GeV into the ECAL at its
  time, inside the MSADC readout window, so the deposits its transport records (the shower and
  the MIP in the ECAL cells it crosses, the upstream counters, VETO, VHCAL) are merged into the
  event's digits (:func:`soft_deposits`, ``simulate(forced_soft=)`` only); its HCAL and S4/Smu
  MIPs behind the last tracker are still left out.  Before 2026-11-29 (issue 11, fifth
  pass) they were transported through the HCAL and the counters behind it too: the same
  crossings from the same random numbers, but the spill's later stages then read the stream
  from another position (other realisations, the same distributions).

The uncorrelated noise clusters of the setup (``noise_hits``) are then the remaining
sources (delta rays, conversions, electronics) at a much lower rate.

Forced pile-up (:class:`ForcedPileup`): exact biased sampling of these muons, as
:mod:`na64reco.sim.forced_noise` does for the noise.  Their times are a Poisson process; the
part inside a "near" set of times N (those whose hits can pass the track search's hit-time
cut) is independent of the rest, Poisson with mean ``lambda_N = rate x |N|`` per event, and
given its number k the k times are uniform in N.  So for any event quantity g::

    E[g] = sum_k Poisson(k; lambda_N) G_k,    G_k = E[g | exactly k muons in N]

A sample with ``ForcedPileup.of(N, k)`` draws the muons outside N as usual and exactly k in N
(uniform times, the same beam kinematics and transport): its mean of g estimates G_k.  The
two forced processes (noise, pile-up) are independent, so with both forced
``E[g] = sum_{m,k} Poisson(m; Lambda_R) Poisson(k; lambda_N) G_{m,k}``
(:func:`na64reco.background.estimates.forced_noise_ratio`).  Without forcing nothing changes (the same
random numbers are drawn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hepunits import GeV

from na64reco.config import integer_at_least
from na64reco.errors import ConfigError
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


@dataclass(frozen=True)
class ForcedPileup:
    """Exactly ``count`` out-of-time beam muons per event with times in ``near`` (N: a union of
    time intervals in ns relative to the trigger, inside ``trackers.beam_pileup_window``; the
    in-time window ``beam.pileup_window`` of the mixture's ``pileup`` process is taken out of
    it), the muons at other times nominal."""

    near: tuple[tuple[float, float], ...]
    count: int

    @staticmethod
    def of(near, count: int) -> ForcedPileup:
        integer_at_least(count, 0, "forced pile-up: count")
        near = tuple((float(a), float(b)) for a, b in near)
        if not near or any(not b > a for a, b in near):
            raise ConfigError(f"forced pile-up: near times must be intervals (first < last) ns, got {list(near)}")
        return ForcedPileup(tuple(sorted(near)), int(count))

    def to_dict(self) -> dict:
        return {"count": self.count, "near": [list(x) for x in self.near]}


def _minus(segments: list[tuple[float, float]], cut: tuple[float, float]) -> list[tuple[float, float]]:
    out = []
    for a, b in segments:
        for x, y in ((a, min(b, cut[0])), (max(a, cut[1]), b)):
            if y > x:
                out.append((x, y))
    return out


def near_segments(setup, forced: ForcedPileup) -> list[tuple[float, float]]:
    """N resolved on the setup: disjoint intervals inside the window, without the in-time window."""
    lo, hi = setup.readout.beam_pileup_window
    if not hi > lo:
        raise ConfigError(f"forced pile-up: setup {setup.name!r} has no trackers.beam_pileup_window")
    segs: list[tuple[float, float]] = []
    for a, b in forced.near:
        if not (lo <= a and b <= hi):
            raise ConfigError(f"forced pile-up: near interval [{a:g}, {b:g}] ns is not inside "
                              f"trackers.beam_pileup_window [{lo:g}, {hi:g}] ns")
        for x, y in _minus([(a, b)], (-setup.beam.pileup_window / 2, setup.beam.pileup_window / 2)):
            segs = _minus(segs, (x, y)) + [(x, y)]  # union, kept disjoint
    if not segs:
        raise ConfigError(f"forced pile-up: near times {list(forced.near)} lie inside the in-time window")
    return sorted(segs)


def far_segments(setup, near: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The window without the in-time window and without N."""
    segs = [tuple(setup.readout.beam_pileup_window)]
    for cut in [(-setup.beam.pileup_window / 2, setup.beam.pileup_window / 2), *near]:
        segs = _minus(segs, cut)
    return segs


def _rate(setup) -> float:
    return setup.beam.particles_per_spill / setup.beam.spill_duration  # per ns (hepunits time: ns)


def _length(segs) -> float:
    return float(sum(b - a for a, b in segs))


def expected_near(setup, forced: ForcedPileup) -> float:
    """lambda_N: mean number of out-of-time beam muons per event in N (nominal)."""
    return float(_rate(setup) * _length(near_segments(setup, forced)))


def _uniform_on(rng: np.random.Generator, n: int, segs) -> np.ndarray:
    """``n`` times uniform over the disjoint intervals ``segs`` (one random number each)."""
    lengths = np.array([b - a for a, b in segs])
    edges = np.concatenate([[0.0], np.cumsum(lengths)])
    x = rng.random(n) * edges[-1]
    i = np.minimum(np.searchsorted(edges, x, side="right") - 1, len(segs) - 1)
    return np.array([a for a, _ in segs])[i] + (x - edges[i])


def pileup_muons(rng: np.random.Generator, setup, n_events: int, forced: ForcedPileup | None = None):
    """Event index (sorted) and time of the out-of-time beam muons of ``n_events`` events."""
    if forced is None:
        n = int(rng.poisson(expected_per_event(setup) * n_events))
        ev = np.sort(rng.integers(0, n_events, n))
        return ev, pileup_times(rng, n, setup.readout.beam_pileup_window, setup.beam.pileup_window)
    near = near_segments(setup, forced)
    far = far_segments(setup, near)
    n = int(rng.poisson(_rate(setup) * _length(far) * n_events))
    ev = np.concatenate([rng.integers(0, n_events, n), np.repeat(np.arange(n_events, dtype=np.int64), forced.count)])
    t = np.concatenate([_uniform_on(rng, n, far), _uniform_on(rng, forced.count * n_events, near)])
    order = np.argsort(ev, kind="stable")
    return ev[order], t[order]


def expected_per_event(setup) -> float:
    """Mean number of out-of-time beam muons per event crossing the trackers."""
    lo, hi = setup.readout.beam_pileup_window
    if not hi > lo:
        return 0.0
    rate = setup.beam.particles_per_spill / setup.beam.spill_duration  # per ns (hepunits time: ns)
    return float(rate * (hi - lo - _gap((lo, hi), setup.beam.pileup_window)[1]))


def beam_pileup_hits(rng: np.random.Generator, setup, params, n_events: int, forced: ForcedPileup | None = None,
                     muons: bool = False, soft=None):
    """Tracker crossings ``(ev, plane, coord, t)`` of the out-of-time beam muons of
    ``n_events`` events (event indices 0..n_events-1); empty if the setup has no window.
    ``forced``: exactly ``forced.count`` of them per event in its near times (see the module doc).

    ``muons``: also return their truth, ``{"muon": muon index of each crossing, "muon_event":
    event index of each muon, "muon_time": its time (ns)}`` (the same random numbers: the muons
    are transported labelled by their index either way, and the labels mapped to their events),
    ``"muon_p"``: its momentum behind the last tracker plane (GeV; NaN: stopped).

    ``soft``: a :class:`na64reco.sim.forced_soft.ForcedSoft` forcing the near muons of ``forced``
    into its region of hard ECAL losses (:mod:`na64reco.sim.forced_soft`); the truth then also has
    ``"muon_near"`` and ``"muon_v_forced"``."""
    if soft is not None and (forced is None or forced.count < 1):
        raise ConfigError("forced soft pile-up needs forced pile-up muons (forced_pileup with count >= 1)")
    if expected_per_event(setup) <= 0 or n_events == 0:
        hits = Recorder(n_events).hits()
        empty = {"muon": np.zeros(0, np.int64), "muon_event": np.zeros(0, np.int64), "muon_time": np.zeros(0),
                 "muon_p": np.zeros(0)}
        if soft is not None:
            empty |= {"muon_near": np.zeros(0, bool), "muon_v_forced": np.zeros(0), "muon_e_ecal": np.zeros(0),
                      "deposits": (np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, np.int16), np.zeros(0),
                                   np.zeros(0))}
        return (hits, empty) if muons else hits
    ev, t = pileup_muons(rng, setup, n_events, forced)
    n = ev.size
    label = np.arange(n, dtype=np.int64)  # transported by muon index, mapped to the events below
    tracks = sample_beam(rng, setup, label, np.full(n, PROCESSES["beam"], np.int8), role=ROLE_PILEUP, t=t)
    rec = Recorder(n)
    hook = None
    if soft is not None:
        from na64reco.sim.forced_soft import SoftLosses, chosen_near

        hook = SoftLosses(soft, params, chosen_near(t, near_segments(setup, forced)))
    # transported up to the last tracker plane only: what lies behind it (HCAL, counters) cannot
    # change their crossings, and its random numbers were drawn for nothing (issue 11, fifth pass)
    out = follow(Context(rng, setup, params, rec, Truth.new(n), forced_soft=hook), tracks,
                 last_z=last_tracker_z(setup))
    h_mu, h_pl, h_u, h_t = rec.hits()
    hits = (ev[h_mu], h_pl, h_u, h_t)
    if muons:
        p = np.full(n, np.nan)
        alive = out.alive & (out.role == ROLE_PILEUP)
        p[out.ev[alive]] = out.p[alive] / GeV
        truth = {"muon": h_mu, "muon_event": ev, "muon_time": np.asarray(t, float), "muon_p": p}
        if hook is not None:
            truth |= {"muon_near": hook.chosen, "muon_v_forced": hook.v_forced}
            truth |= soft_deposits(setup, rec.deposits(), ev, hook.chosen, n)
        return hits, truth
    return hits


def soft_deposits(setup, deposits, muon_event: np.ndarray, chosen: np.ndarray, n_muons: int) -> dict:
    """The calorimeter and counter deposits of the forced soft muons (``chosen``, per muon
    label) recorded by their transport up to the last tracker plane (the upstream counters, the
    ECAL with the forced loss's shower and the MIP, VETO, VHCAL), at their own times, in event
    indices: ``{"deposits": (ev, det_id, chan, energy MeV, t ns), "muon_e_ecal": per muon its
    ECAL deposit (GeV)}`` (:mod:`na64reco.sim.forced_soft`, "Their deposits")."""
    d_mu, d_det, d_ch, d_e, d_t = deposits
    keep = np.asarray(chosen, bool)[d_mu]
    ecal = setup.detector("ECAL").id
    e_ecal = np.bincount(d_mu[keep & (d_det == ecal)], weights=d_e[keep & (d_det == ecal)], minlength=n_muons)
    return {"deposits": (muon_event[d_mu[keep]], d_det[keep], d_ch[keep], d_e[keep], d_t[keep]),
            "muon_e_ecal": e_ecal / GeV}


def last_tracker_z(setup) -> float:
    """z of the most downstream tracker plane (mm)."""
    return max(p.z for p in setup.planes)
