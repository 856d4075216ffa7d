"""Plane hit efficiency (tag and probe), noise-hit rate, dead and hot strips from beam runs.

Reconstruct with the base conditions (aligned: run the alignment first); then per plane:

Dead and hot strips (occupancy)
    count the hits per strip (``floor(strip + 1/2)`` of the cluster centroid; for straws the
    tube, each digit once, not its two left/right candidates) over the run; the
    expectation of strip s follows the smooth occupancy profile (the beam spot of the
    triggering and the pile-up muons on the even noise floor): a local Poisson fit of
    ``floor + exp(quadratic)`` to the strips s+-2 .. s+-6 (the direct neighbours are left
    out: a dead strip splits the clusters over it onto them; masked strips are replaced by
    the next ones out), :mod:`na64reco.calibration.strip_profile`.  *Hot*: more than
    :data:`HOT_FACTOR` times the expectation and a tail probability below
    :data:`BAD_P_VALUE` / (strips of the plane), i.e. a false hot strip in about one plane in
    a thousand; the probability is that of the count given it plus the neighbours' (binomial,
    so that an expectation from a few hits on ten strips is not taken as exact), with the
    expectation at least the plane's median count.  *Dead*: below :data:`DEAD_FRACTION` of
    an expectation of at least :data:`MIN_EXPECTED` hits (a strip with less illumination is
    not judged: ``untested``; beam tracks and noise clusters both illuminate), with the same
    probability criterion, and a hole: below DEAD_FRACTION of its nearest good strips on
    both sides.  Outliers bend their neighbours' fits, so they are taken out first (those
    off the median of the five strips around them by twice the factors), then one at a
    time (:func:`bad_strips`).  Strips the base conditions call dead are kept dead (the
    reconstruction drops their signal).
Efficiency (tag and probe)
    tag: the view's best track (one candidate in the view) with hits on every *other*
    plane, refitted without the probed plane, with priors on its slope (and deflection)
    from the run's tracks, chi2 probability above 1e-3; the prediction must lie inside the plane
    (1 mm from its edges) and more than one window from a dead or hot strip.  Probe: a
    hit of the plane within ``W = max(5 mm, 6 sigma)`` of the prediction (sigma: the
    refit's extrapolation error and the plane resolution).  Random coincidences are
    measured in two side windows of the same width 10 mm either side (probability p;
    noise clusters only: the track's own cluster and its de-multiplexing candidates exist
    only when the hit does; side windows near a dead or hot strip are not used) and
    removed: ``eff = (k / n - p) / (1 - p)``, binomial error ``sqrt(f (1 - f) / n) / (1 - p)``.
Off-track clusters (``off_track_hits``)
    in the tagged events: clusters (distinct hit origins) of the plane with no candidate
    within 3 mm of the track (its cluster and the pieces a split leaves) or on a hot strip
    (+-1), per event, scaled up by the plane width over the width searched: the uncorrelated
    noise *and* the clusters of the out-of-time beam muons.
Noise rate (``noise_hits``, the conditions' meaning: uncorrelated noise clusters only)
    the off-track clusters split into the pile-up muons (correlated across the planes of a
    view) and the rest, :mod:`na64reco.calibration.noise_split`; the pile-up clusters per
    plane and the pile-up muons per event are kept beside it (``pileup_hits``,
    ``pileup_muons``).  (An MM noise
    cluster the de-multiplexing cannot resolve has several candidates and is lost a little
    more often than the width ratio says; clusters split in two count twice: the two
    effects are of a few % and of opposite sign, see docs/calibration.md.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.stats import binom, poisson
from scipy.stats import chi2 as chi2_dist

from na64reco.calibration import noise_split, readout_times
from na64reco.calibration.beam_tracks import (
    OFF_TRACK_MM,
    BeamRun,
    design,
    nearest_hits,
    predict,
    reconstruct_views,
    with_planes,
)
from na64reco.calibration.strip_profile import GAP, HALF_WIDTH, MAX_REACH, local_expectation, neighbours
from na64reco.conditions import RunConditions, tracker_content
from na64reco.errors import NA64Error
from na64reco.geometry import Setup
from na64reco.stats.robust import robust_sigma

HOT_FACTOR = 3.0  # was 5 against the median of the neighbours; the profile fit is closer (docs/calibration.md)
#: per plane: chance of calling a fluctuation hot, or dead (trials over its strips included)
BAD_P_VALUE = 1e-3
HOT_P_VALUE = BAD_P_VALUE  # the name of before
DEAD_FRACTION = 0.2
MAX_PASSES = 20  # judgements of a plane's strips, each with one more bad strip left out
MIN_EXPECTED = 20.0
SIDE_OFFSET_MM = 10.0
EDGE_MARGIN_MM = 1.0
MIN_WINDOW_MM = 5.0  # tags with a noise hit in place of a lost one point a few mm off; merged clusters ~1 mm
WINDOW_SIGMAS = 6.0
MIN_PROBES = 50
SHADOW_RATIO = 3.0
#: tag refit: priors on the slope (and deflection) of the view's tracks, centred on the median
#: of the run's full tracks with PRIOR_SCALE x their robust spread (the beam's divergence and
#: momentum spread), so that the tag hits are checked even where the refit has no redundancy;
#: tags with a chi2 probability below TAG_PROBABILITY are dropped.  Without the priors a noise
#: hit replacing a lost hit on a tag plane passes more easily when the probed hit is missing
#: too (fewer constraints), which biases the efficiency low.
PRIOR_SCALE = 1.5
TAG_PROBABILITY = 1e-3


@dataclass
class PlaneResult:
    name: str
    efficiency: float = float("nan")
    efficiency_error: float = float("nan")
    n_probes: int = 0
    random_rate: float = 0.0
    noise_hits: float = float("nan")  # uncorrelated noise clusters per event (the split)
    noise_error: float = float("nan")
    off_track_hits: float = float("nan")  # all off-track clusters per event: noise + pile-up muons
    off_track_error: float = float("nan")
    pileup_hits: float = float("nan")  # clusters of out-of-time beam muons per event
    pileup_error: float = float("nan")
    pileup_muons: float = float("nan")  # out-of-time beam muons per event (trackers.beam_pileup_window)
    pileup_muons_error: float = float("nan")
    dead_strips: list[int] = field(default_factory=list)
    hot_strips: list[int] = field(default_factory=list)
    untested: int = 0  # strips with too little illumination to be judged dead


@dataclass
class EfficiencyResult:
    planes: dict[str, PlaneResult]
    n_events: int
    pileup_muons: float = float("nan")  # per event, the median over the planes
    pileup_muons_error: float = float("nan")

    def summary(self) -> str:
        lines = [f"efficiency: {self.n_events} events; out-of-time beam muons per event "
                 f"{self.pileup_muons:.3f} +- {self.pileup_muons_error:.3f}",
                 f"  {'plane':6s} {'efficiency':>18s} {'probes':>7s} {'random':>7s} {'off-track/event':>16s}"
                 f" {'pile-up/event':>16s} {'noise/event':>16s}  dead, hot strips"]
        for r in self.planes.values():
            lines.append(f"  {r.name:6s} {r.efficiency:9.4f} +- {r.efficiency_error:.4f} {r.n_probes:7d} "
                         f"{r.random_rate:7.4f} {r.off_track_hits:7.4f} +- {r.off_track_error:.4f} "
                         f"{r.pileup_hits:7.4f} +- {r.pileup_error:.4f} {r.noise_hits:7.4f} +- {r.noise_error:.4f}  "
                         f"dead {r.dead_strips or '-'}, hot {r.hot_strips or '-'}"
                         + (f" ({r.untested} strips too little illuminated to test)" if r.untested else ""))
        return "\n".join(lines)


def strip_counts(strip: np.ndarray, n_strips: int) -> np.ndarray:
    s = np.floor(np.asarray(strip) + 0.5).astype(np.int64)
    return np.bincount(s[(s >= 0) & (s < n_strips)], minlength=n_strips)


def expected_counts(counts: np.ndarray, masked: np.ndarray | None = None) -> np.ndarray:
    """Expected counts of every strip from the smooth occupancy profile of its neighbours
    s+-2 .. s+-6, ``masked`` strips left out (:func:`~na64reco.calibration.strip_profile.local_expectation`)."""
    return local_expectation(counts, masked)


def _judge(counts, exp, floor, known, strict: float = 1.0, n_neighbours=None):
    """(hot, dead, testable) masks of one plane's strips against the expectations ``exp``
    (``strict``: the factors HOT_FACTOR and 1 / DEAD_FRACTION multiplied by it).

    The probabilities are those of the count given the count plus the neighbours' (the
    expectation times ``n_neighbours``, the strips it was estimated from; None: known
    exactly): a binomial with ``1 / (1 + n_neighbours)``, exact for an even profile, so that
    the uncertainty of an expectation from a few hits on ten strips is not taken for a signal.
    """
    mu = np.nan_to_num(np.fmax(exp, floor))
    p_max = BAD_P_VALUE / counts.size
    if n_neighbours is None:
        p_hot, p_dead = poisson.sf(counts - 1, mu), poisson.cdf(counts, np.nan_to_num(exp))
    else:
        m = np.maximum(n_neighbours, 1)
        p_hot = binom.sf(counts - 1, counts + np.rint(mu * m).astype(np.int64), 1.0 / (1 + m))
        p_dead = binom.cdf(counts, counts + np.rint(np.nan_to_num(exp) * m).astype(np.int64), 1.0 / (1 + m))
    with np.errstate(invalid="ignore"):
        hot = (counts > strict * HOT_FACTOR * exp) & (p_hot < p_max)
        testable = exp >= MIN_EXPECTED
        dead = testable & (counts < DEAD_FRACTION / strict * exp) & (p_dead < p_max)
    dead[known] = False
    return hot, _holes(counts, dead, known), testable


def _holes(counts, dead, known) -> np.ndarray:
    """The dead candidates that are holes: below DEAD_FRACTION of the lower of the nearest
    strips on either side that are not candidates themselves (nor known dead).  A strip at the
    foot of a steep beam flank, where the fitted expectation can overshoot, is not."""
    out = dead.copy()
    other = ~dead
    other[known] = False
    ok = np.flatnonzero(other)
    for s in np.flatnonzero(dead):
        i = np.searchsorted(ok, s)
        near = [counts[ok[j]] for j in (i - 1, i) if 0 <= j < ok.size]
        out[s] = bool(near) and counts[s] < DEAD_FRACTION * min(near)
    return out


def _spikes(counts, holes=None) -> np.ndarray:
    """Median of the counts of strips s-2 .. s+2: a crude expectation that a single strip far
    off (a dead tube in a straw plane's beam core, a hot strip) does not move, and that is the
    strip's own count where the profile is monotonic."""
    n = counts.size
    k = np.arange(n)[:, None] + np.arange(-2, 3)[None, :]
    kc = np.clip(k, 0, n - 1)
    usable = (k >= 0) & (k < n) & (True if holes is None else ~holes[kc])
    c = np.where(usable, counts[kc].astype(float), np.nan)
    with np.errstate(all="ignore"):
        return np.nanmedian(np.where(usable.any(axis=1)[:, None], c, 0.0), axis=1)


def bad_strips(counts: np.ndarray, known_dead=()) -> tuple[list[int], list[int], int]:
    """(dead, hot, untested) strips of one plane from its occupancy (module doc).

    ``known_dead``: strips already known dead (no hits by construction): not used as
    neighbours.  A strong outlier (a dead tube in a 6 mm straw plane's beam core, a hot strip)
    bends the fitted expectations of the strips around it, which then look bad as well; so
    the strips that are dead or hot already against the median of the five strips
    around them (which a single outlier does not move) are left out of the neighbours' fits
    first, and then, one at a time, the strip furthest (Poisson deviance) off its fitted
    expectation among those judged dead or hot, until no new one is found (at most
    :data:`MAX_PASSES` judgements).  A hot strip is left out with its neighbours +-1 (its
    shadows).
    """
    counts = np.asarray(counts)
    n = counts.size
    masked = np.zeros(n, bool)
    known = np.asarray(list(known_dead), np.int64)
    masked[known] = True
    floor = max(float(np.median(np.delete(counts, known))) if known.size < n else 0.0, 1.0)
    # the crude stage takes out only gross outliers (twice as far off as the criteria)
    # (holes first: a hole lowers the median of the strips next to it)
    dead = _judge(counts, _spikes(counts), floor, known, strict=2.0)[1]
    hot = _judge(counts, _spikes(counts, dead | masked), floor, known, strict=2.0)[0]
    for s in np.flatnonzero(hot):
        masked[max(s - 1, 0):s + 2] = True
    masked |= dead
    for _ in range(MAX_PASSES):
        exp = expected_counts(counts, masked)
        used = neighbours(masked, HALF_WIDTH - GAP, GAP, MAX_REACH)[1].sum(axis=1)
        hot, dead, testable = _judge(counts, exp, floor, known, n_neighbours=used)
        new = (hot | dead) & ~masked
        if not new.any():
            break
        mu = np.fmax(exp, floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            deviance = np.where(counts > 0, counts * np.log(counts / mu), 0.0) - (counts - mu)
        worst = int(np.flatnonzero(new)[np.argmax(deviance[new])])
        masked[max(worst - 1, 0):worst + 2] |= hot[worst]
        masked[worst] = True
    return np.flatnonzero(dead).tolist(), np.flatnonzero(hot).tolist(), int((~testable).sum())


def _refit_without(view, y, w, ip, prior_mean, prior_sigma):
    """Fit of the other planes' hits with Gaussian priors on the parameters 1.. (slope,
    deflection): prediction on plane ip (T,), its variance, the chi2 and its ndf (T,)."""
    R = design(view)
    w = w.copy()
    w[:, ip] = 0.0
    C = np.einsum("ti,ia,ib->tab", w, R, R)
    b = np.einsum("ti,ti,ia->ta", w, y, R)
    wp = 1.0 / np.asarray(prior_sigma) ** 2
    for k in range(1, R.shape[1]):
        C[:, k, k] += wp[k - 1]
        b[:, k] += wp[k - 1] * prior_mean[k - 1]
    Ci = np.linalg.inv(C)
    q = np.einsum("tab,tb->ta", Ci, b)
    chi2 = (w * (y - q @ R.T) ** 2).sum(axis=1)
    for k in range(1, R.shape[1]):
        chi2 += wp[k - 1] * (q[:, k] - prior_mean[k - 1]) ** 2
    ndf = (w > 0).sum(axis=1) + R.shape[1] - 1 - R.shape[1]
    return q @ R[ip], np.einsum("a,tab,b->t", R[ip], Ci, R[ip]), chi2, ndf


def _priors(vt, R) -> tuple[np.ndarray, np.ndarray]:
    """Median and PRIOR_SCALE x robust spread of the parameters 1.. of the view's full tracks."""
    full = (vt.hit >= 0).all(axis=1) & (vt.n_tracks == 1)
    par = vt.par[full][:, 1:R.shape[1]] if full.sum() >= 20 else vt.par[:, 1:R.shape[1]]
    med = np.median(par, axis=0)
    spread = robust_sigma(par, axis=0, centre=med)
    return med, PRIOR_SCALE * np.maximum(spread, 1e-6)


class _Counts:
    """Accumulators of one plane over the runs."""

    def __init__(self, n_strips):
        self.occ = np.zeros(n_strips, np.int64)
        self.off = np.zeros(n_strips, np.int64)
        self.n = self.k = 0
        self.side = self.n_side = 0
        self.noise = 0
        self.noise_events = 0
        self.excluded = 0.0  # sum over events of the width excluded around the track and hot strips


def _occupancy(hits, p, keep=None) -> np.ndarray:
    """Hits per strip of plane ``p`` (APV planes: unambiguous clusters only, so that the
    de-multiplexing candidates of a cluster do not pile up on its partner strips; straws:
    digits, not their two left/right candidates, so that the counts are Poisson)."""
    sel = hits["plane"] == p.index
    if p.type != "straw":
        sel &= ~hits["ambiguous"]
    if keep is not None:
        sel &= keep
    idx = np.flatnonzero(sel)
    if p.type == "straw":  # the mirror candidate of a digit shares its origin: count the digit once
        key = hits["event"][idx].astype(np.int64) * 1_000_000 + hits["origin"][idx]
        idx = idx[np.unique(key, return_index=True)[1]]
    return strip_counts(hits["strip"][idx], p.n_strips)


def _off_track(hits, vts, setup: Setup) -> np.ndarray:
    """Mask of the hits of clusters with no candidate within :data:`OFF_TRACK_MM` of their
    view's track, in events where the view has one candidate (other hits: False)."""
    tracked = np.zeros(hits["pos"].size, bool)
    near = np.zeros(hits["pos"].size, bool)
    for vt in vts:
        one = vt.n_tracks == 1
        pred = predict(vt.view, vt.par[one])
        for ip, index in enumerate(vt.view.planes):
            sel = np.flatnonzero(hits["plane"] == index)
            row = np.full(len(hits["plane_offsets"]) // len(setup.planes) + 1, -1, np.int64)
            row[vt.event[one]] = np.arange(one.sum())
            r = row[hits["event"][sel]]
            ok = r >= 0
            tracked[sel[ok]] = True
            near[sel[ok]] = np.abs(hits["pos"][sel[ok]] - pred[r[ok], ip]) <= OFF_TRACK_MM
    key = hits["event"].astype(np.int64) * 1_000_000 + hits["origin"]  # the straw mirror shares it
    return tracked & ~np.isin(key, key[near])


def measure_planes(runs: list[BeamRun], setup: Setup, base: RunConditions) -> EfficiencyResult:
    """Efficiency, noise rate, dead and hot strips of every plane (module doc)."""
    n_planes = len(setup.planes)
    acc = {p.name: _Counts(p.n_strips) for p in setup.planes}
    for run in runs:  # pass 1: occupancy of all hits -> dead strips
        hits, _, _ = reconstruct_views(run, setup, base)
        for p in setup.planes:
            acc[p.name].occ += _occupancy(hits, p)
    out = {}
    for p in setup.planes:
        known = base.planes[p.name].dead_strips.tolist()
        dead, _, untested = bad_strips(acc[p.name].occ, known)
        out[p.name] = PlaneResult(p.name, dead_strips=sorted(set(dead) | set(known)), untested=untested)
    # pass 2: reconstruct with the dead strips known; off-track occupancy -> hot strips
    cond = with_planes(base, {n: replace(base.planes[n], dead_strips=np.asarray(r.dead_strips, np.int64))
                              for n, r in out.items()}, "dead")
    recon = []
    for run in runs:
        hits, vts, _ = reconstruct_views(run, setup, cond)
        recon.append((hits, vts))
        off = _off_track(hits, vts, setup)
        for p in setup.planes:
            acc[p.name].off += _occupancy(hits, p, off)
    for p in setup.planes:
        hot = bad_strips(acc[p.name].off, out[p.name].dead_strips)[1]
        out[p.name].hot_strips = _without_shadows(hot, acc[p.name].off)
    for hits, vts in recon:  # pass 3: tag and probe, noise
        for vt in vts:
            _probe_view(hits, vt, setup, cond, out, acc, n_planes)
    for p in setup.planes:
        a, r = acc[p.name], out[p.name]
        if a.n < MIN_PROBES:
            raise NA64Error(f"efficiency: plane {p.name} has {a.n} probe tracks (< {MIN_PROBES}): "
                            "give more beam events")
        r.n_probes = a.n
        r.random_rate = a.side / max(a.n_side, 1)
        f = a.k / a.n
        r.efficiency = (f - r.random_rate) / (1.0 - r.random_rate)
        r.efficiency_error = np.sqrt(max(f * (1 - f), 1.0 / a.n) / a.n) / (1.0 - r.random_rate)
        scale = p.width / (p.width - a.excluded / max(a.noise_events, 1))
        r.off_track_hits = a.noise / max(a.noise_events, 1) * scale
        r.off_track_error = np.sqrt(max(a.noise, 1)) / max(a.noise_events, 1) * scale
    return _with_split(EfficiencyResult(out, sum(len(r.events) for r in runs)), recon, setup)


def _with_split(result: EfficiencyResult, recon, setup: Setup) -> EfficiencyResult:
    """The off-track clusters split into noise and pile-up muons (:mod:`.noise_split`)."""
    accs = {p.name: noise_split.Counts() for p in setup.planes}
    hot = {name: r.hot_strips for name, r in result.planes.items()}
    partners: dict[str, tuple[str, ...]] = {}
    for hits, vts in recon:
        for vt in vts:
            partners.update(noise_split.split_view(hits, vt, setup, hot, accs))
    eff = {name: float(np.clip(r.efficiency, 0.0, 1.0)) for name, r in result.planes.items()}
    splits = noise_split.finish(setup, accs, partners, eff)
    for name, s in splits.items():
        r = result.planes[name]
        # no split where there is no beam pile-up (na64e) or no partner plane: the off-track count
        split = np.isfinite(s.noise_hits) and bool(readout_times.pileup_time_segments(setup))
        r.noise_hits, r.noise_error = (s.noise_hits, s.noise_error) if split else (r.off_track_hits, r.off_track_error)
        r.pileup_hits, r.pileup_error = s.pileup_hits, s.pileup_error
        r.pileup_muons, r.pileup_muons_error = s.pileup_muons, s.pileup_muons_error
    result.pileup_muons, result.pileup_muons_error = noise_split.combined_rate(splits.values())
    if not readout_times.pileup_time_segments(setup):  # the setup has no beam pile-up in its trackers
        for r in result.planes.values():
            r.pileup_hits = r.pileup_error = r.pileup_muons = r.pileup_muons_error = 0.0
        result.pileup_muons = result.pileup_muons_error = 0.0
    return result


def _without_shadows(hot: list[int], counts: np.ndarray) -> list[int]:
    """Drop a hot candidate next to a candidate with more than :data:`SHADOW_RATIO` times its
    hits (the charge spread of a hot strip's clusters moves some centroids to its neighbours)."""
    keep = []
    for s in hot:
        nb = [t for t in (s - 1, s + 1) if t in hot]
        if not any(counts[t] > SHADOW_RATIO * counts[s] for t in nb):
            keep.append(s)
    return keep


def _probe_view(hits, vt, setup: Setup, base: RunConditions, out, acc, n_planes) -> None:
    view = vt.view
    one = vt.n_tracks == 1
    ev, hit = vt.event[one], vt.hit[one]
    sig = np.array([setup.planes[q].resolution for q in view.planes])
    y = np.where(hit >= 0, hits["pos"][np.maximum(hit, 0)], 0.0)
    w = np.where(hit >= 0, 1.0 / sig[None, :] ** 2, 0.0)
    R = design(view)
    down = np.asarray(view.down)
    if not one.any():  # no track to probe with: the caller's count of probe tracks says so
        return
    prior_mean, prior_sigma = _priors(vt, R)
    for ip, index in enumerate(view.planes):
        p = setup.planes[index]
        a, res = acc[p.name], out[p.name]
        others = np.delete(np.arange(len(view.planes)), ip)
        tag = (hit[:, others] >= 0).all(axis=1)
        if view.bend:
            rest = down[others]
            if rest.all() or not rest.any():
                continue
        if tag.sum() == 0 or (hit[:, others] >= 0).sum(axis=1).max() < R.shape[1]:
            continue
        pred, var, chi2, ndf = _refit_without(view, y[tag], w[tag], ip, prior_mean, prior_sigma)
        good = chi2_dist.sf(chi2, ndf) > TAG_PROBABILITY
        pred, var, e = pred[good], var[good], ev[tag][good]
        window = np.maximum(MIN_WINDOW_MM, WINDOW_SIGMAS * np.sqrt(var + sig[ip] ** 2))
        local = pred - p.center - base.planes[p.name].alignment
        strip = p.strip_of(local)
        bad = np.array(res.dead_strips + res.hot_strips, dtype=float)
        inside = (np.abs(local) < 0.5 * p.width - EDGE_MARGIN_MM) & ~_near(strip, bad, window, p)
        pl = np.full(inside.sum(), index)
        _, dist = nearest_hits(hits, n_planes, e[inside], pl, pred[inside])
        a.n += int(inside.sum())
        a.k += int((dist <= window[inside]).sum())
        # random coincidences: side windows of noise clusters only (the track's own cluster and
        # its de-multiplexing candidates exist only when the hit does; hot strips are excluded)
        noise_only = {"pos": _noise_positions(hits, e, pred, window, p, res), "plane_offsets": hits["plane_offsets"]}
        for sgn in (-1.0, 1.0):
            shifted = pred[inside] + sgn * SIDE_OFFSET_MM
            ok = np.abs(local[inside] + sgn * SIDE_OFFSET_MM) < 0.5 * p.width - EDGE_MARGIN_MM
            ok &= ~_near(strip[inside] + sgn * SIDE_OFFSET_MM / p.pitch, bad, window[inside], p)
            _, d = nearest_hits(noise_only, n_planes, e[inside][ok], pl[ok], shifted[ok])
            a.side += int((d <= window[inside][ok]).sum())
            a.n_side += int(ok.sum())
        _noise(hits, e, pred, window, p, res, a)


def _near(strip, bad, window, p) -> np.ndarray:
    """Positions (strip units) within a window and a strip of a dead or hot strip."""
    if bad.size == 0:
        return np.zeros(np.shape(strip), bool)
    return (np.abs(strip[:, None] - bad[None, :]) * p.pitch < window[:, None] + p.pitch).any(axis=1)


def _noise_hits_mask(hits, ev, pred, window, p, res):
    """(hits of plane ``p`` in the tagged events ``ev`` that are noise, their event-origin
    keys, the zone excluded around the track): clusters with no candidate within
    3 mm of the track (its cluster and the pieces a split leaves) nor on a hot
    strip (+-1); ambiguous candidates of one cluster share its origin."""
    row = np.full(int(hits["event"].max(initial=0)) + 2, -1, np.int64)
    row[ev] = np.arange(ev.size)
    sel = hits["plane"] == p.index
    r = np.where(sel, row[hits["event"]], -1)
    tracked = r >= 0
    zone = np.full(ev.size, OFF_TRACK_MM)
    near = np.zeros(sel.size, bool)
    near[tracked] = np.abs(hits["pos"][tracked] - pred[r[tracked]]) <= zone[r[tracked]]
    near_hot = [s + d for s in res.hot_strips for d in (-1, 0, 1)]
    hot = sel & np.isin(np.floor(hits["strip"] + 0.5).astype(np.int64), np.array(near_hot, np.int64))
    key = hits["event"].astype(np.int64) * 1_000_000 + hits["origin"]
    noise = tracked & ~np.isin(key, key[near | hot])
    return noise, key, zone


def _noise_positions(hits, ev, pred, window, p, res) -> np.ndarray:
    """Hit positions with every hit that is not noise of plane ``p`` set to NaN (never nearest)."""
    noise, _, _ = _noise_hits_mask(hits, ev, pred, window, p, res)
    other = hits["plane"] != p.index
    return np.where(noise | other, hits["pos"], np.nan)


def _noise(hits, ev, pred, window, p, res, a) -> None:
    """Noise clusters of plane ``p`` per tagged event (module doc)."""
    noise, key, zone = _noise_hits_mask(hits, ev, pred, window, p, res)
    a.noise += int(np.unique(key[noise]).size)
    a.noise_events += int(ev.size)
    a.excluded += float(np.sum(2.0 * zone + 3 * len(res.hot_strips) * p.pitch))


def efficiency_content(setup: Setup, base: RunConditions, result: EfficiencyResult) -> dict:
    """The new ``tracker`` payload body: the base's with the measured plane constants."""
    body = tracker_content(setup, base)
    for name, r in result.planes.items():
        entry = body["planes"][name]
        entry["efficiency"] = round(float(np.clip(r.efficiency, 0.0, 1.0)), 5)
        # the conditions' noise_hits: uncorrelated noise (the simulator adds the beam pile-up)
        entry["noise_hits"] = round(max(float(r.noise_hits), 0.0), 5)
        entry["dead_strips"] = [int(s) for s in r.dead_strips]
        if r.hot_strips:
            entry["hot_strips"] = [int(s) for s in r.hot_strips]
        else:
            entry.pop("hot_strips", None)
    return body
