"""The lone muon's own outliers integrated instead of bounded (issue 9, stop 19).

The fitted deflection of a tracked muon is ``kappa = kappa_true + core + sum_{j in S} g_j d_j``
(the kick fit is linear in the hits: :mod:`na64reco.background.lone_muon`): a Gaussian core (the right
hits, checked there) and the *outliers*, the used hits of the set S of planes that are a wrong
twin or farther than ``OUTLIER_SIGMAS`` plane resolutions from the truth, each moving the fit
by its gain ``g_j`` (mrad/mm) times its deviation ``d_j`` (mm).  Here the box probability of
those outliers is *estimated*:

* per plane j and kind (far hit, wrong twin: a straw's mirror is at most a pitch away, its
  tail truncated there), the measured outlier deviations in plane resolutions,
  ``u = |d| / sigma_j`` (units that make planes comparable), the fraction of them pointing
  towards the box (``g_j d_j > 0``; the others are counted as no shift, which only adds), and
  a tail fitted above the ``TAIL_QUANTILE`` quantile (unbinned maximum likelihood):
  exponential ``f(u) = lam exp(-lam (u - u_t))`` or power law
  ``f(u) = alpha u_t^alpha / u^(alpha + 1)``, each with its Kolmogorov-Smirnov p-value
  (:func:`fit_tails`); fewer than ``MIN_TAIL`` values in the tail: the kind's tail of all
  planes pooled;
* the density of one outlier's shift on plane j: the measured deviations below the tail's
  threshold, the fitted tail above it, seen and unseen region (:func:`shift_density`), on a
  lattice of deflection shifts (mrad) per pattern of used planes;
* a set S of outlier planes has the rate ``F^(|S|-1) prod_{j in S} r_j`` (``r_j`` the plane's
  outlier rate, ``F`` the measured correlation: muons with two or more outlier planes over
  what independent planes give), a pair seen in the sample its measured rate and signs; the
  shift density of S is the convolution of its planes' densities (three or more planes: all
  towards the box); what the chi2 cut cannot let through (a total shift beyond ``cap_S``, the
  largest shift outliers on S can make within the cut: :func:`na64reco.background.lone_muon.set_reach`)
  is dropped;
* ``P(box) = sum_S rate(S) sum_x density_S(x) mean_i Phi(-(room_i - x) / s_i)`` over the
  tracked muons i of each pattern (``room_i`` the distance of the true deflection to the box
  minus the core mean, ``s_i`` the core width), weighted by the patterns' counts.

The central value takes the measured rates, ``F`` and the maximum-likelihood tails of the
shape chosen on the summed likelihood of the planes' fits; the 90 % upper value takes every
rate, ``F`` and tail parameter at its one-sided 90 % limit (the heavier tail), for each shape
the fits do not reject (KS p >= ``GOF_P_MIN`` on every plane fitted on its own), and the
larger of them: the spread between the shapes is part of it.  Validated on toys
(``benchmarks/outlier_tail_toys.py``) and against direct counts with the box moved to where
the sample has events (:func:`count_check` in :mod:`na64reco.background.lone_muon`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from na64reco.errors import ConfigError

#: the tail of a plane's outlier deviations is fitted above this quantile of them (lower ones: the measured
#: deviations steepen above it, lighter than exponential, and both shapes fail KS at 0.5-0.75 on the GEMs)
TAIL_QUANTILE = 0.9
#: fewer outliers than this in a plane's tail: the plane takes the tail of all planes pooled
MIN_TAIL = 20
#: a shape whose KS p-value is below this on a plane fitted on its own is rejected
GOF_P_MIN = 0.01
#: one-sided confidence level of the upper value's rates and tail parameters
CL = 0.9
#: bins of the shift grid per pattern of used planes
GRID_BINS = 2048
#: the shift grid reaches this many core widths beyond the largest distance to the box
GRID_MARGIN_SIGMAS = 12.0
SHAPES = ("exponential", "power_law")
#: the largest (set, pattern) terms reported
TOP_TERMS = 8


@dataclass(frozen=True)
class Tail:
    """A fitted tail of ``u`` above ``u_t``: ``shape`` with parameter ``par`` (exponential:
    the slope ``lam``; power law: the index ``alpha``), from ``n`` values."""

    shape: str
    u_t: float
    par: float
    n: int
    bound: float = math.inf

    def _s(self, x):
        if self.shape == "exponential":
            return np.exp(-self.par * (x - self.u_t))
        return (self.u_t / x) ** self.par

    def survival(self, u: np.ndarray) -> np.ndarray:
        """P(U > u | U > u_t) (1 below u_t), truncated at ``bound`` (a physical largest value)."""
        x = np.maximum(np.asarray(u, float), self.u_t)
        if not math.isfinite(self.bound):
            return self._s(x)
        if self.bound <= self.u_t:
            return np.where(x < self.bound, 1.0, 0.0)
        sb = float(self._s(np.array(self.bound)))
        return np.maximum(self._s(np.minimum(x, self.bound)) - sb, 0.0) / (1.0 - sb)

    def bounded(self, bound: float) -> Tail:
        return Tail(self.shape, self.u_t, self.par, self.n, float(bound))

    def heavier(self, cl: float = CL) -> Tail:
        """The tail with its parameter at the one-sided ``cl`` limit towards the heavier tail
        (both MLEs are ``n / sum``: ``2 n par / par_hat`` is chi2 with 2n dof)."""
        from scipy import stats

        return Tail(self.shape, self.u_t, self.par * float(stats.chi2.ppf(1.0 - cl, 2 * self.n)) / (2 * self.n), self.n,
                    self.bound)

    def sample(self, rng, size: int) -> np.ndarray:
        v = rng.random(size)
        if self.shape == "exponential":
            return self.u_t - np.log1p(-v) / self.par
        return self.u_t * (1.0 - v) ** (-1.0 / self.par)


def fit_tail(u: np.ndarray, u_t: float, shape: str) -> tuple[Tail, float]:
    """Unbinned maximum-likelihood fit of ``shape`` to the values ``u > u_t`` and its
    Kolmogorov-Smirnov p-value (parameter fitted on the same values: the p-value is high-sided)."""
    from scipy import stats

    x = np.asarray(u, float)
    x = x[x > u_t]
    if x.size < 2:
        raise ConfigError(f"outlier tail: {x.size} value(s) above u_t={u_t:g}: too few to fit a {shape}")
    if shape == "exponential":
        tail = Tail(shape, float(u_t), x.size / float(np.sum(x - u_t)), int(x.size))
        cdf = stats.expon(loc=u_t, scale=1.0 / tail.par).cdf
    elif shape == "power_law":
        tail = Tail(shape, float(u_t), x.size / float(np.sum(np.log(x / u_t))), int(x.size))
        cdf = stats.pareto(b=tail.par, scale=u_t).cdf
    else:
        raise ConfigError(f"outlier tail: shape {shape!r}: expected one of {', '.join(SHAPES)}")
    return tail, float(stats.kstest(x, cdf).pvalue)


KINDS = ("far", "wrong")


def log_likelihood(tail: Tail, u: np.ndarray) -> float:
    """Log-likelihood of the values ``u > u_t`` under ``tail`` (untruncated)."""
    x = np.asarray(u, float)
    x = x[x > tail.u_t]
    if tail.shape == "exponential":
        return float(x.size * math.log(tail.par) - tail.par * np.sum(x - tail.u_t))
    return float(x.size * (math.log(tail.par) + tail.par * math.log(tail.u_t)) - (tail.par + 1) * np.sum(np.log(x)))


@dataclass(frozen=True)
class PlaneOutliers:
    """The outliers of one plane: deviations ``u`` (plane resolutions, > 0) of all of them,
    ``toward`` (same length) whether each points towards the box, ``wrong`` whether it is a
    wrong twin (else a far hit), ``n_used`` muons that used the plane, ``wrong_bound`` the
    largest deviation a wrong twin can have (straws: the mirror of a hit is at most a pitch
    away; inf where no bound is known)."""

    u: np.ndarray
    toward: np.ndarray
    n_used: int
    wrong: np.ndarray | None = None
    wrong_bound: float = math.inf

    @property
    def n(self) -> int:
        return int(self.u.size)

    def kind(self, name: str) -> np.ndarray:
        w = np.zeros(self.n, bool) if self.wrong is None else np.asarray(self.wrong, bool)
        return w if name == "wrong" else ~w


def fit_tails(planes: list[PlaneOutliers], outlier_sigmas: float) -> dict:
    """Per plane, kind of outlier (far hit, wrong twin) and shape the fitted tail and its KS
    p-value (None where the plane has none of the kind), the pooled tail of the kind for planes
    with fewer than ``MIN_TAIL`` values in their own, and the shape chosen for all (``chosen``:
    the higher summed log-likelihood of the own fits, both shapes having one parameter; chosen
    plane by plane on their KS p-values it follows the noise and biases the central value up,
    toys)."""
    def threshold(u):
        return max(outlier_sigmas, float(np.quantile(u, TAIL_QUANTILE))) if u.size else outlier_sigmas

    def pooled_fit(values):
        out = {}
        for shape in SHAPES:
            try:
                out[shape] = fit_tail(values, threshold(values), shape)
            except ConfigError:
                out[shape] = None
        return out

    every = pooled_fit(np.concatenate([p.u for p in planes]) if planes else np.zeros(0))
    if every["exponential"] is None:
        raise ConfigError(f"outlier tail: {sum(p.n for p in planes)} outliers in all planes, too few above "
                          f"{outlier_sigmas:g} plane resolutions to fit a tail")
    pooled = {k: pooled_fit(np.concatenate([p.u[p.kind(k)] for p in planes])) for k in KINDS}
    out = []
    loglik = dict.fromkeys(SHAPES, 0.0)
    for p in planes:
        entry = {}
        for k in KINDS:
            u = p.u[p.kind(k)]
            if not u.size:
                entry[k] = None
                continue
            ut = threshold(u)
            own = int(np.sum(u > ut)) >= MIN_TAIL
            fits = {}
            for shape in SHAPES:
                fit = fit_tail(u, ut, shape) if own else (pooled[k][shape] or every[shape])
                if fit is None:
                    raise ConfigError(f"outlier tail: {sum(q.n for q in planes)} outliers in all planes: too few to "
                                      "fit a tail")
                tail = fit[0].bounded(p.wrong_bound) if k == "wrong" else fit[0]
                fits[shape] = (tail, fit[1])
            if own:
                for shape in SHAPES:
                    loglik[shape] += log_likelihood(fits[shape][0], u)
            entry[k] = {"own": own, "fits": fits}
        out.append(entry)
    if not any(loglik.values()):  # no own fit: the pooled tails of all outliers decide
        u = np.concatenate([p.u for p in planes])
        loglik = {sh: log_likelihood(every[sh][0], u) if every[sh] else -math.inf for sh in SHAPES}
    chosen = max(SHAPES, key=lambda sh: loglik[sh])
    for entry in out:
        for e in entry.values():
            if e is not None:
                e["chosen"] = chosen
    return {"planes": out, "pooled": pooled, "every": every, "chosen": chosen, "log_likelihood": loglik}


def _component_density(u: np.ndarray, toward: np.ndarray, tail: Tail, scale: float, dx: float,
                       bins: int) -> tuple[np.ndarray, float]:
    if toward is None:  # coherent: every outlier towards the box
        if not u.size:
            return _component_density_all_toward(tail, scale, dx, bins)
        toward = np.ones(u.size, bool)
    mass = np.zeros(bins + 1)
    n = max(u.size, 1)
    frac_toward = float(np.mean(toward)) if u.size else 0.5
    w_tail = int(np.sum(u > tail.u_t)) / n if u.size else 1.0
    # the measured ones up to the tail's threshold
    below = toward & (u <= tail.u_t)
    idx = np.rint(scale * u[below] / dx).astype(np.int64)
    over = float(np.sum(idx > bins)) / n
    np.add.at(mass, idx[idx <= bins], 1.0 / n)
    # away from the box: as no shift (those below the threshold as seen, the tail's at the toward fraction)
    mass[0] += float(np.sum(~toward & (u <= tail.u_t))) / n + w_tail * (1.0 - frac_toward)
    # above it the fitted tail (seen and unseen), towards the box, split at the lattice midpoints
    mid = (np.arange(bins + 2) - 0.5) * dx / scale
    sv = tail.survival(np.maximum(mid, tail.u_t))
    mass += w_tail * frac_toward * (sv[:-1] - sv[1:])
    over += w_tail * frac_toward * float(sv[-1])
    return mass, over


def _component_density_all_toward(tail: Tail, scale: float, dx: float, bins: int) -> tuple[np.ndarray, float]:
    mid = (np.arange(bins + 2) - 0.5) * dx / scale
    sv = tail.survival(np.maximum(mid, tail.u_t))
    return sv[:-1] - sv[1:], float(sv[-1])


def shift_density(plane: PlaneOutliers, tails: dict, scale: float, dx: float, bins: int,
                  coherent: bool = False) -> tuple[np.ndarray, float]:
    """Density of ONE outlier's shift towards the box on a plane, ``x = scale u`` (mrad;
    ``scale = |g_j| sigma_j``), as masses on the lattice ``x_i = i dx``, i = 0..bins (each mass
    at its nearest lattice point) and the mass beyond ``(bins + 1/2) dx``: per kind (far hit,
    wrong twin, weighted by their counts) the measured deviations up to the tail's threshold
    ``u_t``, the kind's fitted tail ``tails[kind]`` above it with the fraction of the kind
    there (the seen deviations above ``u_t`` agree with it by its KS test; the hybrid of the
    seen ones and the fit beyond the largest counts the tail twice near the largest: toys);
    away from the box counted as no shift (index 0).  ``coherent``: every outlier towards the box
    (the sets of two or more outlier planes, whose signs are correlated in the samples)."""
    mass, over = np.zeros(bins + 1), 0.0
    if not plane.n:  # no outlier seen: the tail of the far hits from u_t on
        return _component_density(plane.u, None if coherent else plane.toward, tails["far"], scale, dx, bins)
    for k in KINDS:
        sel = plane.kind(k)
        if not sel.any():
            continue
        m, o = _component_density(plane.u[sel], None if coherent else plane.toward[sel], tails[k], scale, dx, bins)
        w = float(sel.sum()) / plane.n
        mass += w * m
        over += w * o
    return mass, over


@dataclass
class Pattern:
    """One pattern of used planes: ``used`` (planes,) bool, ``gain`` (planes,), ``reach`` (2^planes: the largest shift
    per unit residual norm of outliers on each set, :func:`na64reco.background.lone_muon.set_reach`),
    ``cap_scale`` (the chi2 cut's residual norm plus the right hits' at its quantile),
    ``room`` and ``s`` (mrad) of a sample of its muons with weights ``w`` (summing to 1; default
    equal), ``weight`` its muon count."""

    used: np.ndarray
    gain: np.ndarray
    reach: np.ndarray
    cap_scale: float
    room: np.ndarray
    s: np.ndarray
    weight: int
    w: np.ndarray | None = None
    _curves: dict = field(default_factory=dict, repr=False)


def _convolve(a: tuple[np.ndarray, float], b: tuple[np.ndarray, float], nb: int) -> tuple[np.ndarray, float]:
    """The density of the sum of two shifts (masses on the lattice, mass beyond it)."""
    (pa, po), (da, do) = a, b
    conv = np.convolve(pa, da)
    return conv[:nb + 1], po * (float(da.sum()) + do) + do * float(pa.sum()) + float(conv[nb + 1:].sum())


def _box_curve(pattern: Pattern, x: np.ndarray) -> np.ndarray:
    """sum_i w_i Phi(-(room_i - x) / s_i) at the shifts ``x`` (kept on the pattern per grid)."""
    from scipy.special import ndtr

    key = (x.size, float(x[-1]))
    if key not in pattern._curves:
        w = np.full(pattern.room.size, 1.0 / pattern.room.size) if pattern.w is None else np.asarray(pattern.w)
        out = np.zeros(x.size)
        for i in range(0, pattern.room.size, 1000):
            sl = slice(i, i + 1000)
            out += w[sl] @ ndtr(-(pattern.room[sl, None] - x[None, :]) / pattern.s[sl, None])
        pattern._curves[key] = out
    return pattern._curves[key]


def integrate(patterns: list[Pattern], planes: list[PlaneOutliers], tails: list[Tail], sigma: np.ndarray,
              rates: np.ndarray, corr: float, quantile: float = 0.0, pair_rates: np.ndarray | None = None,
              pair_signs: np.ndarray | None = None) -> dict:
    """The box probability per tracked muon (module doc) for the given plane ``tails`` (one per
    plane), outlier ``rates`` and correlation ``corr``; ``pair_rates`` (planes x planes, NaN:
    not measured) the measured rates of the two-plane sets in place of ``corr r_i r_j``;
    ``quantile``: what the chi2 cap leaves out (the right hits' residual beyond its quantile)
    added per set as such.  The signs of a two-plane set: ``pair_signs`` (planes x planes x 3:
    both towards the box, only the first, only the second; NaN: not measured) where measured,
    one towards and one away counted as the one towards alone; else independent.  Sets of three
    or more outlier planes take every outlier towards the box.  Returns the total and its
    terms by number of outlier planes (no outlier: the core)."""
    npl = len(planes)
    by_size = np.zeros(npl + 1)
    by_pattern, top_sets = [], []
    wsum = 0
    nb = GRID_BINS
    for pat in patterns:
        used = [int(j) for j in np.flatnonzero(pat.used)]
        dx = max(float(np.max(pat.room + GRID_MARGIN_SIGMAS * pat.s)), 1e-9) / nb
        x = np.arange(nb + 1) * dx
        curve = _box_curve(pat, x)
        single = {j: shift_density(planes[j], tails[j], abs(float(pat.gain[j])) * float(sigma[j]), dx, nb)
                  for j in used}
        dens = {j: shift_density(planes[j], tails[j], abs(float(pat.gain[j])) * float(sigma[j]), dx, nb, True)
                for j in used}
        # the shift density of every subset of the used planes, all towards the box, each from its
        # parent by one convolution
        coh = {0: (np.eye(1, nb + 1)[0], 0.0)}
        for code in range(1, 1 << npl):
            members = [j for j in range(npl) if (code >> j) & 1]
            if any(j not in dens for j in members):
                continue
            coh[code] = _convolve(coh[code ^ (1 << members[-1])], dens[members[-1]], nb)
        sets = {}
        for code in coh:
            members = [j for j in range(npl) if (code >> j) & 1]
            if len(members) == 1:
                sets[code] = single[members[0]]
            elif len(members) == 2:  # the signs: measured where the pair was seen, else independent
                i, j = members
                if pair_signs is not None and np.isfinite(pair_signs[i, j, 0]):
                    f_both, f_i, f_j = (float(v) for v in pair_signs[i, j])
                    m = f_both * coh[code][0] + f_i * dens[i][0] + f_j * dens[j][0]
                    m[0] += 1.0 - f_both - f_i - f_j
                    sets[code] = (m, f_both * coh[code][1] + f_i * dens[i][1] + f_j * dens[j][1])
                else:
                    sets[code] = _convolve(single[i], single[j], nb)
            else:
                sets[code] = coh[code]
        pat_out = 0.0
        pat_code = int(np.sum(1 << np.flatnonzero(pat.used)))
        for code, (mass, over) in sets.items():
            members = [j for j in range(npl) if (code >> j) & 1]
            k = len(members)
            if k == 0:
                by_size[0] += pat.weight * float(curve[0])
                continue
            rate = corr ** (k - 1) * float(np.prod(rates[members]))
            if k == 2 and pair_rates is not None and np.isfinite(pair_rates[members[0], members[1]]):
                rate = float(pair_rates[members[0], members[1]])
            cap = pat.cap_scale * float(pat.reach[code])
            keep = x <= cap + 0.5 * dx  # beyond the chi2 cut's largest shift: not tracked
            p_set = float(np.sum(mass[keep] * curve[keep])) + (over if cap >= x[-1] else 0.0) + quantile
            by_size[k] += pat.weight * rate * p_set
            pat_out += pat.weight * rate * p_set
            top_sets.append((pat.weight * rate * p_set, int(code), pat_code, rate, p_set, cap))
        by_pattern.append({"used": pat_code, "muons": int(pat.weight), "p_outliers": pat_out / max(pat.weight, 1)})
        wsum += pat.weight
    by_size /= max(wsum, 1)
    top_sets.sort(reverse=True)
    return {"p": float(by_size.sum()), "p_outliers": float(by_size[1:].sum()), "by_outlier_planes": by_size.tolist(),
            "by_pattern": by_pattern,
            # the largest terms: (outlier set, pattern of used planes) as bit codes over the view's planes
            "largest_terms": [{"set": c, "used": u, "p_per_tracked": t / max(wsum, 1), "rate": r, "p_box_given_set": p,
                               "chi2_cap_mrad": cap if math.isfinite(cap) else None}
                              for t, c, u, r, p, cap in top_sets[:TOP_TERMS]]}


def _tails(fits: dict, shape: str | None) -> list[dict]:
    """Per plane ``{kind: Tail}`` of ``shape`` (None: the shape chosen per plane and kind)."""
    out = []
    for entry in fits["planes"]:
        d = {}
        for k in KINDS:
            e = entry[k]
            if e is not None:
                d[k] = e["fits"][shape or e["chosen"]][0]
        if "far" not in d:  # a plane with no far hit seen still takes a far-hit tail (the pooled one)
            pool = fits["pooled"]["far"][shape or "exponential"] or fits["every"][shape or "exponential"]
            d["far"] = pool[0]
        out.append(d)
    return out


def estimate(patterns: list[Pattern], planes: list[PlaneOutliers], sigma: np.ndarray, n_multi: int,
             pair_expected: float, outlier_sigmas: float, quantile: float = 0.0, *,
             upper_shape: str | None = None, pair_counts: np.ndarray | None = None,
             pair_used: np.ndarray | None = None, pair_signs: np.ndarray | None = None) -> dict:
    """Central and 90 % upper box probability per tracked muon of the outliers (module doc), with
    the fits, the per-shape results and the rates; ``n_multi`` the muons with two or more outlier
    planes, ``pair_expected`` what independent planes give.  ``upper_shape`` given: only the
    central value and that shape's upper one (``central``, ``upper``), two integrals in place of
    five (the count checks).  ``pair_counts`` / ``pair_used`` (planes x planes): the muons with
    outliers on both planes of a pair / using both; a pair seen gets its measured rate (upper:
    its Poisson 90 % limit) and its measured signs ``pair_signs`` (:func:`integrate`), a pair
    not seen ``F r_i r_j`` and independent signs."""
    from na64reco.stats.limits import poisson_upper_limit

    fits = fit_tails(planes, outlier_sigmas)
    rates = np.array([p.n / max(p.n_used, 1) for p in planes])
    rates_up = np.array([poisson_upper_limit(p.n, cl=CL, method="classical") / max(p.n_used, 1) for p in planes])
    corr = n_multi / pair_expected if pair_expected > 0 and n_multi > 0 else 1.0
    corr_up = poisson_upper_limit(n_multi, cl=CL, method="classical") / pair_expected if pair_expected > 0 \
        else math.inf
    corr_up = max(corr_up, 1.0) if math.isfinite(corr_up) else 1e6
    npl = len(planes)
    pr, pr_up = np.full((npl, npl), np.nan), np.full((npl, npl), np.nan)
    if pair_counts is not None:
        seen = (pair_counts > 0) & (pair_used > 0)
        pr[seen] = pair_counts[seen] / pair_used[seen]
        pr_up[seen] = np.array([poisson_upper_limit(int(k), cl=CL, method="classical") for k in pair_counts[seen]]) \
            / pair_used[seen]
    central = integrate(patterns, planes, _tails(fits, None), sigma, rates, corr, 0.0, pr, pair_signs)
    if upper_shape is not None:
        heavy = [{k: t.heavier() for k, t in d.items()} for d in _tails(fits, upper_shape)]
        return {"central": central,
                "upper": integrate(patterns, planes, heavy, sigma, rates_up, corr_up, quantile, pr_up, pair_signs)}
    per_shape = {}
    for shape in SHAPES:
        tails = _tails(fits, shape)
        rejected = any(e is not None and e["own"] and e["fits"][shape][1] < GOF_P_MIN
                       for entry in fits["planes"] for e in entry.values())
        per_shape[shape] = {
            "central": integrate(patterns, planes, tails, sigma, rates, corr, 0.0, pr, pair_signs)["p_outliers"],
            "upper": integrate(patterns, planes, [{k: t.heavier() for k, t in d.items()} for d in tails], sigma,
                               rates_up, corr_up, quantile, pr_up, pair_signs),
            "rejected": rejected}
    allowed = [s for s in SHAPES if not per_shape[s]["rejected"]] or list(SHAPES)
    up = max(allowed, key=lambda s: per_shape[s]["upper"]["p"])

    def fit_row(e):
        if e is None:
            return None
        return {"own_fit": e["own"], "chosen": e["chosen"],
                **{s: {"u_t": e["fits"][s][0].u_t, "par": e["fits"][s][0].par, "n_tail": e["fits"][s][0].n,
                       "par_heavier_90": e["fits"][s][0].heavier().par, "ks_p": e["fits"][s][1],
                       "bound": e["fits"][s][0].bound if math.isfinite(e["fits"][s][0].bound) else None}
                   for s in SHAPES}}

    return {
        "central": central, "upper": per_shape[up]["upper"], "upper_shape": up, "shapes_allowed": allowed,
        "chosen_shape": fits["chosen"], "log_likelihood": fits["log_likelihood"],
        "per_shape": {s: {"central": v["central"], "upper": v["upper"]["p_outliers"],
                          "upper_by_outlier_planes": v["upper"]["by_outlier_planes"], "rejected": v["rejected"]}
                      for s, v in per_shape.items()},
        "rates": rates.tolist(), "rates_upper_90": rates_up.tolist(), "correlation": corr,
        "correlation_upper_90": corr_up, "two_or_more": int(n_multi), "two_or_more_if_independent": pair_expected,
        "pairs": None if pair_counts is None else {
            "counts": np.asarray(pair_counts).astype(int).tolist(),
            "if_independent": (np.asarray(pair_used) * rates[:, None] * rates[None, :]).tolist(),
            "signs_both_one_other": None if pair_signs is None else np.nan_to_num(pair_signs, nan=-1.0).tolist()},
        "tails": [{"n_outliers": p.n, "n_wrong": int(p.kind("wrong").sum()),
                   "toward_fraction": float(np.mean(p.toward)) if p.n else None,
                   "u_max_far": float(np.max(p.u[p.kind("far")], initial=0.0)),
                   "u_max_wrong": float(np.max(p.u[p.kind("wrong")], initial=0.0)),
                   "far": fit_row(f["far"]), "wrong": fit_row(f["wrong"])}
                  for f, p in zip(fits["planes"], planes, strict=True)],
    }


# ----------------------------------------------------------------------------------------
# toys: outliers drawn from known tails, the estimator against the closed form


def truth(patterns: list[Pattern], tails: list[Tail], sigma: np.ndarray, rates: np.ndarray,
          toward_fraction: float = 0.5, corr: float = 1.0) -> dict:
    """The box probability per tracked muon for outliers drawn from the known ``tails`` (one per
    plane, from their ``u_t`` on, a fraction ``toward_fraction`` towards the box), plane
    ``rates`` and correlation ``corr``: :func:`integrate` of the densities themselves (no sample)."""
    empty = [PlaneOutliers(np.zeros(0), np.zeros(0, bool), 1) for _ in tails]
    if toward_fraction != 0.5:
        raise ConfigError(f"outlier tail: toward_fraction {toward_fraction}: the closed form takes 0.5")
    return integrate(patterns, empty, [{"far": t} for t in tails], sigma, rates, corr, 0.0)


def toy(rng, patterns: list[Pattern], tails: list[Tail], sigma: np.ndarray, rates: np.ndarray,
        outlier_sigmas: float) -> dict:
    """One toy: per plane Poisson(n_used r_j) outliers with deviations from ``tails[j]`` (each
    towards the box with probability 1/2), the muons with two or more outlier planes Poisson of
    what independent planes give; returns the estimator's central and 90 % upper value of the
    outliers' box probability (:func:`estimate`)."""
    n_used = sum(p.weight for p in patterns)
    planes = []
    for t, r in zip(tails, rates, strict=True):
        k = int(rng.poisson(n_used * r))
        planes.append(PlaneOutliers(t.sample(rng, k), rng.random(k) < 0.5, n_used))
    pair = sum(n_used * rates[i] * rates[j] for i in range(len(rates)) for j in range(i + 1, len(rates)))
    est = estimate(patterns, planes, sigma, int(rng.poisson(pair)), pair, outlier_sigmas)
    return {"central": est["central"]["p_outliers"], "upper": est["upper"]["p_outliers"],
            "upper_shape": est["upper_shape"], "chosen": est["chosen_shape"],
            "u_max": [float(np.max(p.u, initial=0.0)) for p in planes]}
