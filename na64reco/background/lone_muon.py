"""The lone beam muon's momentum mis-measurement, classified on truth (the (0, 0) stratum).

In the (0, 0) stratum of :mod:`na64reco.background.fake_kicks` (no uncorrelated noise cluster in the
region R of the MS2 bend-view planes, no out-of-time beam muon in the near times N) every
hit the outgoing search can use on the MS2 bend view is the muon's own: its cluster, or a
twin of it (the mirror position of a straw hit, a ghost of a multiplexed micromegas
single; twins share the hit's ``origin``).  Its reconstructed p_out is the kick fit
(:mod:`na64reco.reco.tracking.tracks`) of those hits.  With the right hits the fit is
linear in Gaussian deviations (hit smearing, Highland scattering), so the curvature error
is Gaussian; anything else is discrete and is classified here on truth, muon by muon,
from the true crossings the simulator writes on request (``simulate(true_crossings=)``):

``wrong``     a used hit is a twin of the muon's hit other than the one nearest the true
              crossing (straw left/right, micromegas ghost)
``far``       a used hit's twin group holds no hit within ``CORRECT_SIGMAS`` plane resolutions
              of the truth: the muon's own cluster mis-measured beyond its Gaussian core (a
              non-Gaussian centroid: strip noise above threshold at the cluster's edge, an
              out-of-time cluster merged into it), or not the muon's hit at all
``missing``   planes of the view without a usable hit of the muon within ``CORRECT_SIGMAS``
              (plane inefficiency, out-of-time reconstruction, a dropped MM single)
``correct``   neither wrong nor far (missing planes allowed: the fit is then simply
              less constrained, still Gaussian with its own covariance)

Per tracked muon (:data:`na64reco.background.fake_kicks.TRACKING_CUTS`, true p_out above
``HARD_P_OUT``): the fitted deflection ``kappa`` (mrad), its sigma from the fit's own
covariance (hit resolutions only, :func:`kick_gain`), the true deflection
``C / p_true`` (``C`` = the magnet's momentum at 1 mrad, the thin-kick relation of the
reconstruction), the pull, and for ``wrong`` muons the deflection change the wrong twins
make, ``sum_j g_j (u_used - u_right twin)`` (exact: the fit is linear in the hits).
:func:`summarize` turns the muons of a sample into the figures of the estimate
(:func:`p00_estimate`).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from na64reco.background.lone_muon_truth import (
    CORRECT_SIGMAS,
    _box_sigmas,
    kick_gain,
    popcount,
    set_reach,
)
from na64reco.errors import ConfigError

#: quantile of the right hits' residual norm taken in the chi2 bound of :func:`set_reach`
#: (what lies beyond is added to the bound as such)
RESIDUAL_QUANTILE = 1e-20
#: a used hit farther than this many plane resolutions from the truth is an outlier of the
#: estimate (:func:`p00_estimate`), its shift counted muon by muon
OUTLIER_SIGMAS = 3.5
#: the bound's largest outlier deviation per plane beyond those seen: this many times the
#: largest seen (at the rate limit of none seen)
DEV_FACTOR = 2.0
#: muons per pattern of used planes over which the bound is averaged (evenly spaced)
BOUND_MUONS = 2000


def _outlier_bound(m, geometry, used, room, width_k, rates, devs, inflation, set_cap, quantile,
                   max_muons: int = BOUND_MUONS):
    """log10 of the mean over the muons of the bound of :func:`p00_estimate` (see there):
    ``room`` the distance to the box minus the core mean (mrad), ``width_k`` the core width
    (mrad), ``rates`` / ``devs`` (levels, planes) the rate limit and largest deviation (mm) of
    each outlier level of each plane; patterns with more than ``max_muons`` muons are averaged
    over that many of them, evenly spaced in their distance to the box.  Also returns the largest difference between the
    gains of the geometry and the stored ones (mrad/mm)."""
    import itertools

    from scipy import stats
    from scipy.special import log_ndtr

    npl = used.shape[1]
    bits = 1 << np.arange(npl)
    code_of = (used * bits).sum(1)
    ln10 = math.log(10.0)
    check = 0.0
    width_ratio = float(np.median(width_k / np.asarray(m["sigma_kappa"], float))) if code_of.size else 1.0
    log_rates = np.log10(np.maximum(rates, 1e-300))
    total, weight = -np.inf, 0
    by_size = np.full(npl + 1, -np.inf)  # the bound's terms by number of outlier planes
    for pattern in np.unique(code_of):
        sel = np.flatnonzero(code_of == pattern)
        check = max(check, float(np.max(np.abs(np.asarray(m["gain"], float)[sel] - set_reach(
            geometry, ((pattern >> np.arange(npl)) & 1).astype(bool))[0][None, :]))))
        n_pattern = sel.size
        if sel.size > max_muons:  # evenly spaced in the distance to the box (both extremes kept)
            sel = sel[np.argsort(room[sel] / width_k[sel])]
            sel = sel[np.linspace(0, sel.size - 1, max_muons).astype(np.int64)]
        u = ((pattern >> np.arange(npl)) & 1).astype(bool)
        g, reach = set_reach(geometry, u)
        ndf = int(u.sum()) - 3
        c = math.sqrt(geometry["chi2_ndf_max"] * max(ndf, 0))
        q = width_ratio * math.sqrt(stats.chi2.isf(quantile, ndf)) if ndf > 0 else 0.0
        acc = log_ndtr(-room[sel] / width_k[sel])  # no outlier
        acc_k = [acc] + [np.full(sel.size, -np.inf) for _ in range(npl)]
        idx = np.flatnonzero(u)
        for states in itertools.product(range(rates.shape[0] + 1), repeat=idx.size):
            st = np.array(states)
            on = st > 0
            if not on.any():
                continue
            planes = idx[on]
            lv = st[on] - 1
            k = int(on.sum())
            p_set = float(np.sum(log_rates[lv, planes]))
            if k >= 2:
                p_set = min(p_set + (k - 1) * math.log10(inflation), math.log10(set_cap[k]))
            code = int(np.sum(bits[planes]))
            shift = min(float(np.sum(np.abs(g[planes]) * devs[lv, planes])), (c + q) * reach[code])
            term = p_set * ln10 + np.logaddexp(log_ndtr(-(room[sel] - shift) / width_k[sel]), math.log(quantile))
            acc_k[k] = np.logaddexp(acc_k[k], term)
        for k in range(npl + 1):
            by_size[k] = np.logaddexp(by_size[k], float(np.logaddexp.reduce(acc_k[k]) - math.log(sel.size))
                                      + math.log(n_pattern))
        weight += n_pattern
    total = np.logaddexp.reduce(by_size)
    norm = math.log(max(weight, 1))
    return (total - norm) / ln10, check, ((by_size - norm) / ln10).tolist()


def _integrated(m, geometry, used, outl, wrong, room, s_k, n_multi, pair_exp, outlier_sigmas, quantile,
                max_muons: int = BOUND_MUONS, upper_shape: str | None = None) -> dict:
    """The outliers' box probability per tracked muon integrated over their measured and fitted
    deviation densities (:func:`na64reco.background.outlier_tail.estimate`): ``used`` / ``outl`` / ``wrong``
    (muons, planes) masks (used, outlier, wrong twin), ``room`` the distance to the box minus
    the core mean and ``s_k`` the core width (mrad) per muon; each pattern of used planes
    averaged over its muons (the ``max_muons`` closest to the box each as itself, the others in
    bins: :func:`_muon_sample`; the bound's evenly spaced sample over-weights the closest muon,
    which the count check shows at p_out < 130-140 GeV), its chi2 cap as in
    :func:`_outlier_bound`."""
    from scipy import stats

    from na64reco.background import outlier_tail

    sigma = np.asarray(geometry["sigma"], float)
    dev = np.nan_to_num(np.asarray(m["dev"], float))
    gain = np.asarray(m["gain"], float)
    npl = used.shape[1]
    # a straw hit's mirror is at most a pitch from the hit (twice the drift radius), plus the smearing
    pitch = np.asarray(m["view_straw_pitch"], float)
    bound = np.where(pitch > 0, (pitch + CORRECT_SIGMAS * sigma) / sigma, math.inf)
    planes = [outlier_tail.PlaneOutliers(np.abs(dev[outl[:, j], j]) / sigma[j], (gain * dev)[outl[:, j], j] > 0,
                                         int(used[:, j].sum()), wrong[outl[:, j], j], float(bound[j]))
              for j in range(npl)]
    bits = 1 << np.arange(npl)
    code_of = (used * bits).sum(1)
    width_ratio = float(np.median(s_k / np.asarray(m["sigma_kappa"], float))) if code_of.size else 1.0
    patterns = []
    for pattern in np.unique(code_of):
        sel = np.flatnonzero(code_of == pattern)
        n_pattern = sel.size
        r, sk, w = _muon_sample(room[sel], s_k[sel], max_muons)
        u = ((pattern >> np.arange(npl)) & 1).astype(bool)
        g, reach = set_reach(geometry, u)
        ndf = int(u.sum()) - 3
        c = math.sqrt(geometry["chi2_ndf_max"] * max(ndf, 0))
        q = width_ratio * math.sqrt(stats.chi2.isf(quantile, ndf)) if ndf > 0 else 0.0
        patterns.append(outlier_tail.Pattern(u, g, reach, c + q, r, sk, int(n_pattern), w))
    o = outl.astype(np.int64)
    u = used.astype(np.int64)
    tw = outl & (gain * dev > 0)  # towards the box
    signs = np.full((npl, npl, 3), np.nan)
    for i in range(npl):
        for j in range(i + 1, npl):
            both = outl[:, i] & outl[:, j]
            if both.any():
                ti, tj = tw[both, i], tw[both, j]
                signs[i, j] = [np.mean(ti & tj), np.mean(ti & ~tj), np.mean(~ti & tj)]
    return outlier_tail.estimate(patterns, planes, sigma, n_multi, pair_exp, outlier_sigmas, quantile,
                                 upper_shape=upper_shape, pair_counts=o.T @ o, pair_used=u.T @ u, pair_signs=signs)


#: width of the bins of the distance to the box (fit sigmas) that stand for the muons beyond the
#: closest ones in the integrated estimate
Z_BIN_SIGMAS = 0.01


def _muon_sample(room: np.ndarray, s: np.ndarray, closest: int):
    """The muons of a pattern for the box integrals: the ``closest`` ones to the box (in fit
    sigmas) each as itself, the others by bins of ``Z_BIN_SIGMAS`` in ``room / s`` (their mean
    room and sigma, weight their count); returns room, sigma, weights (summing to 1)."""
    z = room / s
    order = np.argsort(z)
    n = z.size
    near, rest = order[:closest], order[closest:]
    if not rest.size:
        return room[near], s[near], np.full(near.size, 1.0 / n)
    b = np.floor(z[rest] / Z_BIN_SIGMAS).astype(np.int64)
    _, inv, cnt = np.unique(b, return_inverse=True, return_counts=True)
    r_b = np.bincount(inv, weights=room[rest]) / cnt
    s_b = np.bincount(inv, weights=s[rest]) / cnt
    return (np.concatenate([room[near], r_b]), np.concatenate([s[near], s_b]),
            np.concatenate([np.full(near.size, 1.0 / n), cnt / n]))


#: the count check of the integrated estimate: boxes p_out < these (GeV), where the sample has events
COUNT_BOXES_GEV = (130.0, 140.0)
#: and boxes at these many core widths above each muon's true deflection plus the core mean
COUNT_K_SIGMAS = (4.0, 5.0, 6.0, 7.0)
#: muons per pattern of used planes in the count check's integrals
COUNT_MUONS = 500


def count_check(m, geometry, used, outl, wrong, mean_k, s_k, n_multi, pair_exp, outlier_sigmas, quantile,
                upper_shape: str, boxes=COUNT_BOXES_GEV, k_sigmas=COUNT_K_SIGMAS,
                max_muons: int = COUNT_MUONS) -> list[dict]:
    """The integrated estimate (core and outliers) against a direct count of the classified
    sample, with the box moved to where the sample has events: ``p_out < box`` (``kappa > C /
    box``) and ``kappa - kappa_true - mean > k s``; per box the counted muons, the estimated
    number (central; core and outliers apart; the 90 % upper value) and the Poisson probabilities
    of the count being this large or larger / this small or smaller given the central value."""
    from scipy import stats

    kappa, truth = np.asarray(m["kappa"], float), np.asarray(m["kappa_true"], float)
    c = float(m["c_gev_mrad"])
    n = kappa.size
    rows = []
    cases = [(f"p_out < {b:g} GeV", c / b - truth - mean_k, kappa > c / b) for b in boxes]
    cases += [(f"{k:g} core widths", k * s_k, kappa - truth - mean_k > k * s_k) for k in k_sigmas]
    for name, room, hit in cases:
        e = _integrated(m, geometry, used, outl, wrong, room, s_k, n_multi, pair_exp, outlier_sigmas, quantile,
                        max_muons, upper_shape=upper_shape)
        est = n * e["central"]["p"]
        k = int(np.sum(hit))
        rows.append({"box": name, "counted": k, "estimated": est, "core": n * e["central"]["by_outlier_planes"][0],
                     "outliers": n * e["central"]["p_outliers"], "upper": n * e["upper"]["p"],
                     "p_ge": float(stats.poisson.sf(k - 1, est)), "p_le": float(stats.poisson.cdf(k, est))})
    return rows


def toy_pattern(geometry: dict, room_sigmas: np.ndarray, quantile: float = RESIDUAL_QUANTILE):
    """The pattern of all used planes of ``geometry`` for the toys of :mod:`na64reco.background.outlier_tail`:
    its gains, reach and chi2 cap, muons at ``room_sigmas`` fit sigmas from the box."""
    from scipy import stats

    from na64reco.background import outlier_tail

    npl = geometry["dz"].size
    u = np.ones(npl, bool)
    g, reach = set_reach(geometry, u)
    s_k, _ = kick_gain(geometry["dz"], geometry["down"], np.asarray(geometry["sigma"], float)[None, :], u[None, :])
    ndf = npl - 3
    cap = math.sqrt(geometry["chi2_ndf_max"] * ndf) + (math.sqrt(stats.chi2.isf(quantile, ndf)) if ndf > 0 else 0.0)
    room = np.asarray(room_sigmas, float) * float(s_k[0])
    return outlier_tail.Pattern(u, g, reach, cap, room, np.full(room.size, float(s_k[0])), int(room.size))




def _log10_mean(log10_values: np.ndarray) -> float:
    if not log10_values.size:
        return -math.inf
    top = float(np.max(log10_values))
    if not math.isfinite(top):
        return -math.inf
    return top + math.log10(float(np.mean(10.0 ** (log10_values - top))))














#: 1 % critical value of the Anderson-Darling statistic for a normal sample with estimated
#: mean and variance, modified by (1 + 0.75/n + 2.25/n^2) (Stephens 1974, case 3)
AD_CRITICAL_1PCT = 1.035


def anderson_darling(z: np.ndarray) -> float:
    """Anderson-Darling statistic of standardized values ``z`` against the unit normal, with the
    small-sample modification of the case of estimated mean and variance (compare with
    :data:`AD_CRITICAL_1PCT`)."""
    from scipy.special import log_ndtr

    x = np.sort(np.asarray(z, float))
    n = x.size
    i = np.arange(1, n + 1)
    a2 = -n - np.mean((2 * i - 1) * (log_ndtr(x) + log_ndtr(-x[::-1])))
    return float(a2 * (1 + 0.75 / n + 2.25 / n**2))


def core_fit(pull: np.ndarray) -> dict:
    """Gaussian description of the pulls of the right-hit fits: mean, width (with their errors),
    Kolmogorov-Smirnov p-value and Anderson-Darling statistic against the Gaussian of that mean
    and width, counts beyond 3, 4, 5 widths and what that Gaussian expects, largest |pull|."""
    from scipy import stats

    n = pull.size
    if n < 10:
        raise ConfigError(f"lone muon study: {n} right-hit muons: too few for the Gaussian check")
    mu, s = float(np.mean(pull)), float(np.std(pull, ddof=1))
    z = (pull - mu) / s
    return {"n": int(n), "mean": mu, "mean_err": s / math.sqrt(n), "width": s, "width_err": s / math.sqrt(2 * (n - 1)),
            "ks_p": float(stats.kstest(z, "norm").pvalue), "ad": anderson_darling(z),
            "ad_critical_1pct": AD_CRITICAL_1PCT,
            "tails_obs": [int(np.sum(np.abs(z) > k)) for k in (3, 4, 5)],
            "tails_exp": [float(n * 2 * stats.norm.sf(k)) for k in (3, 4, 5)],
            "max_abs_pull": float(np.max(np.abs(z))), "max_abs_pull_expected": float(stats.norm.isf(0.25 / n))}


def p00_estimate(m: dict, geometry: dict, period: dict | None = None, box: float | None = None, *,
                 outlier_sigmas: float = OUTLIER_SIGMAS, dev_factor: float = DEV_FACTOR,
                 residual_quantile: float = RESIDUAL_QUANTILE, bound_muons: int = BOUND_MUONS,
                 integrated: bool = True, count_boxes: bool = True) -> dict:
    """The figures of the (0, 0) stratum from classified muons (:func:`load_muons`).

    ``geometry``: :func:`view_geometry` of the period (checked against the stored gains).
    ``period``: the period's ``misreco_<period>.json`` (strata weights and the kept muons per
    MOT of the forced estimate), for the rate per tracked muon of the whole and per MOT.

    The fitted deflection error of a muon is ``sum_j g_j dev_j`` (hit deviations from the true
    crossings, the fit being linear) plus the scattering, so it splits into the right hits'
    part, Gaussian (checked: ``core``, :func:`core_fit`), and the *outliers*: used hits that are
    a wrong twin or farther than ``CORRECT_SIGMAS`` from the truth (``shift``: their
    ``sum_j g_j dev_j``).

    * ``log10_p_measured``: every tracked muon's box probability, a Gaussian of the core's
      width (upper 2-sigma value, in units of the muon's own fit sigma) around its true
      deflection plus the core mean plus its measured outlier shift, averaged (the central
      value); ``log10_p_core`` the same for the right-hit muons alone (x their fraction);
    * ``log10_p_bound``: the same muons, every used plane either right or an outlier at one of
      three levels: deviations up to the 99 % quantile of the plane's outliers (probability: the
      90 % CL limit of its outlier rate ``r_j``), up to the largest seen (the limit of the rate
      above the quantile), up to ``dev_factor`` x that (the limit of none seen); a set S of
      outlier planes with probability ``F^(|S|-1) prod_{j in S} rate_j`` (``F`` >= 1 the
      correlation of outliers across planes: the 90 % CL limit of the muons with two or more
      outlier planes over what independent planes give; and at most the rate limit of muons
      with |S| or more outlier planes), shifting the fit towards the box by the least of (a)
      ``sum_{j in S} |g_j| d_j`` at the levels' deviations and (b) what the chi2 cut lets
      outliers on S do (:func:`set_reach`, the right hits' residual norm at its
      ``residual_quantile``, the rest added as such): the probability that rarer or larger
      outliers than the sample shows, alone or combined, reach the box (averaged over
      ``bound_muons`` muons per pattern of used planes, evenly spaced in their distance to
      the box): the *adversarial bound*, kept as a cross-check;
    * ``integrated`` (unless ``integrated=False``): the outliers' box probability estimated
      instead of bounded (:mod:`na64reco.background.outlier_tail`: per plane the measured deviations and a
      fitted tail beyond the largest, integrated over the outlier-plane sets with the Gaussian
      core), central and 90 % upper value (``log10_p_integrated``, ``log10_p_integrated_upper``);
    * ``fakes``: counted directly.
    """
    from scipy.special import log_ndtr

    from na64reco.stats.limits import poisson_upper_limit

    pull = (m["kappa"] - m["kappa_true"]) / m["sigma_kappa"]
    dist = _box_sigmas(m, box)
    sig_k = np.asarray(m["sigma_kappa"], float)
    dev = np.nan_to_num(np.asarray(m["dev"], float))
    gain = np.asarray(m["gain"], float)
    npl = gain.shape[1]
    planes = [str(p) for p in m["view_planes"]]
    bits = 1 << np.arange(npl)
    used = (m["used"][:, None] & bits) > 0
    wrong_p = (m["wrong"][:, None] & bits) > 0
    far_p = used & ~wrong_p & (np.abs(dev) > outlier_sigmas * np.asarray(geometry["sigma"], float)[None, :])
    outl = wrong_p | far_p
    wrong, far = wrong_p.any(axis=1), far_p.any(axis=1)
    right = ~outl.any(axis=1)
    core = core_fit(pull[right])
    width = core["width"] + 2 * core["width_err"]
    shift = np.sum(np.where(outl, gain * dev, 0.0), axis=1)
    n_used = used.sum(0)
    n_out = outl.sum(0)
    rate_up = np.array([poisson_upper_limit(int(k), cl=0.9, method="classical") / max(int(n), 1)
                        for k, n in zip(n_out, n_used, strict=True)])
    max_out = np.array([float(np.max(np.abs(dev[outl[:, j], j]), initial=0.0)) for j in range(npl)])
    max_dev = np.array([float(np.max(np.abs(dev[used[:, j], j]), initial=0.0)) for j in range(npl)])
    seen = np.maximum(max_out, max_dev)
    d_bound = dev_factor * seen
    ul = poisson_upper_limit  # noqa: N806 - short alias
    beyond = np.array([ul(0, cl=0.9, method="classical") / max(int(n), 1) for n in n_used])
    # three outlier levels per plane: up to the 99 % quantile of its outliers' deviations (rate
    # limit of all its outliers), up to the largest seen (rate limit of those above the quantile),
    # up to dev_factor x that (rate limit of none seen)
    q99 = np.array([float(np.quantile(np.abs(dev[outl[:, j], j]), 0.99)) if n_out[j] else 0.0 for j in range(npl)])
    q99 = np.maximum(q99, outlier_sigmas * np.asarray(geometry["sigma"], float))
    above = np.array([int(np.sum(np.abs(dev[outl[:, j], j]) > q99[j])) for j in range(npl)])
    rate_above = np.array([ul(int(k), cl=0.9, method="classical") / max(int(n), 1)
                           for k, n in zip(above, n_used, strict=True)])
    mean_k = core["mean"] * sig_k
    tracked = int(dist.size)

    def log10_tail(sel, extra):
        z = (dist[sel] - mean_k[sel] - extra[sel]) / (width * sig_k[sel])
        return log_ndtr(-z) / math.log(10.0)

    everyone = np.ones(tracked, bool)
    # the bound: sum over the sets S of outlier planes, per pattern of used planes
    k_out = outl.sum(1)
    r_obs = n_out / np.maximum(n_used, 1)
    pair_exp = 0.0  # expected muons with >= 2 outlier planes if the planes were independent
    for i in range(npl):
        for j in range(i + 1, npl):
            pair_exp += float(np.sum(used[:, i] & used[:, j])) * r_obs[i] * r_obs[j]
    n_multi = int(np.sum(k_out >= 2))
    multi_up = poisson_upper_limit(n_multi, cl=0.9, method="classical")
    inflation = max(1.0, multi_up / pair_exp) if pair_exp > 0 else math.inf
    # a set of k >= 2 planes: at most the rate limit of muons with k or more outlier planes
    set_cap = np.array([poisson_upper_limit(int(np.sum(k_out >= k)), cl=0.9, method="classical") / max(tracked, 1)
                        for k in range(npl + 1)])
    bound, geom_check, bound_by_size = _outlier_bound(
        m, geometry, used, dist - mean_k, width * sig_k, np.stack([rate_up, rate_above, beyond]),
        np.stack([q99, seen, d_bound]),
        inflation, set_cap, residual_quantile, bound_muons)
    integ, integ_message = None, None
    if integrated:
        try:
            integ = _integrated(m, geometry, used, outl, wrong_p, dist - mean_k, width * sig_k, n_multi, pair_exp,
                                outlier_sigmas, residual_quantile, bound_muons)
        except ConfigError as exc:  # no outlier tail to fit: the adversarial bound stands alone
            integ_message = str(exc)
    out = {
        "method": "truth-classified lone muon (benchmarks/lone_muon_tail.py): right-hit fits Gaussian (closed-form "
                  "tail), outliers (wrong twins, far hits) by their measured shifts; bound: every set of outlier "
                  "planes at its rate limit and twice the largest deviation seen",
        "view_planes": planes, "hard": int(m["all_tracked"].size), "tracked": tracked,
        "classes": {"right hits": int(right.sum()), "wrong twin": int((wrong & ~far).sum()),
                    "far hit": int(far.sum()),
                    **{f"{k} plane(s) missing": int(np.sum(popcount(m["missing"]) == k)) for k in range(3)},
                    "tracked with more missing planes than the search allows": int(
                        np.sum(popcount(m["missing"] & ~m["far"]) > int(m["max_missing"])))},
        "core": core, "width_used": width,
        "box_distance_median_sigma": float(np.median(dist / sig_k)) if tracked else math.nan,
        "box_distance_min_sigma": float(np.min(dist / sig_k)) if tracked else math.nan,
        "outlier_planes": {"planes": planes, "used": n_used.tolist(), "outliers": n_out.tolist(),
                           "rate_upper_90": rate_up.tolist(), "max_outlier_dev_mm": max_out.tolist(),
                           "max_dev_mm": max_dev.tolist(), "bound_dev_mm": d_bound.tolist(),
                           "beyond_rate_upper_90": beyond.tolist(), "q99_outlier_dev_mm": q99.tolist(),
                           "above_q99": above.tolist(), "above_q99_rate_upper_90": rate_above.tolist(),
                           "muons_by_outlier_planes": np.bincount(k_out, minlength=3).tolist(),
                           "two_or_more_expected_if_independent": pair_exp, "two_or_more": n_multi,
                           "correlation_factor_upper_90": inflation if math.isfinite(inflation) else None,
                           "set_cap_by_size": set_cap.tolist(),
                           },
        "shift_classes": {},
        "log10_p_core": _log10_mean(log10_tail(right, np.zeros(tracked))) + (
            math.log10(right.mean()) if right.any() else 0.0),
        "log10_p_measured": _log10_mean(log10_tail(everyone, shift)),
        "log10_p_bound": bound, "log10_p_bound_by_outlier_planes": bound_by_size,
        "geometry_check_max_gain_diff": geom_check,
        "outlier_sigmas": outlier_sigmas, "dev_factor": dev_factor, "residual_quantile": residual_quantile,
        "fakes": int(np.sum(m["fake"])),
    }
    if integ_message:
        out["integrated_message"] = integ_message
    if integ is not None:
        out["integrated"] = integ
        if count_boxes:
            out["count_check"] = count_check(m, geometry, used, outl, wrong_p, mean_k, core["width"] * sig_k, n_multi,
                                             pair_exp, outlier_sigmas, residual_quantile, integ["upper_shape"])
        out["log10_p_integrated"] = math.log10(max(integ["central"]["p"], 1e-300))
        out["log10_p_integrated_upper"] = math.log10(max(integ["upper"]["p"], 1e-300))
        out["method"] = ("truth-classified lone muon (benchmarks/lone_muon_tail.py): right-hit fits Gaussian "
                         "(closed-form tail), the outliers (wrong twins, far hits) integrated over their measured "
                         "deviations per plane and a fitted tail beyond (na64reco.background.outlier_tail); "
                         "90 % upper value: "
                         "rates, correlation and tails at their 90 % limits; the adversarial bound (every set of "
                         "outlier planes at its rate limit and twice the largest deviation seen) kept as a cross-check")
    for name, sel in (("wrong twin", wrong & ~far), ("far hit", far)):
        frac = shift[sel] / dist[sel]
        out["shift_classes"][name] = {
            "n": int(sel.sum()), "rate": float(sel.mean()) if tracked else 0.0,
            "max_shift_fraction": float(np.max(np.abs(frac), initial=0.0)),
            "shift_fraction_quantiles": np.quantile(frac, [0.0, 0.01, 0.5, 0.99, 1.0]).tolist() if sel.any() else [],
            "max_abs_pull": float(np.max(np.abs(pull[sel]), initial=0.0)),
            "planes": {p: int(np.sum(((m["wrong"] | m["far"])[sel] >> j) & 1)) for j, p in enumerate(planes)}}
    out["all_pulls"] = {"max_abs_pull": float(np.max(np.abs(pull))) if tracked else 0.0,
                        "beyond_5": int(np.sum(np.abs(pull - core["mean"]) > 5 * core["width"]))}
    out["tail_shapes"] = tail_shapes_gof(m, mean_k, shift, core["width"])
    if period:
        out.update(_per_mot(out, period))
    return out


def tail_shapes_gof(m: dict, mean_k, shift, width: float, sideband=(80.0, 144.0)) -> dict:
    """The campaign's tail fit against the truth: the spectrum ``E_beam p_out(reco) / p_out(true)``
    of the tracked muons, the exponential and the power law fitted in ``sideband`` (binned, 2 GeV)
    and extrapolated below 80 GeV as in ``benchmarks/misreco_forced_noise.py``; beside them the
    truth model's expectation per bin (every muon's Gaussian at its measured shift, core width)
    and each description's Poisson deviance in the sideband bins with at least one expected event."""
    from scipy import stats
    from scipy.special import log_ndtr

    from na64reco.background.estimates import extrapolate, fit_tail
    from na64reco.background.fake_kicks import P_OUT_EDGES

    e = float(m["beam_energy_gev"])
    scaled = e * m["p_reco"] / m["p_true"]
    counts = np.histogram(scaled, bins=P_OUT_EDGES)[0]
    edges = np.asarray(P_OUT_EDGES, float)
    inside = (edges[:-1] >= sideband[0]) & (edges[1:] <= sideband[1])
    lows, highs, obs = edges[:-1][inside], edges[1:][inside], counts[inside].astype(float)
    sig = width * m["sigma_kappa"]

    def below(x):  # expected muons with scaled < x: kappa > E kappa_true / x
        z = (e * m["kappa_true"] / x - m["kappa_true"] - mean_k - shift) / sig
        return float(np.sum(np.exp(log_ndtr(-z))))

    model = np.array([below(b) - below(a) for a, b in zip(lows, highs, strict=True)])
    out = {"sideband": list(sideband), "in_sideband": int(obs.sum()), "truth_model_in_sideband": float(model.sum()),
           "observed": obs.astype(int).tolist(), "truth_model": model.tolist(), "bins": lows.tolist()}

    def deviance(exp):
        ok = exp > 0
        o, x = obs[ok], exp[ok]
        seen = o > 0  # o log(o / x), 0 for o = 0; as a difference of logs: no overflow for a tiny x
        d = 2 * (np.sum(x - o) + np.sum(o[seen] * (np.log(o[seen]) - np.log(x[seen]))))
        return float(d), int(ok.sum())

    d, nb = deviance(model)
    out["truth_model_deviance"], out["truth_model_bins"] = d, nb
    out["truth_model_p"] = float(stats.chi2.sf(d, max(nb, 1)))
    for shape in ("exponential", "power_law"):
        try:
            fit = fit_tail(None, sideband, model=shape, peak=e, counts=counts, edges=edges)
        except Exception as exc:  # noqa: BLE001 - a failed fit is a result here, said as such
            out[shape] = {"message": str(exc)}
            continue
        n_box, err = extrapolate(fit, (None, 80.0))
        total = fit.model.integral(sideband[0], sideband[1], fit.theta)
        exp = obs.sum() * np.array([fit.model.integral(a, b, fit.theta) for a, b in zip(lows, highs, strict=True)]) \
            / total
        d, nb = deviance(exp)
        out[shape] = {"theta": float(fit.theta), "n_box": float(n_box), "n_box_err": float(err),
                      "n_box_per_tracked": float(n_box) / max(len(scaled), 1), "deviance": d, "bins": nb,
                      "p": float(stats.chi2.sf(d, max(nb - 1, 1)))}
    return out


def _per_mot(est: dict, period: dict, stratum: tuple[int, int] = (0, 0)) -> dict:
    """The figures of ``stratum`` (default (0, 0)) per tracked muon of the whole and per MOT: the
    stratum's weight x its box probability per hard muon / the tracked muons per hard muon at
    the nominal noise and pile-up (the strata of ``forced_noise`` in the period's JSON) x the
    kept muons per MOT.  A sample with counted fakes whose model upper value lies below the
    count's 90 % CL upper limit gets the count's (model-free) upper limit and at least the
    counted rate as ``per_mot`` (the model's kept as ``per_mot_model_upper``): the model missed
    what made them (2022 (2, 3), stop 20: the hits of two pile-up muons on one track)."""
    strata = (period.get("forced_noise") or {}).get("strata")
    if not strata:
        return {}
    s00 = next((s for s in strata if s["count"] == stratum[0] and s["pileup"] == stratum[1]), None)
    if s00 is None:
        return {}
    den = sum(float(s["weight"]) * s["tracked"] / s["hard"] for s in strata if s["hard"])
    from na64reco.background.estimates import kept_per_mot

    kept = kept_per_mot(period)
    frac = est["tracked"] / est["hard"]
    scale = float(s00["weight"]) * frac / den * kept  # P(box | tracked (0, 0) muon) -> per MOT
    lg = math.log10(scale)
    from na64reco.stats.limits import poisson_upper_limit

    up_count = float(s00["weight"]) * poisson_upper_limit(est["fakes"], cl=0.9, method="classical") / est["hard"] \
        / den * kept
    out = _per_mot_bound(est, s00, den, kept, lg, scale, up_count, stratum)
    if "log10_p_integrated" in est:  # the estimate replaces the adversarial bound (kept as a cross-check)
        up = 10.0 ** (est["log10_p_integrated_upper"] + lg)
        out.update({"per_mot_measured_shifts": out["per_mot"], "per_mot": 10.0 ** (est["log10_p_integrated"] + lg),
                    "per_mot_outlier_bound_adversarial": out["per_mot_outlier_bound"],
                    "per_mot_integrated_upper_90": up, "per_mot_upper": min(up, up_count),
                    "per_mot_upper_from": ("outliers integrated (90 % upper)" + (
                        " + the pile-up muon's sets x the search's choice" if "pileup_truth" in est else ""))
                    if up <= up_count else "count"})
        del out["per_mot_outlier_bound"]
    if est["fakes"] and out["per_mot_upper"] < up_count:  # counted fakes: a model bound below them is contradicted
        counted = float(s00["weight"]) * est["fakes"] / est["hard"] / den * kept
        out.update({"per_mot_model": out["per_mot"], "per_mot_model_upper": out["per_mot_upper"],
                    "per_mot_counted": counted,
                    # the count's Poisson error when it sets the central value (the row is then an estimate)
                    "per_mot_err": counted / math.sqrt(est["fakes"]) if counted >= out["per_mot"] else 0.0,
                    "per_mot": max(out["per_mot"], counted), "per_mot_upper": up_count,
                    "per_mot_upper_from": f"count ({est['fakes']} counted fake(s): the model's upper value "
                                          f"{out['per_mot_upper']:.2g} is below them)"})
    return out


def per_mot_for_campaign(est: dict, period: dict, stratum: tuple[int, int]) -> dict:
    """A classified stratum's per-MOT figures again, for the period's current campaign.

    The per-MOT figures of a stratum are its box probabilities per tracked muon (from the
    classification, unchanged) x the stratum's weight x the kept muons per MOT of the period's
    campaign (beam muons after all cuts but the box).  When the campaign is re-made (a new
    selection, trigger or field) this re-derives them without re-simulating the stratum; the
    old kept value is kept as ``kept_per_mot_classified_with``.  The forced-soft pile-up block
    of the (0, 1) stratum (``pileup_truth.soft``, :func:`na64reco.background.pileup_truth.pileup_estimate`)
    is linear in the kept muons too and is scaled with them."""
    out = copy.deepcopy(est)
    new = _per_mot(est, period, tuple(stratum))
    if not new:
        raise ConfigError(f"stratum {stratum}: the period has no forced_noise.strata row for it (its weight)")
    out.setdefault("kept_per_mot_classified_with", est.get("kept_per_mot"))
    soft = (out.get("pileup_truth") or {}).get("soft")
    if soft is not None and "per_mot" in soft:
        ratio = new["kept_per_mot"] / float(est["kept_per_mot"])
        soft["per_mot"] = {k: (v if k == "soft_b_fakes" else v * ratio) for k, v in soft["per_mot"].items()}
        add_soft_count(new, soft["per_mot"])
        new["per_mot_upper_from"] = est.get("per_mot_upper_from", new.get("per_mot_upper_from"))
    out.update(new)
    return out


def add_soft_count(est: dict, soft_per_mot: dict) -> None:
    """The (0, 1) stratum's counted forced-soft fakes (``soft_b_direct``, per MOT) join its central
    value, their Poisson error its ``per_mot_err`` (:func:`na64reco.background.pileup_truth.pileup_estimate`)."""
    est["per_mot_without_soft_count"] = est["per_mot"]
    est["per_mot"] = est["per_mot"] + soft_per_mot["soft_b_direct"]
    est["per_mot_err"] = soft_per_mot["soft_b_direct_err"]


def _per_mot_bound(est, s00, den, kept, lg, scale, up_count, stratum) -> dict:
    return {"weight_00" if tuple(stratum) == (0, 0) else "weight": float(s00["weight"]), "kept_per_mot": kept,
            "sample_size_upper_per_mot": float(s00.get("upper_90_per_tracked", math.nan)) * kept,
            "denominator_per_event": den,
            "log10_per_mot": est["log10_p_measured"] + lg, "log10_per_mot_upper": est["log10_p_bound"] + lg,
            "per_mot": 10.0 ** (est["log10_p_measured"] + lg),
            "per_mot_outlier_bound": 10.0 ** (est["log10_p_bound"] + lg), "per_mot_count_upper_90": up_count,
            # the smaller of the two bounds: the outlier sets' (model) and the count's (no model)
            "per_mot_upper": min(10.0 ** (est["log10_p_bound"] + lg), up_count),
            "per_mot_upper_from": "outlier sets" if 10.0 ** (est["log10_p_bound"] + lg) <= up_count else "count",
            "tail_fit_per_mot": {k: est["tail_shapes"][k]["n_box_per_tracked"] * scale
                                 for k in ("exponential", "power_law") if "n_box" in est["tail_shapes"].get(k, {})}}


# ----------------------------------------------------------------------------------------
# the strata with one extra hit source: one noise cluster in R, (1, 0), or one beam muon in N, (0, 1)

def single_hit_reach(geometry: dict, used: np.ndarray) -> np.ndarray:
    """Per plane j of the view: the largest deflection change (mrad) ONE wrong hit on j can make
    per unit of the fit's residual norm, ``|g_j| / |W^1/2 (I - H) e_j|`` (the one-plane sets of
    :func:`set_reach`; inf where a wrong hit on j leaves no residual, 0 on planes not used).
    With the right hits on the fit and the chi2 cut ``chi2 <= chi2_ndf_max x ndf``, one wrong
    hit moves the deflection by at most ``sqrt(chi2_ndf_max x ndf) x`` this."""
    npl = geometry["dz"].size
    _, reach = set_reach(geometry, used)
    return np.array([reach[1 << j] if used[j] else 0.0 for j in range(npl)])


#: largest per-hit APV time error of a beam-muon hit (ns): apv.strip_time_error_r x the APV noise
#: gives 0.1-1 ns (tracking.yaml, common track time); the closed form below is quoted at this value
TIME_ERROR_MAX_NS = 1.0


def time_pass_log10(n_own: int, n_foreign: int, dt: float, sigma: float, prob_min: float = 1e-4,
                    outliers: int = 1) -> float:
    """log10 of an upper bound on the probability that a view track with ``n_own`` APV hits of the
    trigger muon (time 0) and ``n_foreign`` APV hits of a pile-up muon (time ``dt``), all with the
    time error ``sigma``, passes the common track time (:func:`na64reco.reco.tracking.stage.
    time_consistent`): the chi2 of n timed hits about their mean is a noncentral chi2 of n - 1 dof
    with noncentrality ``(dt / sigma)^2 a b / (a + b)`` (a, b the hits of each time); with one
    outlier allowed, the union over the hit left out (a own ones: (a - 1, b); b foreign: (a, b - 1))
    at n - 2 dof.  0 (certain pass) when one of the groups is left empty (a or b <= 1 with the outlier)."""
    from scipy import stats

    from na64reco.reco.tracking.stage import time_chi2_cuts

    a, b = int(n_own), int(n_foreign)
    n = a + b
    if a < 0 or b < 0 or sigma <= 0:
        raise ValueError(f"time_pass_log10: n_own={n_own}, n_foreign={n_foreign}, sigma={sigma} must be >= 0, > 0")
    cuts = time_chi2_cuts(prob_min, max(n, 2))

    def log10_cdf(k: int, x: int, y: int) -> float:
        if k < 1 or x == 0 or y == 0:
            return 0.0 if k < 1 else float(stats.chi2.logcdf(cuts[k + 1], k) / math.log(10.0))
        lam = (dt / sigma) ** 2 * x * y / (x + y)
        return float(stats.ncx2.logcdf(cuts[k + 1], k, lam) / math.log(10.0))

    if n < 2:
        return 0.0
    return min(0.0, _log10_sum(time_pass_terms(a, b, outliers, log10_cdf)))


def time_pass_terms(a: int, b: int, outliers: int, log10_cdf) -> list:
    """The log10 terms of the union bound of :func:`time_pass_log10` for ``a`` own and ``b``
    foreign timed hits: all hits kept (n - 1 dof), and with one outlier allowed each hit left
    out in turn (n - 2 dof; ``a`` equal own terms, ``b`` equal foreign ones);
    ``log10_cdf(dof, own, foreign)`` gives one term (a float or an array)."""
    n = a + b
    terms = [log10_cdf(n - 1, a, b)]
    if outliers and n >= 3:
        if a:
            terms.append(math.log10(a) + log10_cdf(n - 2, a - 1, b))
        if b:
            terms.append(math.log10(b) + log10_cdf(n - 2, a, b - 1))
    return terms


def foreign_hits(m: dict) -> dict[str, np.ndarray]:
    """Per tracked muon of a classified sample: ``n_foreign`` the used hits that are not the
    muon's own (``far``: no hit of their twin group within ``CORRECT_SIGMAS`` of the truth: in
    the (1, 0) and (0, 1) strata the noise cluster or a hit of the pile-up muon, or, as in
    (0, 0), the muon's own cluster mis-measured), ``replacing`` those on a plane where the
    muon's own hit was there to use, ``on_missing`` those on a plane without it."""
    far = np.asarray(m["far"], np.int64)
    missing = np.asarray(m["missing"], np.int64)
    return {"n_foreign": popcount(far), "replacing": popcount(far & ~missing), "on_missing": popcount(far & missing)}


def stratum_estimate(m: dict, geometry: dict, period: dict | None = None, stratum: tuple[int, int] = (1, 0),
                     box: float | None = None, *, dt_min: float | None = None,
                     sigma_max: float = TIME_ERROR_MAX_NS, **kwargs) -> dict:
    """The figures of a stratum with extra hit sources (``stratum`` = (m noise clusters in R,
    k beam muons in N)) from its classified muons (:func:`load_muons`).

    Whatever the source of a wrong hit (the noise cluster, a hit of the pile-up muon, the
    muon's own cluster mis-measured), the fitted deflection error is still
    ``sum_j g_j dev_j`` (linear fit) plus scattering, so :func:`p00_estimate` applies as it
    stands: a Gaussian core checked on the muons fitted with right hits only, the outliers
    (the used foreign hits among them) by their measured shifts, and the bound over every set
    of outlier planes at its rate limit and its chi2-limited reach.  Added here:

    * ``foreign``: how many tracked muons used 0, 1, 2, ... foreign hits, how many of those
      replaced the muon's own hit or sat on a plane where it was missing, and the rate of use
      beside the (0, 0) far-hit rate of the period (``lone_muon_00`` of ``period``);
    * ``single_hit``: the closed form of one wrong hit (:func:`single_hit_reach`): per plane
      the largest shift the chi2 cut lets it make, in units of each muon's distance to the box
      (the right hits exactly on the fit, and with their residual norm at the bound's
      quantile), and the tracked muons for which one wrong hit on some plane can reach the box
      at all; the measured muons whose only outlier is one foreign hit against that limit (the
      right hits' own residual lets a few exceed it a little: the 1-D ``z`` of the bound);
    * ``track_time`` (k >= 1 pile-up muons, :func:`_track_time_block`): the tracked muons by
      foreign APV hits (in the common track time) and foreign straw hits, and the closed form
      (:func:`time_pass_log10`) of a track with two or more of a pile-up muon's APV hits and two or
      more of its own passing the time check, for a pile-up muon ``dt_min`` away and hit time
      errors ``sigma_max``;
    * per MOT (``period`` given): the stratum's weight in place of the (0, 0) one.
    """
    from scipy import stats

    from na64reco.stats.limits import poisson_upper_limit

    est = p00_estimate(m, geometry, None, box, **kwargs)
    est["stratum"] = [int(stratum[0]), int(stratum[1])]
    est["method"] = est["method"].replace("lone muon", f"stratum ({stratum[0]}, {stratum[1]})")
    f = foreign_hits(m)
    tracked = int(f["n_foreign"].size)
    ref = ((period or {}).get("lone_muon_00") or {}).get("classes", {})
    ref_tracked = ((period or {}).get("lone_muon_00") or {}).get("tracked")
    est["foreign"] = {
        "muons_by_foreign_hits": np.bincount(f["n_foreign"], minlength=3).tolist(),
        "muons_replacing_own_hit": int(np.sum(f["replacing"] > 0)),
        "muons_on_missing_plane_only": int(np.sum((f["on_missing"] > 0) & (f["replacing"] == 0))),
        "rate": float(np.mean(f["n_foreign"] > 0)) if tracked else 0.0,
        # the far-hit class of p00_estimate (a used hit beyond OUTLIER_SIGMAS), here and in (0, 0)
        "far_hit_class_rate": est["shift_classes"]["far hit"]["rate"],
        "far_hit_class_rate_00": (ref["far hit"] / ref_tracked) if ref_tracked and "far hit" in ref else None,
        "core_00": ((period or {}).get("lone_muon_00") or {}).get("core"),
    }
    # the closed form of one wrong hit: its largest pull on kappa within the chi2 cut
    npl = geometry["dz"].size
    bits = 1 << np.arange(npl)
    used = (np.asarray(m["used"])[:, None] & bits) > 0
    if tuple(stratum)[1] > 0:
        if dt_min is None:  # the smallest |time| of a pile-up muon of the near times (view_geometry)
            dt_min = geometry["near_dt_min_ns"]
        est["track_time"] = _track_time_block(m, geometry, used, bits, dt_min, sigma_max)
    code = (used * bits).sum(1)
    pull_width = est["width_used"]
    room = _box_sigmas(m, box) - est["core"]["mean"] * np.asarray(m["sigma_kappa"], float)
    reach_plane = np.zeros((tracked, npl))  # per muon and plane: one wrong hit's largest shift (mrad)
    reach_q = np.zeros(tracked)  # per muon, the largest over the planes with the right hits' residual quantile
    quantile = kwargs.get("residual_quantile", RESIDUAL_QUANTILE)
    for pattern in np.unique(code):
        sel = code == pattern
        u = ((pattern >> np.arange(npl)) & 1).astype(bool)
        ndf = int(u.sum()) - 3
        c = math.sqrt(geometry["chi2_ndf_max"] * max(ndf, 0))
        q = pull_width * math.sqrt(stats.chi2.isf(quantile, ndf)) if ndf > 0 else 0.0
        r = single_hit_reach(geometry, u)
        reach_plane[sel] = np.where(np.isinf(r), np.inf, c * r)[None, :]  # no residual: anywhere, even at ndf 0
        reach_q[sel] = (c + q) * float(np.max(r))
    reach_max = reach_plane.max(axis=1)
    planes = [str(p) for p in m["view_planes"]]
    one = f["n_foreign"] == 1
    far_b = np.asarray(m["far"], np.int64)
    rows = np.arange(tracked)
    j_one = np.where(one, np.log2(np.maximum(far_b, 1)).astype(np.int64), 0)
    gain = np.asarray(m["gain"], float)
    dev = np.nan_to_num(np.asarray(m["dev"], float))
    shift_one = gain[rows, j_one] * dev[rows, j_one]
    limit_one = reach_plane[rows, j_one]
    # the clean ones: no other outlier (no wrong twin, every other used hit within OUTLIER_SIGMAS)
    others = used & (np.abs(dev) > OUTLIER_SIGMAS * np.asarray(geometry["sigma"], float)[None, :])
    others[rows, j_one] = False
    one &= (np.asarray(m["wrong"]) == 0) & ~others.any(axis=1)
    ratio = np.abs(shift_one[one]) / np.maximum(limit_one[one], 1e-300)
    finite = np.isfinite(reach_plane) & (reach_plane > 0)
    # the closed form of one foreign hit at ANY deviation on plane j: the right hits' residual
    # component along the wrong hit's residual direction is a 1-D Gaussian z (width: the core's),
    # independent of their kappa error (least squares); the chi2 cut keeps |v_j d| <= c + |z|, so
    # the shift is at most (c + |z|) R_j: P_j = E_z[ Phi(-(room - (c + |z|) R_j) / (width sigma_kappa)) ]
    from scipy.special import log_ndtr

    zh, wh = np.polynomial.hermite_e.hermegauss(60)
    wh = wh / wh.sum()
    sig_core = pull_width * np.asarray(m["sigma_kappa"], float)
    log_pj = np.full((tracked, npl), -np.inf)
    for j in range(npl):
        ok = finite[:, j]
        if not ok.any():
            continue
        c_r = reach_plane[ok, j]  # c R_j
        r_j = c_r / np.maximum(np.array([math.sqrt(geometry["chi2_ndf_max"] * max(int(x) - 3, 0))
                                          for x in popcount(code[ok])]), 1e-300)
        arg = -(room[ok, None] - c_r[:, None] - pull_width * np.abs(zh)[None, :] * r_j[:, None]) / sig_core[ok, None]
        log_pj[ok, j] = np.logaddexp.reduce(log_ndtr(arg) + np.log(wh)[None, :], axis=1)
        inf_j = np.isinf(reach_plane[:, j]) & used[:, j]
        log_pj[inf_j, j] = 0.0  # no residual: one wrong hit on j can move the fit anywhere
    n_used = used.sum(0)
    rate_use = np.array([poisson_upper_limit(int(k), cl=0.9, method="classical") / max(int(n), 1)
                         for k, n in zip(est["outlier_planes"]["outliers"], n_used, strict=True)])
    mean_pj = np.array([_log10_mean(log_pj[used[:, j], j] / math.log(10.0)) for j in range(npl)])
    single_log10 = _log10_mean(np.array([math.log10(max(r, 1e-300)) + x + math.log10(max(n, 1) / max(tracked, 1))
                                         for r, x, n in zip(rate_use, mean_pj, n_used, strict=True)])) + math.log10(npl)
    est["single_hit"] = {
        "log10_p_reach_by_plane": {p: float(mean_pj[j]) for j, p in enumerate(planes)},
        "outlier_rate_upper_90_by_plane": {p: float(rate_use[j]) for j, p in enumerate(planes)},
        "log10_p_bound": float(single_log10),
        "max_shift_mrad_by_plane": {p: float(np.max(reach_plane[finite[:, j], j], initial=0.0))
                                    for j, p in enumerate(planes)},
        "planes_without_residual": {p: int(np.sum(np.isinf(reach_plane[:, j]))) for j, p in enumerate(planes)},
        "reach_over_room_max": float(np.max(reach_max / room)) if tracked else 0.0,
        "reach_over_room_median": float(np.median(reach_max / room)) if tracked else 0.0,
        "muons_one_hit_can_reach_box": int(np.sum(reach_max >= room)),
        "muons_one_hit_can_reach_box_with_residual_quantile": int(np.sum(reach_q >= room)),
        "measured_one_foreign": int(one.sum()),
        "measured_shift_over_room_max": float(np.max(np.abs(shift_one[one]) / room[one], initial=0.0)),
        "measured_shift_over_limit_max": float(np.max(ratio, initial=0.0)),
        "measured_shift_over_limit_quantiles": np.quantile(ratio, [0.5, 0.99]).tolist() if ratio.size else [],
        "measured_above_limit": int(np.sum(ratio > 1.0)),
    }
    # the bound: the outlier sets' (p00_estimate), or that with its one-outlier-plane part
    # replaced by the closed form of one outlier at any deviation, whichever is smaller
    by_size = est["log10_p_bound_by_outlier_planes"]
    combined = _log10_sum([by_size[0], single_log10, *by_size[2:]])
    est["log10_p_bound_outlier_sets"] = est["log10_p_bound"]
    est["log10_p_bound_single_hit_closed_form"] = combined
    est["bound_from"] = "one-hit closed form + larger outlier sets" if combined < est["log10_p_bound"] \
        else "outlier sets"
    est["log10_p_bound"] = min(combined, est["log10_p_bound"])
    if period:
        est.update(_per_mot(est, period, tuple(stratum)))
    return est


def _track_time_block(m: dict, geometry: dict, used: np.ndarray, bits: np.ndarray, dt_min: float,
                      sigma_max: float) -> dict:
    """The foreign hits of the tracked muons split by the common track time: ``timed`` planes (APV)
    are in it, straws not.  Counts per muon of foreign APV hits (b) and its own APV hits (a), and
    the closed-form pass probability of the mixed tracks a >= 2, b >= 2 (the largest over the
    patterns the view allows) at ``dt_min`` and ``sigma_max``."""
    npl = bits.size
    timed = np.asarray(geometry.get("timed", [not str(p).startswith("ST") for p in geometry["planes"]]), bool)
    far = (np.asarray(m["far"], np.int64)[:, None] & bits) > 0
    b = (far & timed[None, :] & used).sum(1)
    a = (~far & timed[None, :] & used).sum(1)
    straw = (far & ~timed[None, :] & used).sum(1)
    n_t = int(timed.sum())
    prob_min = float(geometry.get("track_time_prob_min", 1e-4))
    outl = int(geometry.get("track_time_outliers", 1))
    mixed = [(x, y) for x in range(2, n_t + 1) for y in range(2, n_t + 1 - x)]
    log_pass = {f"{x}+{y}": time_pass_log10(x, y, dt_min, sigma_max, prob_min, outl) for x, y in mixed}
    timing = {}
    if "htime" in m:  # the foreign APV hits' times against the weighted mean of the muon's own APV hits
        t = np.asarray(m["htime"], float)
        e = np.asarray(m["htime_err"], float)
        own = ~far & timed[None, :] & used & np.isfinite(t) & (e > 0)
        w = np.where(own, 1.0 / np.where(own, e, 1.0) ** 2, 0.0)
        sw = w.sum(1)
        mean = np.where(sw > 0, (w * np.nan_to_num(t)).sum(1) / np.maximum(sw, 1e-300), np.nan)
        fa = far & timed[None, :] & used & np.isfinite(t) & (sw > 0)[:, None]
        dtf = np.abs(t - mean[:, None])[fa]
        multi = fa & (b >= 2)[:, None] & (a >= 2)[:, None]
        dtm = np.abs(t - mean[:, None])[multi]
        timing = {"foreign_apv_hits_timed": int(fa.sum()),
                  "foreign_apv_dt_quantiles_ns": np.quantile(dtf, [0.1, 0.5, 0.9]).tolist() if dtf.size else [],
                  "foreign_apv_dt_ge_dt_min": int(np.sum(dtf >= 0.5 * dt_min)),
                  "foreign_apv_time_err_quantiles_ns": np.quantile(e[fa], [0.5, 0.9, 0.99]).tolist() if fa.any()
                  else [],
                  "mixed_2plus_foreign_hits": int(multi.sum()),
                  "mixed_2plus_dt_quantiles_ns": np.quantile(dtm, [0.1, 0.5, 0.9]).tolist() if dtm.size else [],
                  "mixed_2plus_dt_ge_half_dt_min": int(np.sum(dtm >= 0.5 * dt_min))}
    return {
        **timing,
        "timed_planes": [str(p) for p, t in zip(m["view_planes"] if "view_planes" in m else geometry["planes"], timed,
                                                 strict=True) if t],
        "dt_min_ns": float(dt_min), "sigma_max_ns": float(sigma_max), "prob_min": prob_min, "outliers": outl,
        "muons_by_foreign_apv_hits": np.bincount(b, minlength=3).tolist(),
        "muons_by_foreign_straw_hits": np.bincount(straw, minlength=2).tolist(),
        "two_plus_foreign_apv": int(np.sum(b >= 2)),
        "two_plus_foreign_apv_own_apv_two_plus": int(np.sum((b >= 2) & (a >= 2))),
        "two_plus_foreign_apv_own_apv_le1": int(np.sum((b >= 2) & (a <= 1))),
        "one_foreign_apv_plus_straw": int(np.sum((b == 1) & (straw >= 1))),
        "straw_only": int(np.sum((b == 0) & (straw >= 1))),
        "log10_pass_mixed_by_pattern": log_pass,
        "log10_pass_mixed_max": float(max(log_pass.values(), default=-math.inf)),
        "planes": npl,
    }


def _log10_sum(values) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if not v.size:
        return -math.inf
    top = float(v.max())
    return top + math.log10(float(np.sum(10.0 ** (v - top))))
