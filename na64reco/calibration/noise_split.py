"""The off-track clusters of a beam run split into uncorrelated noise and beam pile-up muons.

At a muon beam most off-track clusters of a tracker plane are not noise but the out-of-time
beam muons inside its readout window (:mod:`na64reco.sim.occupancy`): *tracks*, i.e. a
cluster on every plane they cross, nearly parallel to the triggering muon (the beam
divergence; behind the ECAL its multiple scattering).  Noise clusters are uncorrelated
across planes.  Per view (station x coordinate), in the events where the view has one track,
with ``d = position - track`` the offset of a candidate from the track on its plane:

* partner planes ``Q_p``: the other APV planes of the view on the same side of the magnet
  (close in z, no magnet between: a pile-up muon's offset changes by the angle difference
  times dz only); window ``W_pq = max(MIN_WINDOW_MM, WINDOW_SPREADS x s_pq)``, ``s_pq`` the
  robust spread of the offset differences of the run's pairs within :data:`PAIR_RANGE_MM`;
* ``N_p``: clusters of plane p (distinct origins) farther than ``Z_p = 3 mm + max_q W_pq``
  from the track (so that a pile-up muon's partner is never in the 3 mm zone that is cut
  away with the track), not on a hot strip +-1, inside the narrowest of the plane and its
  partners (less :data:`FIDUCIAL_MARGIN_MM`; a straw plane whole), MM singles (one
  unresolved channel: pulses far from the sampling time) left out;
* ``B_p``: those with a candidate of some q in Q_p within ``W_pq`` of their offset (any of
  the de-multiplexing / left-right candidates); accidentals ``alpha_p`` per cluster: the
  same against the clusters of q of the *next* event (event mixing: the same offset
  distribution, the structure of the MM de-multiplexing and the track's own clusters
  included);
* the pairing probability ``pi_p`` of a pile-up cluster of p (accidental partners
  included): tag and probe on pile-up *segments* of the other side of the magnet (a pair of
  APV planes within twice their window, extrapolated to p): segments with a counted cluster
  of p near the extrapolation that is paired, over those with one; accidental clusters
  subtracted from both by event mixing.  Then ``B = P pi + (N - P) alpha``::

      P_p = (B_p - alpha_p N_p) / (pi_p - alpha_p),   noise_p = (N_p - P_p) / n x scale_p / (1 - s_p)

  ``scale_p`` the plane width over the width counted (noise is uniform), ``s_p`` the
  fraction of MM singles among the clusters of the counted region (noise and pile-up
  clusters are both uniform over the APV window with the same charge: singles equally
  often).  Planes without segments (the straws): ``pi_p ~ eps_p (1 - alpha_p) + alpha_p``
  with ``eps_p = 1 - prod_q (1 - e_q)``, ``e_q`` the partners' efficiencies for pile-up
  muons (segments found / segments, accidental tags and probes subtracted), and the
  pile-up clusters scaled by the ratio of the pile-up window lengths the plane sees alone
  and with its partners (the straw TDC window is longer than the APVs'; beam muons are
  uniform in time);
* the pile-up muons per event: ``P_p / (n e_p)`` with the muons in the zone ``|d| < Z_p``
  added (a Gaussian density through the paired clusters of two bands of
  :data:`ZONE_REFERENCE_MM` beside it, flat for straws), divided by ``1 - s_p`` (a muon at a
  time that makes MM singles is in no segment), scaled from the plane's window to
  ``trackers.beam_pileup_window`` (without the in-time window); combined over the planes by
  the median (:func:`combined_rate`).

Errors: Poisson on the paired and unpaired clusters and the accidentals, binomial on the
pairing probability; the partners' efficiencies of the straw's estimate neglected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from na64reco.calibration.beam_tracks import OFF_TRACK_MM, predict
from na64reco.calibration.readout_times import (
    STRAW_SLICE_NS,
    intersect,
    pileup_time_segments,
    readout_window,
    segments_length,
    straw_slice_fraction,
    straw_visible_time,
    union,
)
from na64reco.stats.robust import robust_sigma

MIN_WINDOW_MM = 2.0
WINDOW_SPREADS = 5.0
PAIR_RANGE_MM = 10.0
FIDUCIAL_MARGIN_MM = 3.0  # inside the narrowest of a plane and its partners (alignment, angles)
ZONE_REFERENCE_MM = 6.0  # the zone's pile-up density from two bands of this width beside it
SEGMENT_WINDOW_FACTOR = 2.0  # the pile-up segments' pair window / the split's
MIN_SEGMENTS = 100  # pile-up segments needed to use a plane's measured pile-up efficiency


@dataclass
class NoiseSplit:
    """Per plane: uncorrelated noise and pile-up clusters per event, pile-up muons per event."""

    noise_hits: float
    noise_error: float
    pileup_hits: float  # pile-up muon clusters per event (off-track, in the plane's window)
    pileup_error: float
    pileup_muons: float  # out-of-time beam muons per event in trackers.beam_pileup_window
    pileup_muons_error: float
    partners: tuple[str, ...]


class Counts:
    """Accumulators of one plane over the runs."""

    def __init__(self):
        self.n_events = 0
        self.clusters = 0  # N
        self.paired = 0  # B
        self.accidental = 0.0  # mixed-event partners
        self.zone_paired = 0  # paired clusters at |d| in zone_half .. + ZONE_REFERENCE_MM
        self.zone_paired_far = 0  # ... and in the next band out
        self.excluded = 0.0
        self.searched = 0.0  # sum over events of the fiducial width (mm)
        self.zone_half = OFF_TRACK_MM  # half-width (mm) around the track where clusters are not counted
        self.singles = 0  # MM singles among the clusters of the counted region
        self.region_clusters = 0  # all clusters of the counted region, singles included
        self.region_all = 0  # the same without the straws' time slice
        self.probe_tags = 0  # pile-up segments of the other side pointing at the plane
        self.probe_found = 0
        self.probe_tag_accidental = 0.0  # of the tags: accidental segments (event mixing)
        self.probe_paired = 0  # found with a partner
        self.probe_paired_accidental = 0
        self.probe_accidental = 0

    def pairing_probability(self) -> float:
        """Probability that a pile-up cluster of the plane is paired, accidental partners
        included (``eps + (1 - eps) alpha``): segments with a paired cluster over those with
        a cluster, the accidental clusters (event mixing) subtracted from both."""
        den = self.probe_found - self.probe_accidental
        return (self.probe_paired - self.probe_paired_accidental) / den if den > 0 else float("nan")

    def pileup_efficiency(self) -> float:
        """Efficiency of the plane for out-of-time beam muons (tag and probe on pile-up segments)."""
        if self.probe_tags == 0:
            return float("nan")
        alpha = self.probe_accidental / self.probe_tags
        true_tags = self.probe_tags - self.probe_tag_accidental  # segments of a pile-up muon
        return (self.probe_found - alpha * self.probe_tags) / (true_tags * (1.0 - alpha))










def _has_partner(r_p, d_p, r_q, d_q, window) -> np.ndarray:
    """For each (event r_p, offset d_p): is there a (r_q, d_q) of the same event within ``window``."""
    if d_q.size == 0 or d_p.size == 0:
        return np.zeros(d_p.size, bool)
    span = 4.0 * (np.abs(d_p).max(initial=0) + np.abs(d_q).max(initial=0) + window + 1.0)
    kq = np.sort(r_q * span + d_q)
    kp = r_p * span + d_p
    return np.searchsorted(kq, kp + window, side="right") > np.searchsorted(kq, kp - window, side="left")


def _candidates(hits, vt, setup, hot):
    """Off-track candidates of the view's planes in its one-track events:
    (plane position in view, event row, offset, cluster key), and the events."""
    one = vt.n_tracks == 1
    ev = vt.event[one]
    pred = predict(vt.view, vt.par[one])
    planes = list(vt.view.planes)
    row = np.full(int(hits["event"].max(initial=0)) + 2, -1, np.int64)
    row[ev] = np.arange(ev.size)
    sel = np.flatnonzero(np.isin(hits["plane"], planes) & (row[np.minimum(hits["event"], row.size - 1)] >= 0))
    lookup = np.full(len(setup.planes), -1, np.int64)
    lookup[planes] = np.arange(len(planes))
    ip = lookup[hits["plane"][sel]]
    r = row[hits["event"][sel]]
    d = hits["pos"][sel] - pred[r, ip]
    key = hits["event"][sel].astype(np.int64) * 1_000_000 + hits["origin"][sel]
    strip = np.floor(hits["strip"][sel] + 0.5).astype(np.int64)
    bad = np.abs(d) <= OFF_TRACK_MM
    for k, index in enumerate(planes):
        near_hot = [s + dd for s in hot.get(setup.planes[index].name, []) for dd in (-1, 0, 1)]
        bad |= (ip == k) & np.isin(strip, np.array(near_hot, np.int64))
    keep = ~np.isin(key, key[bad])
    types = np.array([setup.planes[i].type for i in planes])
    single = (types[ip] == "MM") & hits["ambiguous"][sel]  # an MM single: one unresolved channel
    return (ip[keep], r[keep], d[keep], key[keep], hits["pos"][sel][keep], single[keep], hits["time"][sel][keep],
            ev.size)


def split_view(hits, vt, setup, hot: dict, accs: dict) -> dict[str, tuple[str, ...]]:
    """Accumulate the counts of the view's planes (module doc); returns the partner planes."""
    view = vt.view
    ip, r, d, key, pos, single, time, n_ev = _candidates(hits, vt, setup, hot)
    types = np.array([q.type for q in (setup.planes[i] for i in vt.view.planes)])
    # straws: the digits of the slice only (TDC time; both mirror candidates share it)
    sliced = (types[ip] != "straw") | ((time >= 0.0) & (time <= STRAW_SLICE_NS))
    planes = [setup.planes[i] for i in view.planes]
    down = np.asarray(view.down)
    dz = np.asarray(view.dz)
    out = {}
    is_paired = np.zeros(ip.size, bool)  # candidates with a partner (pile-up pairs)
    zone_half = np.full(len(planes), OFF_TRACK_MM)
    for a, p in enumerate(planes):
        acc = accs[p.name]
        partners = [b for b, q in enumerate(planes) if b != a and down[b] == down[a] and q.type != "straw"]
        out[p.name] = tuple(planes[b].name for b in partners)
        # only where the partners cover the plane (a muon outside them has no partner)
        # (a straw plane is several times wider than the beam spot and its APV partners: all of it)
        half = p.width / 2 if p.type == "straw" else \
            min(q.width for q in [p, *(planes[b] for b in partners)]) / 2 - FIDUCIAL_MARGIN_MM
        all_p = (ip == a) & ~single
        # (a straw digit's mirror candidate lies up to a tube radius off: the spread within half the range)
        reach = PAIR_RANGE_MM / 2 if p.type == "straw" else PAIR_RANGE_MM
        windows = {b: _window(_pair_differences(r[all_p], d[all_p], r[(ip == b) & ~single], d[(ip == b) & ~single],
                                                reach), MIN_WINDOW_MM + 2.0 * abs(dz[b] - dz[a])) for b in partners}
        # counted: clusters farther from the track than the zone plus the widest pair window, so
        # that a pile-up muon's partner can never lie in the zone (cut away with the track)
        zone_half[a] = OFF_TRACK_MM + max(windows.values(), default=0.0)
        acc.n_events += n_ev
        acc.excluded += n_ev * (2 * zone_half[a] + 3 * p.pitch * len(hot.get(p.name, [])))
        acc.searched += n_ev * 2 * half
        paired = np.zeros(all_p.sum(), bool)
        mixed = np.zeros(all_p.sum(), bool)
        for b, window in windows.items():
            on_q = (ip == b) & ~single
            paired |= _has_partner(r[all_p], d[all_p], r[on_q], d[on_q], window)
            mixed |= _has_partner(r[all_p], d[all_p], (r[on_q] + 1) % max(n_ev, 1), d[on_q], window)
        is_paired[all_p] = paired
        # a cluster counts (and is paired) if any of its candidates does (is)
        use = (np.abs(pos[all_p] - p.center) < half) & (np.abs(d[all_p]) > zone_half[a]) & sliced[all_p]
        kp = key[all_p][use]
        acc.clusters += np.unique(kp).size
        acc.paired += np.unique(kp[paired[use]]).size
        acc.accidental += np.unique(kp[mixed[use]]).size
        dist = np.abs(d[all_p][use]) - zone_half[a]
        acc.zone_paired += np.unique(kp[paired[use] & (dist <= ZONE_REFERENCE_MM)]).size
        acc.zone_paired_far += np.unique(kp[paired[use] & (dist > ZONE_REFERENCE_MM)
                                            & (dist <= 2 * ZONE_REFERENCE_MM)]).size
        acc.zone_half = zone_half[a]
        region = (ip == a) & (np.abs(pos - p.center) < half) & (np.abs(d) > zone_half[a])
        acc.singles += np.unique(key[region & single & sliced]).size
        acc.region_clusters += np.unique(key[region & sliced]).size
        acc.region_all += np.unique(key[region]).size  # straws: all TDC times
    # pile-up efficiencies: segments of each APV pair of one side probe the other side's planes
    apv = [k for k, q in enumerate(planes) if q.type != "straw"]
    for a in apv:
        for b in apv:
            if b <= a or down[a] != down[b]:
                continue
            on_a, on_b = (ip == a) & ~single, (ip == b) & ~single
            # tags of any angle (a narrow tag window would select the muons whose angle, the
            # beam's divergence and the scattering in the ECAL, also pairs them on the probed side)
            window = SEGMENT_WINDOW_FACTOR * _window(_pair_differences(r[on_a], d[on_a], r[on_b], d[on_b]),
                                                     MIN_WINDOW_MM)
            seg = _segments(r, d, key, on_a, on_b, dz[a], dz[b], window)
            # accidental segments: alpha per cluster of a without a true partner, so of the T
            # segments of the N clusters, T - (T - alpha N) / (1 - alpha) are accidental
            n_a = np.unique(key[on_a]).size
            alpha = np.unique(key[on_a][_accidental_segments(r, d, on_a, on_b, n_ev, window)]).size / max(n_a, 1)
            seg = (*seg[:3], alpha * max(n_a - seg[0].size, 0) / (1.0 - alpha))
            for c in range(len(planes)):
                if down[c] != down[a]:
                    on_c = (ip == c) & ~single & (np.abs(d) > zone_half[c]) & sliced
                    _probe_segments(seg, dz[a], r, d, on_c, is_paired, dz[c], zone_half[c], n_ev,
                                    accs[planes[c].name])
    return out


def _same_event_pairs(r_p, r_q) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of all the pairs of entries of p and q in the same event."""
    order = np.argsort(r_q, kind="stable")
    lo = np.searchsorted(r_q[order], r_p, side="left")
    n = np.searchsorted(r_q[order], r_p, side="right") - lo
    i = np.repeat(np.arange(r_p.size), n)
    j = order[np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
    return i, j


def _pair_differences(r_p, d_p, r_q, d_q, reach: float = PAIR_RANGE_MM) -> np.ndarray:
    """Offset differences d_q - d_p of the same-event pairs within ``reach``."""
    i, j = _same_event_pairs(r_p, r_q)
    diff = d_q[j] - d_p[i]
    return diff[np.abs(diff) < reach]


def _window(diff: np.ndarray, fallback: float) -> float:
    return max(MIN_WINDOW_MM, WINDOW_SPREADS * robust_sigma(diff)) if diff.size >= 20 else fallback


def _segments(r, d, key, on_a, on_b, z_a, z_b, window):
    """Pile-up segments of a pair of planes (a, b): one per cluster of a with a candidate of b
    within ``window``: (event row, offset on a, slope of the offset per metre)."""
    ia, ib = np.flatnonzero(on_a), np.flatnonzero(on_b)
    i, j = _same_event_pairs(r[ia], r[ib])
    ok = np.abs(d[ib][j] - d[ia][i]) < window
    i, j = i[ok], j[ok]
    first = np.unique(key[ia][i], return_index=True)[1]
    i, j = i[first], j[first]
    return r[ia][i], d[ia][i], (d[ib][j] - d[ia][i]) / (z_b - z_a)


def _accidental_segments(r, d, on_a, on_b, n_ev, window) -> np.ndarray:
    """Mask over the candidates of a: a candidate of b of the next event within ``window``."""
    ia, ib = np.flatnonzero(on_a), np.flatnonzero(on_b)
    return _has_partner(r[ia], d[ia], (r[ib] + 1) % max(n_ev, 1), d[ib], window)


def _probe_segments(seg, z_a, r, d, on_c, is_paired, z_c, zone_c, n_ev, acc: Counts) -> None:
    """Tag and probe of plane c with the pile-up segments of the other side: found within a
    window of the extrapolated offset, and found *with a partner* (the pairing of the split);
    accidentals with the clusters of c of the next event."""
    rs, ds, slope, fake = seg
    pred = ds + slope * (z_c - z_a)
    away = np.abs(pred) > zone_c  # the muon's cluster on c is counted (outside c's zone)
    rs, pred = rs[away], pred[away]
    acc.probe_tag_accidental += fake * away.mean() if away.size else 0.0
    ic = np.flatnonzero(on_c)
    i, j = _same_event_pairs(rs, r[ic])
    res = d[ic][j] - pred[i]
    window = _window(res[np.abs(res) < PAIR_RANGE_MM], 2 * MIN_WINDOW_MM)
    acc.probe_tags += rs.size
    acc.probe_found += int(_has_partner(rs, pred, r[ic], d[ic], window).sum())
    acc.probe_accidental += int(_has_partner(rs, pred, (r[ic] + 1) % max(n_ev, 1), d[ic], window).sum())
    jc = ic[is_paired[ic]]
    acc.probe_paired += int(_has_partner(rs, pred, r[jc], d[jc], window).sum())
    acc.probe_paired_accidental += int(_has_partner(rs, pred, (r[jc] + 1) % max(n_ev, 1), d[jc], window).sum())


def finish(setup, accs: dict, partners: dict, efficiency: dict[str, float]) -> dict[str, NoiseSplit]:
    """Per plane: the split (module doc) from the accumulated counts; the planes' efficiencies
    for pile-up muons where measured (APV planes with a pair on the other side of the magnet),
    else ``efficiency`` (the tag-and-probe of the triggering muons)."""
    # (a straw's segments probe only its time slice: its efficiency is the triggering muons')
    straws = {p.name for p in setup.planes if p.type == "straw"}
    measured = {name: a.pileup_efficiency() if name not in straws else float("nan") for name, a in accs.items()}
    efficiency = {name: measured[name] if np.isfinite(measured[name]) and accs[name].probe_tags >= MIN_SEGMENTS else e
                  for name, e in efficiency.items()}
    pile = pileup_time_segments(setup)
    by_name = {p.name: p for p in setup.planes}
    total = segments_length(pile)
    out = {}
    for p in setup.planes:
        a = accs[p.name]
        n = max(a.n_events, 1)
        seen = intersect(pile, readout_window(setup, p))
        own = segments_length(seen)
        both = [s for q in partners[p.name] for s in intersect(seen, readout_window(setup, by_name[q]))]
        shared = segments_length(union(both))
        eps = 1.0 - np.prod([1.0 - efficiency[q] for q in partners[p.name]]) if partners[p.name] else 0.0
        if eps <= 0 or shared <= 0 or a.clusters == 0:
            out[p.name] = NoiseSplit(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, partners[p.name])
            continue
        alpha = a.accidental / a.clusters
        pairing = a.pairing_probability()
        # B = P (eps + (1 - eps) alpha) + (N - P) alpha: with the pairing probability measured
        # on pile-up segments, P = (B - alpha N) / (pairing - alpha); else from the efficiencies
        rel_var = 0.0  # relative variance of the pairing probability
        measured = a.probe_found - a.probe_accidental >= MIN_SEGMENTS and pairing > alpha
        straw_slice = p.type == "straw"  # the slice's muons are all in the APV window
        if measured:
            m = a.probe_found - a.probe_accidental  # (binomial; at least one in m: few segments near 1)
            rel_var = max(pairing * (1.0 - pairing), 1.0 / m) / m / (pairing - alpha) ** 2
        if straw_slice:
            factor = 1.0 / ((pairing if measured else eps * (1.0 - alpha) + alpha) - alpha)
        elif measured:
            factor = own / shared / (pairing - alpha)
        else:
            factor = own / shared / (eps * (1.0 - alpha))
        pairs = a.paired - alpha * a.clusters
        pileup = pairs * factor
        # MM singles (one unresolved channel: a pulse far from the sampling time) pair with
        # nothing; noise and pile-up clusters, both uniform over the APV window with the same
        # charge, become singles equally often: the split is of the other clusters, scaled up
        singles = 1.0 / (1.0 - a.singles / a.region_clusters) if a.region_clusters > a.singles else 1.0
        scale = p.width / ((a.searched - a.excluded) / n) * singles
        # errors: paired B ~ Poisson, unpaired N - B ~ Poisson (independent); the accidental
        # term from as many mixed trials as clusters (Poisson)
        var_b, var_u, var_acc = max(a.paired, 1), max(a.clusters - a.paired, 1), max(a.accidental, 1)
        noise_var = (1.0 - factor) ** 2 * var_b + var_u + factor**2 * var_acc + pileup**2 * rel_var  # counts^2
        pile_var = factor**2 * (var_b + var_acc) + pileup**2 * rel_var
        # the pile-up muons in the zone: the paired clusters' density beside it carried into it
        # (straws: flat; the mirror candidates of the digits blur the bands' densities)
        zone = pairs / max(a.paired, 1) * factor * _zone_count(a.zone_paired, 0 if p.type == "straw" else
                                                               a.zone_paired_far, a.zone_half)
        whole = (pileup + zone) / max(pileup, 1e-12)
        noise_count = a.clusters - pileup
        if straw_slice:  # the slice's noise scaled to the whole TDC window; all the other digits are pile-up
            fraction = straw_slice_fraction(setup, p)
            noise_count /= fraction
            noise_var /= fraction**2
            pileup = a.region_all - noise_count
            pile_var = a.region_all + noise_var
            own = straw_visible_time(setup, p)
        noise = noise_count / n * scale
        eff = efficiency[p.name]
        # the muons whose clusters are MM singles are in no segment and no P: as many as the clusters
        pile_hits = pileup * whole / n * singles
        pile_err = np.sqrt(pile_var) * whole / n * singles
        muons = pile_hits / eff * total / own
        out[p.name] = NoiseSplit(float(noise), float(np.sqrt(noise_var) * scale / n), float(pile_hits), float(pile_err),
                                 float(muons), float(pile_err / eff * total / own), partners[p.name])
    return out








def _zone_count(near: float, far: float, zone: float) -> float:
    """Paired clusters expected at |d| < ``zone`` from ``near`` and ``far`` in the two bands of
    :data:`ZONE_REFERENCE_MM` beside it: a density ``A exp(-k d^2)`` (the offset of a beam
    muon from another is Gaussian about 0) through the bands' centres, integrated over the zone."""
    b = ZONE_REFERENCE_MM
    if near <= 0:
        return 0.0
    m1, m2 = zone + b / 2, zone + 3 * b / 2
    k = max(np.log(near / far) / (m2**2 - m1**2), 0.0) if far > 0 else 0.0
    rho = near / (2 * b) * np.exp(k * m1**2)  # density per mm at d = 0 (both signs counted)
    integral = zone if k <= 0 else 0.5 * np.sqrt(np.pi / k) * erf(zone * np.sqrt(k))
    return float(2 * rho * integral)




def combined_rate(splits) -> tuple[float, float]:
    """Median of the planes' pile-up muons per event and its error: the larger of the smallest
    plane's statistical error (the planes count the same muons) and half the 16-84 % spread of
    the planes (their systematic differences: zone, acceptance, singles)."""
    v = np.array([(s.pileup_muons, s.pileup_muons_error) for s in splits if np.isfinite(s.pileup_muons)
                  and s.pileup_muons_error > 0])
    if v.size == 0:
        return float("nan"), float("nan")
    q16, q84 = np.percentile(v[:, 0], [16, 84])
    return float(np.median(v[:, 0])), float(max(v[:, 1].min(), 0.5 * (q84 - q16)))
