"""The strata with an out-of-time beam muon near the trigger, estimated on the pile-up muon's truth.

In a stratum (m, k) of :mod:`na64reco.background.fake_kicks` with k >= 1 beam muons in the near times N,
the outgoing bend-view search may use hits of such a pile-up muon ("B") instead of, or besides,
the triggering muon's ("A").  With ``simulate(true_crossings=)`` the simulator writes B's true
crossings too, and :func:`na64reco.background.lone_muon_truth.classify` gives every used hit its source
(``src``: A's right hit, A's wrong twin, B's hit, or no truth within 5 resolutions) and, for
every hard muon, B's true crossings relative to A's (``pu_sep``) and B's time (``pu_time``).

The kick fit is linear: ``kappa - kappa_true = sum_j g_j dev_j`` plus the Gaussian error of the
right hits.  So:

* **measured** (:func:`measured_tail`): every tracked muon's closed-form Gaussian tail at its
  exact shift (B's used hits included: ``dev`` is exact), the Gaussian of the core width;
* **B's hits, seen or not** (:func:`pileup_set_bound`): for every hard muon (tracked or not),
  every pattern P of used planes the search allows and every non-empty set S of planes whose
  hit is B's (B's hit at its true crossing plus Gaussian smearing, A's hits on the other planes
  of P right), the fit's kappa error is Gaussian around ``g_P . d_S`` (``d_S`` = B minus A on
  S) and, independently (least squares), its chi2 exceeds the square of the residual component
  along ``W^1/2 (I - H) d_S``: the probability ``q_S`` that the fit passes the chi2 cut and
  lands in the box is at most the product of the two Gaussian tails, times the probability that
  the common track time passes (:func:`time_pass_log10_many`: B's APV hits at B's true time
  against A's at 0).  A track made of A's upstream hits and B's downstream ones has its chi2
  set by the two muons' separation at the magnet, which the truth gives; B's whole track
  (S = all planes) is in the box when B itself lost half its energy upstream of MS2 (target,
  ECAL: ~1e-3 of the beam muons).  The sum over P and S per muon (no assumption on the
  search) is therefore of order 1e-3 and useless; the bound used is the *choice* bound: the
  rate at which the search took B's hits on c planes (counted on the tracked muons, 90 % CL)
  times the largest mean ``q_S`` of a c-plane set, summed over c.  It assumes that, given c,
  which muons' B the search takes does not depend on B's momentum and the right hits' errors
  (a soft B, scattered more, is if anything less likely to match the incoming track).  With a
  sample of the stratum where B is forced soft (:mod:`na64reco.background.soft_pileup`, ``soft=`` of
  :func:`pileup_estimate`) the soft B's part is counted directly instead (the choice rate of soft
  B measured there, not assumed) and the bound keeps only the natural muons whose B is hard;
* **A's own outliers** (wrong twins, A's own cluster far off): the bound of
  :func:`na64reco.background.lone_muon.stratum_estimate` on the same muons with B's *separate* hits
  (B's crossing at least ``SEPARATE_SIGMAS`` plane resolutions from A's: not merged with A's
  cluster) replaced by A's true crossing (kappa corrected by the exact ``g_j dev_j``); B's
  hits merged with A's cluster (B within ``SEPARATE_SIGMAS``) stay outliers of A there.

Not covered (stated with the figures): B's hit itself mis-measured beyond its Gaussian (a far
or wrong-twin hit of B's), A's own outliers on a track that also uses B's hits (both are in
the measured part, as sampled, but not in the bound), APV hit times beyond their Gaussian
errors.  The bound uses B's sets *without* the track-time factor (given beside): the
reconstructed APV times of B's used hits lie near A's (median 2-5 ns in 2022 (0, 1), although
B is 15-79 ns away), so the closed form at B's true time is not trusted: the used ones are a
mis-timed minority (1.8 % of B's MM crossings give a usable hit within 10 ns of A, half of them
sharing an APV channel with A's cluster; GEM 0.1 %), selected by the hit-time window and the
track time (``benchmarks/pileup_hit_times.py``; docs/periods.md, "The pile-up muon on truth").
"""

from __future__ import annotations

import math

import numpy as np

from na64reco.background.lone_muon import (
    OUTLIER_SIGMAS,
    TIME_ERROR_MAX_NS,
    _log10_mean,
    _per_mot,
    add_soft_count,
    stratum_estimate,
    time_pass_terms,
)
from na64reco.background.lone_muon_truth import (
    CORRECT_SIGMAS,
    MAX_TWIN_OFFSET,
    SRC_FAR,
    SRC_PILEUP,
    SRC_RIGHT,
    SRC_TWIN,
    _box_sigmas,
    box_p_out,
)
from na64reco.errors import ConfigError

#: B's hit is *separate* from A's cluster when B's true crossing is at least this many plane
#: resolutions from A's (twice the 5-resolution window of a hit's source: the two windows do not
#: overlap); closer, the hit may be A's and B's clusters merged (an outlier of A's)
SEPARATE_SIGMAS = 2 * CORRECT_SIGMAS
#: a (pattern, set) term of the bound below this log10 box probability is dropped before its chi2
#: and time factors are computed (it cannot matter against the figures, ~1e-13 per MOT)
LOG10_NEGLIGIBLE = -40.0
#: out-of-time beam muons per event kept in the truth of :func:`na64reco.background.lone_muon_truth.classify`
#: (nearest in time first)
PILEUP_KEPT = 3
#: only the out-of-time beam muons within this |time| (ns) of the trigger are kept: the near times
#: N lie within [-45, 79] ns in both periods (fake_kicks.near_times); a muon farther out cannot
#: have a hit within the search's hit-time cut
PILEUP_KEPT_DT_NS = 100.0


def pileup_truth_by_event(events, crossings: dict, n_planes: int) -> tuple[np.ndarray, np.ndarray]:
    """The out-of-time beam muons of each event on truth (``simulate(true_crossings=)``): their
    true measured coordinate (events, :data:`PILEUP_KEPT`, planes) and time (events,
    :data:`PILEUP_KEPT`), the muons within :data:`PILEUP_KEPT_DT_NS` nearest in time first (NaN:
    none).  Crossing files written before the pile-up truth existed give all NaN."""
    ev = np.asarray(events["event"], np.int64)
    u = np.full((ev.size, PILEUP_KEPT, n_planes), np.nan)
    tt = np.full((ev.size, PILEUP_KEPT), np.nan)
    if "pileup_muon_event" not in crossings or not ev.size:
        return u, tt
    mu_t = np.asarray(crossings["pileup_muon_time"], float)
    mu_row, rank, keep = _kept_muons(ev, crossings)
    tt[mu_row[keep], rank[keep]] = mu_t[keep]
    mid = np.asarray(crossings["pileup_muon"], np.int64)
    c = keep[mid]
    u[mu_row[mid[c]], rank[mid[c]], np.asarray(crossings["pileup_plane"], np.int64)[c]] = \
        np.asarray(crossings["pileup_u"], float)[c]
    return u, tt


def pileup_muon_field_by_event(events, crossings: dict, key: str = "pileup_muon_p") -> np.ndarray:
    """A per-muon field of the kept out-of-time beam muons (events, :data:`PILEUP_KEPT`; NaN: none,
    or a crossing file without ``key``), in the order of :func:`pileup_truth_by_event`: e.g.
    ``pileup_muon_p``, the momentum behind the last tracker plane (GeV; NaN also: stopped), or
    ``pileup_muon_near`` (1: a forced near muon) of :mod:`na64reco.sim.forced_soft`."""
    ev = np.asarray(events["event"], np.int64)
    p = np.full((ev.size, PILEUP_KEPT), np.nan)
    if key not in crossings or not ev.size:
        return p
    mu_row, rank, keep = _kept_muons(ev, crossings)
    p[mu_row[keep], rank[keep]] = np.asarray(crossings[key], float)[keep]
    return p


def _kept_muons(ev: np.ndarray, crossings: dict):
    """Per pile-up muon: its event's row, its rank by |time| in the event, and whether it is kept."""
    order = np.argsort(ev)

    def row_of(numbers):
        r = order[np.clip(np.searchsorted(ev, numbers, sorter=order), 0, ev.size - 1)]
        return r, ev[r] == numbers

    mu_t = np.asarray(crossings["pileup_muon_time"], float)
    mu_row, mu_ok = row_of(np.asarray(crossings["pileup_muon_event"], np.int64))
    mu_ok &= np.abs(mu_t) <= PILEUP_KEPT_DT_NS
    idx = np.flatnonzero(mu_ok)
    idx = idx[np.lexsort((np.abs(mu_t[idx]), mu_row[idx]))]
    first = np.searchsorted(mu_row[idx], mu_row[idx], side="left")
    rank = np.full(mu_t.size, -1)
    rank[idx] = np.arange(idx.size) - first
    return mu_row, rank, (rank >= 0) & (rank < PILEUP_KEPT)


def pileup_sources(used, wrong, far, h, hits, ev_of, pu_u):
    """The source of each used hit of :func:`na64reco.background.lone_muon_truth.classify` (``src``, SRC_* codes;
    ``src_muon``: which kept pile-up muon, -1 none): the muon's own right hit or wrong twin, a
    kept out-of-time beam muon's (the hit's twin group within ``CORRECT_SIGMAS`` of that muon's
    true crossing, ``pu_u`` (tracked, kept, planes)), or far (no truth within ``CORRECT_SIGMAS``).
    ``h`` the used hit index per muon and plane, ``hits`` the hit table, ``ev_of`` the event of
    each hit."""
    pos, sig, origin = hits["pos"], hits["sigma"], hits["origin"]
    src = np.where(used, SRC_RIGHT, 0).astype(np.int8)
    src[wrong] = SRC_TWIN
    src[far] = SRC_FAR
    src_muon = np.full(used.shape, -1, np.int8)
    for k in range(pu_u.shape[1]):
        dk = np.full(used.shape, np.inf)
        for off in range(-MAX_TWIN_OFFSET, MAX_TWIN_OFFSET + 1):
            q = np.clip(h + off, 0, pos.size - 1)
            same = (origin[q] == origin[h]) & (hits["plane"][q] == hits["plane"][h]) & (np.abs(q - h) == abs(off))
            same &= ev_of[q] == ev_of[h]
            d = np.where(same, np.abs(pos[q] - pu_u[:, k, :]) / sig[q], np.inf)
            dk = np.minimum(dk, np.nan_to_num(d, nan=np.inf))
        hit_k = far & (dk < CORRECT_SIGMAS) & (src != SRC_PILEUP)
        src[hit_k] = SRC_PILEUP
        src_muon[hit_k] = k
    return src, src_muon


def _require(m: dict, keys) -> None:
    missing = [k for k in keys if k not in m]
    if missing:
        raise ConfigError(f"pile-up truth estimate: the classified muons lack {', '.join(missing)} "
                          f"(parts classified before the pile-up truth existed: re-simulate them)")


def own_only(m: dict, geometry: dict) -> dict:
    """The muons with B's separate hits replaced by A's true crossing (``dev`` 0, not far, kappa
    shifted back by ``g_j dev_j``: the fit is linear), for the bound of A's own outliers."""
    _require(m, ("src", "pu_sep"))
    sig = np.asarray(geometry["sigma"], float)[None, :]
    src = np.asarray(m["src"])
    dev = np.nan_to_num(np.asarray(m["dev"], float))
    tracked = np.asarray(m["all_tracked"], bool)
    smu = np.asarray(m["src_muon"], np.int64)
    sep = np.asarray(m["pu_sep"], float)[tracked]  # (tracked, kept muons, planes)
    sep_used = np.take_along_axis(sep, np.maximum(smu, 0)[:, None, :], axis=1)[:, 0, :]
    separate = (src == SRC_PILEUP) & (np.abs(np.nan_to_num(sep_used, nan=0.0)) >= SEPARATE_SIGMAS * sig)
    out = dict(m)
    gain = np.asarray(m["gain"], float)
    out["kappa"] = np.asarray(m["kappa"], float) - np.sum(np.where(separate, gain * dev, 0.0), axis=1)
    bits = 1 << np.arange(src.shape[1])
    out["far"] = np.asarray(m["far"], np.int64) & ~(separate * bits).sum(1)
    out["dev"] = np.where(separate, 0.0, np.asarray(m["dev"], float)).astype(np.float32)
    out["dk_wrong"] = np.asarray(m["dk_wrong"], float)
    return out | {"_separate": separate}


def measured_tail(m: dict, width: float, mean: float, box: float | None = None, sigma=None) -> np.ndarray:
    """log10 of each tracked muon's box probability: the Gaussian of ``width`` (pull units) about
    ``mean`` at its exact shift ``sum_j g_j dev_j`` over the used hits that are not A's right ones
    (``src`` other than right: wrong twins, B's hits, hits with no truth near) and, with the plane
    resolutions ``sigma`` given, the right ones farther than ``OUTLIER_SIGMAS`` from the truth (the
    outliers of :func:`na64reco.background.lone_muon.p00_estimate`: the core is fitted without them)."""
    from scipy.special import log_ndtr

    src = np.asarray(m["src"])
    dev = np.nan_to_num(np.asarray(m["dev"], float))
    out = src > 1
    if sigma is not None:
        out |= (src == 1) & (np.abs(dev) > OUTLIER_SIGMAS * np.asarray(sigma, float)[None, :])
    shift = np.sum(np.where(out, np.asarray(m["gain"], float) * dev, 0.0), axis=1)
    sig_k = np.asarray(m["sigma_kappa"], float)
    room = _box_sigmas(m, box) - mean * sig_k
    return log_ndtr(-(room - shift) / (width * sig_k)) / math.log(10.0)


def time_pass_log10_many(n_own: int, n_foreign: int, dt: np.ndarray, sigma: float, prob_min: float = 1e-4,
                         outliers: int = 1) -> np.ndarray:
    """An upper bound of :func:`na64reco.background.lone_muon.time_pass_log10` for an array of time
    differences ``dt`` (ns), fast: each noncentral chi2 term (k dof, noncentrality lam, cut x) is
    bounded by ``Phi(sqrt(x) - sqrt(lam))`` (the chi2 is at least the square of its component along
    the two groups' time contrast, a unit Gaussian about ``sqrt(lam)``)."""
    from scipy.special import log_ndtr

    from na64reco.reco.tracking.stage import time_chi2_cuts

    a, b = int(n_own), int(n_foreign)
    n = a + b
    dt = np.asarray(dt, float)
    if n < 2:
        return np.zeros(dt.shape)
    cuts = time_chi2_cuts(prob_min, max(n, 2))
    ln10 = math.log(10.0)

    def log10_cdf(k: int, x: int, y: int) -> np.ndarray:
        if k < 1 or x == 0 or y == 0:
            return np.zeros(dt.shape)
        lam = (dt / sigma) ** 2 * x * y / (x + y)
        return log_ndtr(math.sqrt(cuts[k + 1]) - np.sqrt(lam)) / ln10

    terms = time_pass_terms(a, b, outliers, log10_cdf)
    tot = np.logaddexp.reduce(np.stack(terms) * ln10, axis=0) / ln10
    return np.minimum(tot, 0.0)


def _fit_matrices(geometry: dict, used: np.ndarray):
    """Gains (planes,), sigma of kappa (mrad, hit resolutions only) and the standardized residual
    map ``V = W^1/2 (I - H)`` (used planes, planes; zero columns off the pattern) of a pattern."""
    dz, down, sig = geometry["dz"], geometry["down"], np.asarray(geometry["sigma"], float)
    npl = dz.size
    a = np.stack([np.ones(npl), dz, -dz * down], axis=1)[used]
    w = 1.0 / sig[used] ** 2
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    g = np.zeros(npl)
    g[used] = (cov @ (a * w[:, None]).T)[2]
    h = (a @ cov @ a.T) * w[None, :]
    v = np.zeros((int(used.sum()), npl))
    v[:, used] = np.sqrt(w)[:, None] * (np.eye(int(used.sum())) - h)
    return g, math.sqrt(cov[2, 2]), v


def patterns(geometry: dict, max_missing: int) -> list[np.ndarray]:
    """The patterns of used planes the search allows: at most ``max_missing`` planes without a hit
    and at least 4 used (a chi2 to cut on)."""
    npl = geometry["dz"].size
    out = []
    for code in range(1, 1 << npl):
        u = ((code >> np.arange(npl)) & 1).astype(bool)
        if npl - u.sum() <= max_missing and u.sum() >= 4:
            out.append(u)
    return out


def pileup_set_bound(m: dict, geometry: dict, width: float, mean: float, box: float | None = None, *,
                     time_sigma: float = TIME_ERROR_MAX_NS, negligible: float = LOG10_NEGLIGIBLE) -> dict:
    """What B's hits can do, in every configuration (module doc).  Per hard muon, allowed pattern P
    and non-empty set S of planes given to B (each kept pile-up muon), the probability that the fit
    of those hits passes the chi2 cut, the common track time and lands in the box:

        q_S = Phi(-(room - g_P . d_S) / (width sigma_P)) x Phi(c - r_S) x P(track time | S)

    (``r_S = |W^1/2 (I - H) d_S| / width``, ``c = sqrt(chi2_ndf_max ndf) / width``: the chi2 cut
    needs the right hits' residual component along ``d_S``'s to cancel at least ``r_S - c``; an
    upper bound of the noncentral chi2 probability).  ``mean``, ``width``: the core's (pull units).

    Returns, per set S, ``q_S`` averaged over the hard muons (``log10_mean_by_set``), per muon the
    sum over P and S (``log10_union_per_tracked``: no assumption on which set the search takes,
    the mean over hard muons per tracked muon), and the *choice* bound: the rate at which the
    search takes B's hits on c planes (90 % CL limit, counted on the tracked muons) times the
    largest ``q_S`` of a c-plane set, summed over c (``log10_choice_per_tracked``; it assumes the
    search's choice of B's hits is independent of B's own momentum and of the right hits'
    errors, given c)."""
    from scipy.special import log_ndtr

    from na64reco.stats.limits import poisson_upper_limit

    _require(m, ("pu_sep", "pu_time", "hard_p_true", "src"))
    ln10 = math.log(10.0)
    npl = geometry["dz"].size
    c = float(m["c_gev_mrad"])
    edge = box_p_out() if box is None else float(box)
    sep = np.asarray(m["pu_sep"], float)  # (hard, kept, planes)
    tpu = np.asarray(m["pu_time"], float)  # (hard, kept)
    n_hard = sep.shape[0]
    n_tracked = int(np.sum(m["all_tracked"]))
    room0 = c / edge - c / np.asarray(m["hard_p_true"], float)  # mrad, before the core mean
    timed = np.asarray(geometry.get("timed", np.ones(npl, bool)), bool)
    prob_min = float(geometry.get("track_time_prob_min", 1e-4))
    outl = int(geometry.get("track_time_outliers", 1))
    total = np.full(n_hard, -np.inf)  # natural log, per hard muon: the union over P and S
    total_nt = np.full(n_hard, -np.inf)  # without the time factor
    sum_by_set: dict[str, float] = {}  # natural log of the sum over the hard muons, per set
    sum_by_set_nt: dict[str, float] = {}  # the same without the time factor
    size_of: dict[str, int] = {}
    for used in patterns(geometry, int(m["max_missing"])):
        g, sig_k, v = _fit_matrices(geometry, used)
        ndf = int(used.sum()) - 3
        c_w = math.sqrt(float(geometry["chi2_ndf_max"]) * ndf) / width
        sig_w = width * sig_k
        room = room0 - mean * sig_k
        idx = np.flatnonzero(used)
        for code in range(1, 1 << idx.size):
            on = idx[((code >> np.arange(idx.size)) & 1).astype(bool)]
            mask = np.zeros(npl, bool)
            mask[on] = True
            b_t = int((mask & timed).sum())
            a_t = int((used & ~mask & timed).sum())
            name = "".join("B" if mask[j] else ("A" if used[j] else "-") for j in range(npl))
            size_of[name] = int(on.size)
            for k in range(sep.shape[1]):
                d = sep[:, k, :][:, on]
                ok = np.all(np.isfinite(d), axis=1) & np.isfinite(tpu[:, k])
                if not ok.any():
                    continue
                d = d[ok]
                lb = log_ndtr(-(room[ok] - d @ g[on]) / sig_w)
                keep = lb / ln10 > negligible
                if not keep.any():
                    continue
                r = np.sqrt(np.sum((d[keep] @ v[:, on].T) ** 2, axis=1)) / width
                lc = log_ndtr(c_w - r) if ndf > 0 else np.zeros(r.size)
                lt = time_pass_log10_many(a_t, b_t, np.abs(tpu[ok, k][keep]), time_sigma, prob_min, outl) * ln10
                rows = np.flatnonzero(ok)[keep]
                term = lb[keep] + lc
                total_nt[rows] = np.logaddexp(total_nt[rows], term)
                total[rows] = np.logaddexp(total[rows], term + lt)
                sum_by_set[name] = float(np.logaddexp(sum_by_set.get(name, -np.inf), np.logaddexp.reduce(term + lt)))
                sum_by_set_nt[name] = float(np.logaddexp(sum_by_set_nt.get(name, -np.inf), np.logaddexp.reduce(term)))
    frac = n_tracked / max(n_hard, 1)
    lg = total / ln10
    mean_by_set = {k: v / ln10 - math.log10(max(n_hard, 1)) for k, v in sum_by_set.items()}
    mean_by_set_nt = {k: v / ln10 - math.log10(max(n_hard, 1)) for k, v in sum_by_set_nt.items()}
    # the search's choice: tracked muons by the number of planes with B's hits
    src = np.asarray(m["src"])
    n_b = (src == SRC_PILEUP).sum(1)
    chosen = np.bincount(n_b, minlength=npl + 1)[: npl + 1]
    choice_terms, choice_terms_nt = [], []
    by_size = {}
    for size in range(1, npl + 1):
        q = max((v for k, v in mean_by_set.items() if size_of[k] == size), default=-math.inf)
        rate = poisson_upper_limit(int(chosen[size]), cl=0.9, method="classical") / max(n_tracked, 1)
        by_size[size] = {"tracked_using": int(chosen[size]), "rate_upper_90": rate, "log10_max_q": q,
                         "set_of_max_q": max((k for k in mean_by_set if size_of[k] == size),
                                             key=lambda k: mean_by_set[k], default=None)}
        choice_terms.append(math.log10(rate) + q)
        choice_terms_nt.append(math.log10(rate) + max((v for k, v in mean_by_set_nt.items() if size_of[k] == size),
                                                      default=-math.inf))
    top_sets = dict(sorted(mean_by_set.items(), key=lambda kv: -kv[1])[:8])
    top_sets_nt = dict(sorted(mean_by_set_nt.items(), key=lambda kv: -kv[1])[:8])
    return {
        "hard": n_hard, "tracked": n_tracked, "with_pileup_muon": int(np.sum(np.isfinite(tpu).any(axis=1))),
        "log10_union_per_tracked": (_log10_mean(lg) - math.log10(max(frac, 1e-300))) if n_hard else -math.inf,
        "log10_union_per_tracked_without_time": (_log10_mean(total_nt / ln10) - math.log10(max(frac, 1e-300)))
        if n_hard else -math.inf,
        "log10_choice_per_tracked": _log10_sum_(choice_terms), "choice_by_planes": by_size,
        "log10_choice_per_tracked_without_time": _log10_sum_(choice_terms_nt),
        "log10_mean_by_set_top": top_sets, "log10_mean_by_set_top_without_time": top_sets_nt,
        "choice_terms_without_time": dict(zip(by_size, choice_terms_nt, strict=True)),
        "time_sigma_ns": time_sigma, "negligible_log10": negligible,
        "patterns": len(patterns(geometry, int(m["max_missing"]))),
    }


def _log10_sum_(values) -> float:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return -math.inf
    top = max(v)
    return top + math.log10(sum(10.0 ** (x - top) for x in v))


def validate_edges(m: dict, width: float, mean: float, edges=(150.0, 145.0, 140.0, 135.0, 130.0, 125.0),
                   sigma=None) -> list[dict]:
    """Estimate against a direct count with looser box edges (GeV) where the count is not empty:
    the tracked muons with ``kappa >= C / edge`` (reco p_out below the edge) against the sum of
    their closed-form tails at their exact shifts, for all muons and for those using B's hits."""
    src = np.asarray(m["src"])
    with_b = np.any(src == SRC_PILEUP, axis=1)
    kappa = np.asarray(m["kappa"], float)
    c = float(m["c_gev_mrad"])
    out = []
    for e in edges:
        p = 10.0 ** measured_tail(m, width, mean, e, sigma)
        hit = kappa >= c / e
        out.append({"edge_gev": float(e), "count": int(hit.sum()), "estimate": float(p.sum()),
                    "count_with_pileup_hits": int(hit[with_b].sum()),
                    "estimate_with_pileup_hits": float(p[with_b].sum())})
    return out


def pileup_estimate(m: dict, geometry: dict, period: dict | None = None, stratum: tuple[int, int] = (0, 1),
                    box: float | None = None, soft: dict | None = None, **kwargs) -> dict:
    """The figures of a stratum with k >= 1 pile-up muons on the pile-up truth (module doc): the
    estimate of :func:`na64reco.background.lone_muon.stratum_estimate` on the muons with B's separate hits
    taken out (A's own outliers and B's merged hits), the measured tail with every hit's exact
    shift, B's set bound, and per MOT the sum of the two bounds.

    ``soft``: the figures of the stratum's sample with B forced soft
    (:func:`na64reco.background.soft_pileup.soft_summary`).  B's set term is then the direct count of that
    sample (B in the forced region R: ``P_R x`` its fakes' 90 % upper per hard muon) plus the
    set bound over the natural muons whose B is not soft (:func:`na64reco.background.soft_pileup.hard_b_only`);
    the choice bound over all of them stays as a cross-check (``pileup_truth.set_bound``).  Not
    given, it is taken from the period's JSON, ``period["soft_pileup"]["m,k"]``, when there
    (``benchmarks/soft_pileup.py`` writes it), so a rerun of the strata keeps the measured term."""
    if tuple(stratum)[1] < 1:
        raise ConfigError(f"pile-up truth estimate: stratum {tuple(stratum)} has no pile-up muon in N")
    if soft is None and period:
        soft = (period.get("soft_pileup") or {}).get(f"{stratum[0]},{stratum[1]}")
    own = own_only(m, geometry)
    separate = own.pop("_separate")
    est = stratum_estimate(own, geometry, None, stratum, box, **kwargs)
    width, mean = float(est["width_used"]), float(est["core"]["mean"])
    lg = measured_tail(m, width, mean, box, geometry["sigma"])
    b = pileup_set_bound(m, geometry, width, mean, box)
    set_term = b["log10_choice_per_tracked_without_time"]
    soft_block = None
    if soft is not None:
        from na64reco.background.soft_pileup import hard_b_only, soft_term

        m_hard, split = hard_b_only(m, geometry)
        b_hard = pileup_set_bound(m_hard, geometry, width, mean, box)
        direct = soft_term(soft, b["tracked"], b["hard"])
        set_term = _log10_sum_([b_hard["log10_choice_per_tracked_without_time"], direct])
        soft_block = {"sample": soft, "hard_b": split | {
            "log10_choice_per_tracked_without_time": b_hard["log10_choice_per_tracked_without_time"],
            "choice_by_planes": b_hard["choice_by_planes"], "log10_mean_by_set_top": b_hard["log10_mean_by_set_top"],
            "log10_mean_by_set_top_without_time": b_hard.get("log10_mean_by_set_top_without_time"),
            "choice_terms_without_time": b_hard.get("choice_terms_without_time")},
            "log10_direct_per_tracked": direct,
            "log10_choice_bound_per_tracked_all_b": b["log10_choice_per_tracked_without_time"],
            "log10_set_term_per_tracked": set_term}
    src = np.asarray(m["src"])
    with_b = np.any(src == SRC_PILEUP, axis=1)
    ln10 = math.log(10.0)
    own_bound = float(est["log10_p_bound"])
    est["own_outlier_bound_log10"] = own_bound
    est["log10_p_measured_own_only"] = est["log10_p_measured"]
    est["log10_p_measured"] = _log10_mean(lg) if lg.size else -math.inf
    est["pileup_truth"] = {
        "source_counts": {name: int(np.sum(src == code)) for code, name in
                          ((1, "own right"), (2, "own wrong twin"), (3, "far (no truth within 5 resolutions)"),
                           (4, "pile-up muon"))},
        "muons_by_pileup_hits": np.bincount((src == SRC_PILEUP).sum(1), minlength=3).tolist(),
        "muons_by_separate_pileup_hits": np.bincount(separate.sum(1), minlength=3).tolist(),
        "muons_with_pileup_and_own_outlier": int(np.sum(with_b & np.any((src == 2) | (src == 3), axis=1))),
        "log10_measured_with_pileup_hits": (_log10_mean(lg[with_b]) + math.log10(with_b.mean())) if with_b.any()
        else -math.inf,
        "largest_shift_over_room_with_pileup_hits": float(np.max(
            (np.asarray(m["kappa"]) - np.asarray(m["kappa_true"]))[with_b] / _box_sigmas(m, box)[with_b],
            initial=-np.inf)),
        "set_bound": b,
        "validation": validate_edges(m, width, mean, sigma=geometry["sigma"]),
        "separate_sigmas": SEPARATE_SIGMAS,
    }
    if soft_block is not None:
        est["pileup_truth"]["soft"] = soft_block
    # B's sets without the time factor: the reconstructed APV times of B's used hits lie near A's
    # (median 2-5 ns in 2022 (0, 1), B 15-79 ns away), so the closed form at B's true time is not trusted
    est["log10_p_bound"] = float(np.logaddexp(own_bound * ln10, set_term * ln10) / ln10)
    est["bound_from"] = (f"A's own outliers ({est['bound_from']}) + " + (
        "B soft: the direct count with B forced soft + B hard: its sets x the search's choice rate" if soft_block
        else "B's sets x the search's choice rate") + " (without the track-time factor)")
    if "log10_p_integrated_upper" in est:  # A's outliers integrated (outlier_tail): B's sets are added to its upper
        own_up = float(est["log10_p_integrated_upper"])
        est["log10_p_integrated_upper_own_only"] = own_up
        est["log10_p_integrated_upper"] = float(np.logaddexp(own_up * ln10, set_term * ln10) / ln10)
    est["method"] = (f"stratum ({stratum[0]}, {stratum[1]}) on the pile-up truth (benchmarks/lone_muon_tail.py): "
                     "each used hit's source on truth; closed-form Gaussian tails at exact shifts; bound: A's own "
                     "outlier sets + every set of planes given to the pile-up muon (chi2 and track-time closed forms)")
    est["fakes"] = int(np.sum(m["fake"]))
    if period:
        est.update(_per_mot(est, period, tuple(stratum)))
        if soft_block is not None and "weight" in est:  # the parts of B's term per MOT
            lg = math.log10(est["weight"] * est["tracked"] / est["hard"] / est["denominator_per_event"]
                            * est["kept_per_mot"])
            central = 10.0 ** (soft_term(soft, b["tracked"], b["hard"], "per_hard_natural") + lg)
            fakes = int(soft.get("fakes", 0))
            soft_block["per_mot"] = {
                "soft_b_direct_upper_90": 10.0 ** (soft_block["log10_direct_per_tracked"] + lg),
                "soft_b_direct": central, "soft_b_direct_err": central / math.sqrt(fakes) if fakes else 0.0,
                "soft_b_fakes": fakes,
                "hard_b_sets_choice": 10.0 ** (soft_block["hard_b"]["log10_choice_per_tracked_without_time"] + lg),
                "set_term": 10.0 ** (set_term + lg),
                "old_choice_bound_all_b": 10.0 ** (soft_block["log10_choice_bound_per_tracked_all_b"] + lg),
                "own_outliers_integrated_upper": 10.0 ** (est.get("log10_p_integrated_upper_own_only",
                                                                  own_bound) + lg)}
            add_soft_count(est, soft_block["per_mot"])  # the counted soft fakes join the central value
            if str(est.get("per_mot_upper_from", "")).startswith("outliers integrated"):
                est["per_mot_upper_from"] = ("outliers integrated (90 % upper) + the pile-up muon forced soft (direct "
                                             "count, 90 % upper) + its hard sets x the search's choice")
    return est
